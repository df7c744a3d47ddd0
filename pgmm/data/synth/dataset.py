"""A SynthSigner dataset that renders frames on the fly: training never needs the corpus on disk.

It behaves like the on-disk loaders of :mod:`pgmm.data.loaders` (same records, same
``load_frames``/``load_poses``/``__getitem__``), so :class:`~pgmm.data.samplers.FramePairDataset`
and :class:`~pgmm.data.samplers.ClipDataset` work on it unchanged.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pgmm.data.corpus import LANGUAGES
from pgmm.data.loaders import SignVideoDataset, VideoRecord, spread_over_signers
from pgmm.data.synth.signer import SynthSigner, to_pose_sequence
from pgmm.pose.sequence import PoseSequence


class RenderedSynthSigner(SignVideoDataset):
    """Corpus sentences of one split, rendered when asked for.

    ``identity`` forces one identity (e.g. a held-out one, 10 or 11) for every video;
    ``max_videos`` keeps the first N sentences (in corpus order) for small experiments, or with
    ``balanced`` N sentences spread over the corpus signers (:func:`spread_over_signers`).
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
        data_dir: str | Path | None = None,
        signer: SynthSigner | None = None,
    ) -> None:
        self.signer = signer or SynthSigner(seed, data_dir, languages)
        self.identity = identity
        sentences = [s for lang in languages for s in self.signer.sentences(split, lang)]
        if max_videos and balanced:
            keep = spread_over_signers([f"{s.language}/{s.signer}" for s in sentences], max_videos)
            sentences = [sentences[i] for i in keep]
        self.sentences = sentences[:max_videos] if max_videos else sentences
        self.split, self.size = split, int(size)
        self.root = Path("synthsigner://")
        self.records = [
            VideoRecord(
                id=s.id, split=s.split, source=self.root / s.id, signer=s.signer,
                gloss=" ".join(s.glosses), text=s.text, language=s.language,
                num_frames=s.num_frames,
            )
            for s in self.sentences
        ]  # fmt: skip

    def cache_key(self) -> str:
        # The frames depend on the signer's seed and the forced identity as well.
        return f"{super().cache_key()}|seed={self.signer.seed}|identity={self.identity}"

    def frame_size(self, i: int) -> tuple[int, int]:
        return self.size, self.size

    def num_frames(self, i: int) -> int:
        return self.sentences[i].num_frames

    def load_frames(self, i: int, size: int | None = None) -> np.ndarray:
        sentence = self.sentences[i]
        pose = self.signer.pose(sentence, self.identity)
        ident = self.signer.identity_for(sentence, self.identity)
        return np.stack(list(self.signer.render(pose, ident, size or self.size)))

    def load_poses(self, i: int, size: int | None = None) -> PoseSequence:
        pose = self.signer.pose(self.sentences[i], self.identity)
        return to_pose_sequence(pose, size or self.size)
