"""A test double for ``text2pose.TextToPose`` -- same interface, SynthSigner poses.

The real text2pose models are trained separately; serving tests only need *some* canonical
whole-body poses that move like signing. Each word of the text becomes one SynthSigner sign
(a lexicon built on the fly from the words, so no corpus files are needed), signed by the
identity-free canonical body, ``FRAMES_PER_WORD`` frames per word, capped at ``MAX_FRAMES``
to keep the tests fast. A model folder may hold a ``double.json`` raising the cap (e.g.
``{"max_frames": 1500}``), which is how the streaming tests get minute-long outputs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from pgmm.data.synth.identity import make_identity
from pgmm.data.synth.lexicon import build_lexicon, keyed_rng
from pgmm.data.synth.motion import sentence_pose
from pgmm.data.synth.signer import to_pose_sequence
from pgmm.pose.sequence import PoseSequence
from text2pose.canonical import to_canonical

FRAMES_PER_WORD = 8
MAX_FRAMES = 40
REJECTED = "@@"  # texts containing this are "unsupported", like TextInputError in TextToPose
SETTINGS_FILE = "double.json"


class FakeTextToPose:
    def __init__(self, language: str, max_frames: int = MAX_FRAMES) -> None:
        self.language = language
        self.max_frames = max_frames

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> FakeTextToPose:
        directory = Path(directory)
        settings = directory / SETTINGS_FILE
        overrides = json.loads(settings.read_text()) if settings.is_file() else {}
        return cls(directory.name, **overrides)

    def generate(self, text: str) -> PoseSequence:
        words = [w.upper() for w in text.split()]
        if not words or REJECTED in text:
            raise ValueError(f"unsupported text {text!r}")
        lexicon = build_lexicon({self.language: sorted(set(words))})
        signs = [lexicon[(self.language, w)] for w in words]
        frames = min(self.max_frames, FRAMES_PER_WORD * len(words))
        pose = sentence_pose(signs, frames, make_identity(0), keyed_rng(0, text))
        return to_canonical(to_pose_sequence(pose))

    def generate_stream(self, text: str, chunk_frames: int = 16) -> Iterator[PoseSequence]:
        seq = self.generate(text)
        for start in range(0, len(seq), chunk_frames):
            yield seq[start : start + chunk_frames]
