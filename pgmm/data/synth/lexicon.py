"""Procedural sign lexicon: one distinct sign for every gloss of both corpora.

A sign is described by the phonological parameters sign linguists use (Stokoe/Battison):
handshape, orientation, location, movement, plus the two-handed type and a mouthing. Each
gloss gets its parameters from a hash of (seed, language, gloss), so a sign never changes
when other glosses are added; collisions of the discrete parameter tuple are resolved by
re-drawing, which makes every sign of a lexicon distinct.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from pgmm.data.synth.hand import HANDSHAPE_NAMES

# Hand-anchor locations in body units (origin: mid-shoulders; x towards the dominant side is
# negative, y down, z towards the camera). ``None`` z means "just in front of the body part".
LOCATIONS: dict[str, tuple[float, float, float]] = {
    "neutral": (-0.02, 0.22, 0.3),
    "neutral_high": (-0.02, 0.05, 0.3),
    "neutral_low": (-0.02, 0.38, 0.28),
    "neutral_ipsi": (-0.17, 0.2, 0.26),
    "neutral_contra": (0.08, 0.18, 0.28),
    "forehead": (0.0, -0.52, 0.16),
    "eyes": (0.0, -0.42, 0.17),
    "nose": (0.0, -0.35, 0.2),
    "mouth": (0.0, -0.27, 0.18),
    "chin": (0.0, -0.21, 0.16),
    "cheek": (-0.07, -0.33, 0.13),
    "ear": (-0.11, -0.38, 0.08),
    "temple": (-0.09, -0.46, 0.12),
    "neck": (0.0, -0.12, 0.12),
    "chest": (0.0, 0.1, 0.12),
    "shoulder_contra": (0.14, 0.02, 0.12),
    "stomach": (0.0, 0.33, 0.14),
    "side_ipsi": (-0.24, 0.3, 0.1),
}
LOCATION_NAMES = sorted(LOCATIONS)
# Orientations: (finger direction, palm direction) in body axes, for the dominant hand.
ORIENTATIONS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "up_palm_out": ((0, -1, 0), (0, 0, 1)),
    "up_palm_in": ((0, -1, 0), (0, 0, -1)),
    "up_palm_contra": ((0, -1, 0), (1, 0, 0)),
    "up_palm_ipsi": ((0, -1, 0), (-1, 0, 0)),
    "contra_palm_out": ((1, 0, 0), (0, 0, 1)),
    "contra_palm_in": ((1, 0, 0), (0, 0, -1)),
    "contra_palm_down": ((1, 0, 0), (0, 1, 0)),
    "contra_palm_up": ((1, 0, 0), (0, -1, 0)),
    "fwd_palm_down": ((0, 0, 1), (0, 1, 0)),
    "fwd_palm_up": ((0, 0, 1), (0, -1, 0)),
    "fwd_palm_contra": ((0, 0, 1), (1, 0, 0)),
    "diag_palm_out": ((0.6, -0.8, 0), (0, 0, 1)),
    "diag_palm_in": ((0.6, -0.8, 0), (0, 0, -1)),
    "down_palm_in": ((0, 1, 0), (0, 0, -1)),
}
ORIENTATION_NAMES = sorted(ORIENTATIONS)
MOVEMENTS = (
    "hold",
    "straight",
    "arc",
    "circle",
    "repeat",
    "twist",
    "nod",
    "shake",
    "zigzag",
    "change",
    "wiggle",
)
DIRECTIONS: dict[str, tuple[float, float, float]] = {
    "up": (0, -1, 0),
    "down": (0, 1, 0),
    "contra": (1, 0, 0),
    "ipsi": (-1, 0, 0),
    "out": (0, 0, 1),
    "in": (0, 0, -1),
    "up_contra": (0.7, -0.7, 0),
    "down_ipsi": (-0.7, 0.7, 0),
}
DIRECTION_NAMES = sorted(DIRECTIONS)
HAND_TYPES = ("one", "one", "one", "symmetric", "alternating", "base")
# Locations a two-handed sign can use (both hands must fit without crossing the face).
_TWO_HANDED_LOCATIONS = ("neutral", "neutral_high", "neutral_low", "chest", "stomach")


@dataclass(frozen=True)
class Sign:
    """Phonological description of one lexical sign."""

    gloss: str
    language: str
    hand_type: str  # one | symmetric | alternating | base
    handshape: str
    end_handshape: str  # differs from ``handshape`` only for "change" movements
    orientation: str
    location: str
    movement: str
    direction: str
    size: float  # movement amplitude, body units
    repetitions: int
    base_handshape: str  # non-dominant handshape for "base" signs
    mouthing: tuple[float, ...]  # mouth openness per syllable
    brow: float  # -1 (furrow) .. 1 (raise)
    duration: float  # relative duration weight

    def key(self) -> tuple:
        """The discrete parameters that must differ between two signs of a lexicon."""
        return (
            self.hand_type,
            self.handshape,
            self.end_handshape,
            self.orientation,
            self.location,
            self.movement,
            self.direction,
            self.repetitions,
            self.base_handshape,
        )


def keyed_rng(seed: int, key: str) -> np.random.Generator:
    """A generator for ``seed`` and a text ``key`` that draws the same numbers in every
    process (``hash()`` of a string is salted per process), so the corpus is reproducible."""
    digest = hashlib.sha256(f"{seed}\x00{key}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _draw_sign(gloss: str, language: str, rng: np.random.Generator) -> Sign:
    hand_type = str(rng.choice(HAND_TYPES))
    movement = str(rng.choice(MOVEMENTS))
    handshape = str(rng.choice(HANDSHAPE_NAMES))
    end = str(rng.choice([h for h in HANDSHAPE_NAMES if h != handshape]))
    locations = _TWO_HANDED_LOCATIONS if hand_type != "one" else LOCATION_NAMES
    reps = (
        int(rng.choice([1, 1, 2, 2, 3])) if movement in ("repeat", "nod", "shake", "twist") else 1
    )
    syllables = int(rng.integers(1, 4))
    return Sign(
        gloss=gloss,
        language=language,
        hand_type=hand_type,
        handshape=handshape,
        end_handshape=end if movement == "change" else handshape,
        orientation=str(rng.choice(ORIENTATION_NAMES)),
        location=str(rng.choice(locations)),
        movement=movement,
        direction=str(rng.choice(DIRECTION_NAMES)) if movement != "hold" else "up",
        size=float(rng.uniform(0.06, 0.14)),
        repetitions=reps,
        base_handshape=str(rng.choice(["B", "5", "S", "C", "1"])) if hand_type == "base" else "-",
        mouthing=tuple(float(v) for v in rng.uniform(0.15, 1.0, syllables)),
        brow=float(rng.choice([-1.0, 0.0, 0.0, 0.0, 1.0])) * float(rng.uniform(0.5, 1.0)),
        duration=float(rng.uniform(0.8, 1.25)) * (1.2 if reps > 1 or movement == "circle" else 1),
    )


def build_lexicon(glosses: dict[str, list[str]], seed: int = 0) -> dict[tuple[str, str], Sign]:
    """One distinct :class:`Sign` per ``(language, gloss)``.

    ``glosses`` maps a language code to its gloss vocabulary. Glosses are processed in sorted
    order so collision resolution is deterministic.
    """
    lexicon: dict[tuple[str, str], Sign] = {}
    taken: set[tuple] = set()
    for language in sorted(glosses):
        for gloss in sorted(set(glosses[language])):
            for attempt in range(1000):
                sign = _draw_sign(
                    gloss, language, keyed_rng(seed, f"{language}\x00{gloss}\x00{attempt}")
                )
                if sign.key() not in taken:
                    break
            else:  # pragma: no cover - the parameter space is ~10^8, far above any vocabulary
                raise RuntimeError(f"could not find a distinct sign for {gloss!r}")
            taken.add(sign.key())
            lexicon[(language, gloss)] = sign
    return lexicon
