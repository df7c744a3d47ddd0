"""A SynthSigner dataset that renders frames on the fly: training never needs the corpus on disk.

It behaves like the on-disk loaders of :mod:`pgmm.data.loaders` (same records, same
``load_frames``/``load_poses``/``__getitem__``), so :class:`~pgmm.data.samplers.FramePairDataset`
and :class:`~pgmm.data.samplers.ClipDataset` work on it unchanged.
"""

from __future__ import annotations

import dataclasses
import zlib
from pathlib import Path

import numpy as np

from pgmm.data.corpus import LANGUAGES
from pgmm.data.loaders import SignVideoDataset, VideoRecord, spread_over_signers
from pgmm.data.synth.identity import (
    NUM_CORPUS_IDENTITIES,
    RANDOM_LOOK_IDS,
    Identity,
    random_look,
)
from pgmm.data.synth.motion import SentencePose
from pgmm.data.synth.signer import SynthSigner, to_pose_sequence
from pgmm.pose.sequence import PoseSequence


class RenderedSynthSigner(SignVideoDataset):
    """Corpus sentences of one split, rendered when asked for.

    ``identity`` forces one identity (e.g. a held-out one, 10 or 11) for every video;
    ``max_videos`` keeps the first N sentences (in corpus order) for small experiments, or with
    ``balanced`` N sentences spread over the corpus signers (:func:`spread_over_signers`).

    ``cross_identity`` (training): this fraction of the videos (a stable choice by sentence id;
    ``True``/1: all) is the sentence signed by its own identity, followed by the same sentence
    as *another* corpus identity moves it (its body proportions and framing) drawn in this
    identity's appearance. Half of such a video's random frame pairs then cross the seam: the
    source in one body, the driving pose in another, with the exact frame the renderer should
    draw. Without them a renderer only ever re-poses a body onto its own proportions and learns
    to keep the source's torso where it is -- which cross-person animation (held-out
    identities 10/11 driven by corpus poses) punishes; with all videos crossed, reconstruction
    suffers instead (docs/results.md), hence a fraction.

    ``random_looks``: this fraction of the videos (a stable choice by sentence id) is drawn in
    a random look (:func:`~pgmm.data.synth.identity.random_look`) on its identity's body, so a
    pose estimator learns to read looks it was never shown, and a renderer (whose pairs come
    from one video, hence one look) to copy the source's look instead of its training signers'.
    """

    name = "synthsigner-rendered"
    layout = "no files: frames are rendered from the corpus sentences"

    def __init__(
        self,
        split: str = "train",
        size: int = 128,
        languages: tuple[str, ...] = LANGUAGES,
        identity: int | None = None,
        max_videos: int | None = None,
        seed: int = 0,
        balanced: bool = False,
        cross_identity: float = 0.0,
        data_dir: str | Path | None = None,
        signer: SynthSigner | None = None,
        random_looks: float = 0.0,
    ) -> None:
        self.signer = signer or SynthSigner(seed, data_dir, languages)
        self.identity = identity
        sentences = [s for lang in languages for s in self.signer.sentences(split, lang)]
        if max_videos and balanced:
            keep = spread_over_signers([f"{s.language}/{s.signer}" for s in sentences], max_videos)
            sentences = [sentences[i] for i in keep]
        self.sentences = sentences[:max_videos] if max_videos else sentences
        self.split, self.size = split, int(size)
        self.cross_identity = float(cross_identity)
        if not 0.0 <= self.cross_identity <= 1.0:
            raise ValueError(f"cross_identity must be a fraction in [0, 1], got {cross_identity}")
        self.crossed = [
            zlib.crc32(f"cross|{s.id}".encode()) % 1000 < 1000 * self.cross_identity
            for s in self.sentences
        ]
        self.random_looks = float(random_looks)
        if not 0.0 <= self.random_looks <= 1.0:
            raise ValueError(f"random_looks must be a fraction in [0, 1], got {random_looks}")
        self.looks: list[Identity | None] = [None] * len(self.sentences)
        for i, s in enumerate(self.sentences):
            key = zlib.crc32(f"look|{s.id}".encode())
            if key % 1000 < 1000 * self.random_looks:
                rng = np.random.default_rng([self.signer.seed, key])
                base = self.signer.identity_for(s, self.identity)
                self.looks[i] = random_look(base, rng, RANDOM_LOOK_IDS + i)
        self.root = Path("synthsigner://")
        self.records = [
            VideoRecord(
                id=s.id, split=s.split, source=self.root / s.id, signer=s.signer,
                gloss=" ".join(s.glosses), text=s.text, language=s.language,
                num_frames=(2 if crossed else 1) * s.num_frames,
            )
            for s, crossed in zip(self.sentences, self.crossed, strict=True)
        ]  # fmt: skip

    def cache_key(self) -> str:
        # The frames depend on the signer's seed and the forced identity as well.
        return (
            f"{super().cache_key()}|seed={self.signer.seed}|identity={self.identity}"
            f"|cross={self.cross_identity:g}|looks={self.random_looks:g}"
        )

    def frame_size(self, i: int) -> tuple[int, int]:
        return self.size, self.size

    def num_frames(self, i: int) -> int:
        n = self.records[i].num_frames
        assert n is not None  # every SynthSigner record is built with its length
        return n

    def _poses(self, i: int) -> list[SentencePose]:
        """Video ``i``'s motion: its identity's, then (``cross_identity``) another's."""
        sentence = self.sentences[i]
        own = self.signer.pose(sentence, self.identity)
        if not self.crossed[i]:
            return [own]
        me = self.signer.identity_for(sentence, self.identity).id
        # A stable choice among the other corpus identities (never a held-out one).
        other = (me + 1 + zlib.crc32(sentence.id.encode()) % (NUM_CORPUS_IDENTITIES - 1)) % (
            NUM_CORPUS_IDENTITIES
        )
        return [own, self.signer.pose(sentence, other)]

    def load_frames(
        self, i: int, size: int | None = None, look_of: int | None = None
    ) -> np.ndarray:
        """Video ``i``'s frames; ``look_of`` draws the same motion in another identity's look
        (what a perfect cross-person renderer with that identity as the source would draw)."""
        look = self.looks[i] if look_of is None else None
        if look is None:
            look = self.signer.identity_for(
                self.sentences[i], self.identity if look_of is None else look_of
            )
        return np.concatenate(
            [np.stack(list(self.signer.render(p, look, size or self.size))) for p in self._poses(i)]
        )

    def load_poses(self, i: int, size: int | None = None) -> PoseSequence:
        parts = [to_pose_sequence(p, size or self.size) for p in self._poses(i)]
        return dataclasses.replace(parts[0], data=np.concatenate([p.data for p in parts]))
