"""``SynthSigner``: the procedural signer behind one object.

It owns the lexicon (one sign per gloss of both corpora), turns corpus sentences (or any gloss
sequence) into whole-body :class:`PoseSequence` s, and renders frames for any identity.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from pgmm.data.corpus import LANGUAGES, SPLITS, CorpusSentence, load_corpus
from pgmm.data.synth.identity import Identity, corpus_identity, make_identity
from pgmm.data.synth.lexicon import Sign, build_lexicon, keyed_rng
from pgmm.data.synth.motion import FPS, SentencePose, sentence_pose
from pgmm.data.synth.render import render_frame
from pgmm.pose.sequence import PoseSequence


class SynthSigner:
    """Deterministic given ``seed``: same sentence + identity -> same poses and pixels."""

    def __init__(
        self,
        seed: int = 0,
        data_dir: str | Path | None = None,
        languages: Iterable[str] = LANGUAGES,
    ) -> None:
        self.seed = seed
        self.corpus: dict[str, list[CorpusSentence]] = {}
        vocab: dict[str, list[str]] = {}
        for language in languages:
            for split in SPLITS:
                rows = load_corpus(language, split, data_dir)
                self.corpus[f"{language}/{split}"] = rows
                vocab.setdefault(language, []).extend(g for r in rows for g in r.glosses)
        self.lexicon: dict[tuple[str, str], Sign] = build_lexicon(vocab, seed)

    def sentences(
        self, split: str | None = None, language: str | None = None
    ) -> list[CorpusSentence]:
        return [
            s
            for key, rows in self.corpus.items()
            for s in rows
            if (split is None or s.split == split) and (language is None or s.language == language)
        ]

    def signs(self, language: str, glosses: Iterable[str]) -> list[Sign]:
        """The lexicon signs of a gloss sequence; unknown glosses are a clear error."""
        out = []
        for g in glosses:
            sign = self.lexicon.get((language, g))
            if sign is None:
                raise ValueError(f"gloss {g!r} is not in the {language} SynthSigner lexicon")
            out.append(sign)
        return out

    def identity_for(self, sentence: CorpusSentence, identity: int | None = None) -> Identity:
        if identity is None:
            identity = corpus_identity(sentence.language, sentence.signer)
        return make_identity(identity, self.seed)

    def pose(self, sentence: CorpusSentence, identity: int | None = None) -> SentencePose:
        """Keypoints + depth for a corpus sentence, with its real length and signer identity."""
        ident = self.identity_for(sentence, identity)
        return sentence_pose(
            self.signs(sentence.language, sentence.glosses),
            sentence.num_frames,
            ident,
            keyed_rng(self.seed, f"{sentence.id}/{ident.id}"),
        )

    def render(
        self, pose: SentencePose, identity: Identity, size: int = 128, supersample: int = 4
    ) -> Iterable[np.ndarray]:
        """Frames ``(size, size, 3)`` uint8, one at a time (constant memory)."""
        for t in range(len(pose)):
            yield render_frame(pose.keypoints[t], pose.depth[t], identity, size, supersample)


def to_pose_sequence(pose: SentencePose, size: int = 256) -> PoseSequence:
    """Whole-body :class:`PoseSequence` of a rendered sentence (square frames)."""
    data = np.concatenate([pose.keypoints, pose.confidence[..., None]], axis=-1)
    return PoseSequence(data, FPS, "wholebody133", size, size)
