"""What a text was understood as, in time: its glosses and the frames each sign is performed in.

A module of its own, free of the models' imports (transformers), so that the serving ingress
and a text2pose without gloss timing can build and pass these values without loading them.
"""

from __future__ import annotations

from dataclasses import dataclass

from text2pose.canonical import FPS


@dataclass(frozen=True)
class GlossSpan:
    """One sign of the output: its gloss, the sentence it belongs to, and the frames
    ``[start, end)`` of the output (at its timeline's ``fps``) in which it is signed."""

    gloss: str
    sentence: int
    start: int
    end: int


@dataclass(frozen=True)
class GlossTimeline:
    """What the text was understood as, before any pose is made: the gloss sequence with each
    sign's frames, and the output's length. ``timed`` is False for a G2P model that learns the
    length only while decoding (the AR network): its spans are then empty and ``frames`` 0."""

    glosses: list[list[str]]  # per sentence
    spans: list[GlossSpan]
    frames: int
    timed: bool
    fps: float = FPS
