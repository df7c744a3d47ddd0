"""``GlossDictionary``: dictionary signs + learned co-articulation, a gloss -> pose model.

The NAR G2P regresses every frame with an L1 loss and so averages the sign shapes into motion
that is close to everything and legible as nothing (docs/results.md, back-translation). This
model never averages two signs. As in *Signing at Scale* (Saunders, Camgoz & Bowden, CVPR
2022) and sign.mt-style pipelines, it stitches one real clip per gloss and learns the rest --
what part of a gloss's segment is the sign, how long signs and transitions last, how a
sentence starts and ends -- from the training sentences (:class:`text2pose.data.G2PData`:
canonical poses and the frames each gloss occupies). Nothing comes from SynthSigner's own
sign generator or lexicon (that is :class:`text2pose.baselines.LexiconBaseline`).

What :func:`build_dictionary` learns, all from the training split:

* **Core vs transition.** A gloss's segment starts with the movement out of the previous sign,
  which depends on context, and ends with the sign itself, which does not. Resampling all
  mid-sentence occurrences of a gloss to the same normalised time and measuring the hands'
  spread across occurrences at each instant shows this directly: the spread is large at the
  start and falls to a plateau (idle motion and signer build only) once the sign begins. The
  *transition share* of a gloss is where the spread's excess over that plateau has fallen to
  ``core_threshold`` of its starting value. Glosses with fewer than
  ``min_profile_occurrences`` mid-sentence occurrences use the pooled transition length.
* **The sign clip (core).** Of all cores of a gloss, the *medoid* under a time-normalised L2
  distance with the hands weighted ``hand_weight`` times -- one real occurrence, never a mean
  of occurrences (a mean blurs the handshapes, which is the NAR G2P's failure).
* **Signer build.** Training sentences come from several signer identities whose faces and
  heads differ in shape. Head and face points are re-centred per sentence onto the training
  mean head (their motion -- mouthing, blinks, nods -- is kept), so consecutive signs taken
  from different signers do not swap faces. Arms and hands are kept as they are: the signing
  space is already body-normalised by :mod:`text2pose.canonical`.
* **Timing.** Per gloss: its core and incoming-transition frames at a sentence speed of 1
  (each occurrence divided by its sentence's speed, the ratio of the sentence's mid-sentence
  gloss frames to their means), shrunk towards the pooled values by ``timing_prior`` pseudo
  occurrences so that a gloss seen once does not dictate its timing. Per sentence: the rest
  hold and entry movement before the first sign, the exit movement and hold after the last.
  A sentence-length model ``log T = a + b log R`` (``R``: the summed planned frames) rescales
  the plan to the lengths the corpus has.

Generation: rest hold -> minimum-jerk entry -> core 1 -> minimum-jerk transition -> core 2 ...
-> minimum-jerk exit -> rest hold; every segment length comes from the learned timing, and
each core is resampled in time to its planned length. A gloss never seen in training holds the
previous pose for the pooled transition + core length: it keeps the sentence's rhythm and
signs nothing rather than a wrong sign.

Storage: each clip is kept as uint8 steps above its own per-joint minimum (float16), one step
size per clip and axis. A clip spans a small part of the frame, so the steps (about 4e-4 of
the frame) are as fine as float16's own rounding near 1 and the file is 40 % smaller -- room
in the < 80 MiB of ``models/``.

Caveat: SynthSigner itself builds sentences from per-gloss signs joined by minimum-jerk
transitions, so this family is favoured by construction on our data; on real signing a
dictionary of citation forms loses the context-dependent changes of a sign.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save

from pgmm.checkpoint import (
    WEIGHTS_NAME,
    DictConfig,
    atomic_write,
    read_config,
    recipe_from_yaml,
    write_config,
)
from pgmm.pose import layout as L
from pgmm.pose.sequence import PoseSequence
from text2pose.canonical import as_sequence
from text2pose.data import G2PData, GlossVocab, check_glosses, frame_limit, trim_to

VOCAB_NAME = "vocab.json"
HANDS = np.arange(L.LEFT_HAND.start, L.RIGHT_HAND.stop)
MIN_MOVE_SCALE = 0.5  # keep_signs: holds and movements shrink to half at most, then all shrink
HEAD = np.r_[0:5, L.FACE.start : L.FACE.stop]  # nose, eyes, ears + the 68 face points
FIRST, MID, LAST, ONLY = "first", "mid", "last", "only"


@dataclass(frozen=True)
class SentenceTarget:
    """The length the text path asks one sentence to be signed in
    (:func:`text2pose.pipeline.sentence_target`) and how to reach it. ``keep_signs``: the signs
    keep the speed the dictionary's own length model gives them and only the holds and
    movements between them take up the difference (down to ``MIN_MOVE_SCALE`` of their length,
    the rest from every segment) -- a slower sentence then pauses longer between signs
    instead of slowing each sign down; otherwise every segment is rescaled alike."""

    frames: float
    keep_signs: bool = False

    def __post_init__(self) -> None:
        if not self.frames > 0:
            raise ValueError(f"a sentence target must be > 0 frames, got {self.frames}")


@dataclass
class DictionaryConfig(DictConfig):
    """Every setting of :func:`build_dictionary` and of generation (saved in ``config.json``)."""

    language: str = ""
    max_glosses: int = 64  # <bos>/<eos> included, as GlossToPose (TextToPose.fit reads it)
    max_frames: int = 512  # hard cap on a generated sentence
    profile_points: int = 24  # normalised-time resolution of the across-occurrence spread
    core_threshold: float = 0.05  # the core starts where the spread's excess is this fraction
    min_profile_occurrences: int = 8  # fewer mid-sentence occurrences: pooled transition
    profile_occurrences: int = 256  # occurrences sampled per gloss for its spread profile
    medoid_candidates: int = 64  # occurrences sampled per gloss for the medoid
    medoid_points: int = 16  # normalised-time resolution of the medoid distance
    hand_weight: float = 4.0  # weight of a hand joint vs any other joint in that distance
    rest_tolerance: float = 0.01  # hand movement (canvas units) that ends a rest hold
    timing_prior: float = 2.0  # pseudo-occurrences pulling a gloss's timing to the pooled one
    length_model: bool = True  # rescale the plan with the learned sentence-length model
    length_ridge: float = 30.0  # L2 penalty on the per-gloss terms of that model (dev-chosen)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_glosses < 3 or self.max_frames < 1:
            raise ValueError("max_glosses must be >= 3 and max_frames >= 1")
        if not 0.0 < self.core_threshold < 1.0:
            raise ValueError(f"core_threshold must be in (0, 1), got {self.core_threshold}")
        if min(self.profile_points, self.medoid_points, self.medoid_candidates) < 2:
            raise ValueError("profile_points, medoid_points and medoid_candidates must be >= 2")
        if self.min_profile_occurrences < 2 or self.profile_occurrences < 2:
            raise ValueError("a spread profile needs at least 2 occurrences")
        if self.length_ridge < 0:
            raise ValueError(f"length_ridge must be >= 0, got {self.length_ridge}")


@dataclass
class DictionaryTiming(DictConfig):
    """The sentence-level timing learnt from the training split (frames at speed 1)."""

    transition_frames: float  # pooled incoming transition of a mid-sentence gloss
    core_frames: float  # pooled core
    lead_hold: float  # rest hold before the entry movement
    lead_move: float  # entry movement: rest pose -> first core
    tail_move: float  # exit movement: last core -> rest pose
    tail_hold: float  # rest hold at the end
    length_intercept: float = 0.0  # log T = intercept + slope * log R + sum of gloss terms
    length_slope: float = 1.0
    profiled_glosses: int = 0  # glosses whose transition share came from their own profile


@dataclass
class _Occurrence:
    sentence: int
    start: int
    frames: int
    position: str  # FIRST | MID | LAST | ONLY


def min_jerk(u: np.ndarray) -> np.ndarray:
    """The minimum-jerk profile ``10u^3 - 15u^4 + 6u^5`` (0 -> 1 with zero end velocity and
    acceleration): how a hand moves from one point to the next with the least jerk."""
    return u**3 * (10.0 - 15.0 * u + 6.0 * u**2)


def resample(frames: np.ndarray, count: int, centres: bool = False) -> np.ndarray:
    """``frames`` ``(n, ...)`` linearly resampled in time to ``count`` frames.

    ``centres=False`` keeps both end frames (a core must start and end exactly where its
    transitions do); ``centres=True`` samples the centres of ``count`` equal bins (normalised
    time, for comparing occurrences of different lengths).
    """
    n = len(frames)
    if centres:
        t = np.clip((np.arange(count) + 0.5) / count * n - 0.5, 0.0, n - 1.0)
    else:
        t = np.linspace(0.0, n - 1.0, count)
    lo = np.floor(t).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    w = (t - lo).reshape(-1, *([1] * (frames.ndim - 1)))
    return frames[lo] * (1.0 - w) + frames[hi] * w


def pack_cores(clips: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """Clips ``(n_i, J, 2)`` -> the stored arrays: ``offsets`` (G + 1,) int64, ``cores_q``
    (F, J, 2) uint8, ``cores_low`` (G, J, 2) float16 (each clip's per-joint minimum, rounded
    down so every step count is >= 0) and ``cores_step`` (G, 2) float32."""
    quantized, lows, steps = [], [], []
    for clip in clips:
        clip = np.asarray(clip, np.float32)
        low = clip.min(0).astype(np.float16)
        above = low.astype(np.float32) > clip.min(0)
        low[above] = np.nextafter(low[above], np.float16(-np.inf))
        span = clip - low.astype(np.float32)
        step = np.maximum(span.max((0, 1)) / 255.0, 1e-8).astype(np.float32)
        quantized.append(np.clip(np.round(span / step), 0, 255).astype(np.uint8))
        lows.append(low)
        steps.append(step)
    return {
        "offsets": np.concatenate([[0], np.cumsum([len(c) for c in clips])]).astype(np.int64),
        "cores_q": np.concatenate(quantized),
        "cores_low": np.stack(lows),
        "cores_step": np.stack(steps),
    }


def unpack_cores(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """The ``(F, J, 2)`` float32 clip frames of :func:`pack_cores`' arrays."""
    clip = np.repeat(np.arange(len(arrays["cores_low"])), np.diff(arrays["offsets"]))
    step = arrays["cores_step"].astype(np.float32)[clip][:, None, :]
    low = arrays["cores_low"].astype(np.float32)[clip]
    return arrays["cores_q"].astype(np.float32) * step + low


def transition_share(profile: np.ndarray, threshold: float) -> float:
    """Where the transition of a gloss ends, as a fraction of its segment.

    ``profile``: the hands' spread across occurrences at each normalised instant. The plateau
    is the median of its second half; the core starts at the first instant whose excess over
    the plateau is at most ``threshold`` of the excess at the segment's start (half the
    segment when it never gets there: too few occurrences to tell).
    """
    plateau = float(np.median(profile[len(profile) // 2 :]))
    excess = profile - plateau
    if excess[0] <= 0.0:
        return 0.0
    below = np.flatnonzero(excess <= threshold * excess[0])
    return float(below[0]) / len(profile) if len(below) else 0.5


def medoid(candidates: Sequence[np.ndarray], points: int, weights: np.ndarray) -> int:
    """Index of the candidate clip with the least summed distance to all others: each clip is
    resampled to ``points`` frames and two clips are compared by the weighted mean over frames
    and joints of the per-joint Euclidean distance."""
    if len(candidates) <= 2:
        return 0  # two clips are each other's medoid: take the first, never their mean
    stack = np.stack([resample(c, points, centres=True) for c in candidates])  # (n, P, J, 2)
    x, y = stack[..., 0].astype(np.float32), stack[..., 1].astype(np.float32)
    w = (weights / (weights.sum() * points)).astype(np.float32)
    total = np.array([float((np.hypot(x - x[i], y - y[i]) @ w).sum()) for i in range(len(x))])
    return int(np.argmin(total))


class GlossDictionary:
    """Gloss sequences in, canonical whole-body :class:`PoseSequence` s (25 fps) out; the same
    ``generate`` / ``generate_stream`` / ``config.max_glosses`` interface as
    :class:`text2pose.g2p.GlossToPose`, so :class:`text2pose.pipeline.TextToPose` and the
    evaluation take either."""

    def __init__(
        self,
        config: DictionaryConfig,
        timing: DictionaryTiming,
        vocab: GlossVocab,
        arrays: dict[str, np.ndarray],
    ) -> None:
        """``arrays``: the clips as :func:`pack_cores` stores them (``offsets``, ``cores_q``,
        ``cores_low``, ``cores_step``), ``core_frames``, ``transition_frames`` and
        ``length_bias`` (G,) (each gloss's term in the sentence-length model), ``joints`` (J,)
        the whole-body joints stored, ``rest`` (133, 2) the rest pose (also fills joints not
        stored). Folders from before the packing hold ``cores`` (F, J, 2) float16 instead; they
        are packed here, so a model always saves what it generates from."""
        self.config, self.timing, self.vocab = config, timing, vocab
        glosses = len(vocab) - len(GlossVocab.SPECIALS)
        joints = np.asarray(arrays.get("joints", np.zeros(0)), np.int64)
        offsets = np.asarray(arrays.get("offsets", np.zeros(1)), np.int64)
        if "cores" in arrays:  # the float16 layout of stop 36 and before
            old = np.asarray(arrays["cores"])
            if old.ndim != 3 or offsets[-1] != len(old) or (np.diff(offsets) < 1).any():
                raise ValueError("dictionary offsets must rise from 0 to the number of core frames")
            clips = [old[a:b] for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
            arrays = {k: v for k, v in arrays.items() if k != "cores"} | pack_cores(clips)
        frames = len(arrays["cores_q"]) if "cores_q" in arrays else 0
        expect = {"offsets": (glosses + 1,), "core_frames": (glosses,),
                  "transition_frames": (glosses,), "length_bias": (glosses,),
                  "rest": (L.NUM_WHOLEBODY, 2), "cores_q": (frames, len(joints), 2),
                  "cores_low": (glosses, len(joints), 2), "cores_step": (glosses, 2)}  # fmt: skip
        for name, shape in expect.items():
            if name not in arrays or arrays[name].shape != shape:
                found = arrays[name].shape if name in arrays else "missing"
                raise ValueError(f"dictionary array {name!r}: expected {shape}, got {found}")
        if offsets[0] != 0 or offsets[-1] != frames or (np.diff(offsets) < 1).any():
            raise ValueError("dictionary offsets must rise from 0 to the number of core frames")
        self.arrays = arrays
        self.joints, self.offsets = joints, offsets
        self.cores = unpack_cores(arrays)
        self.core_frames = arrays["core_frames"].astype(np.float64)
        self.transition_frames = arrays["transition_frames"].astype(np.float64)
        self.length_bias = arrays["length_bias"].astype(np.float64)
        self.rest = arrays["rest"].astype(np.float32)
        self.confidence = np.zeros(L.NUM_WHOLEBODY, np.float32)
        self.confidence[joints] = 1.0

    # ----------------------------------------------------------------------- planning
    def _row(self, gloss: str) -> int | None:
        index = self.vocab.index.get(gloss)
        specials = len(GlossVocab.SPECIALS)
        return None if index is None or index < specials else index - specials

    def _lengths(self, glosses: Sequence[str]) -> np.ndarray:
        """Segment lengths at speed 1 (floats), before the length model."""
        t = self.timing
        lengths = [t.lead_hold, t.lead_move]
        for i, gloss in enumerate(glosses):
            row = self._row(gloss)
            trans = t.transition_frames if row is None else self.transition_frames[row]
            core = t.core_frames if row is None else self.core_frames[row]
            lengths += [core] if i == 0 else [trans, core]
        lengths += [t.tail_move, t.tail_hold]
        return np.asarray(lengths, np.float64)

    def planned_frames(self, glosses: Sequence[str]) -> float:
        """The sentence length ``R`` the length model reads: summed segments at speed 1."""
        return float(self._lengths(glosses).sum())

    def predicted_frames(self, glosses: Sequence[str]) -> float:
        """The length model: ``log T = a + b log R + sum of the glosses' terms`` (an unknown
        gloss adds nothing). The per-gloss terms carry what the speed-1 timing misses, e.g.
        that sentences with some signs run slower in the corpus."""
        t = self.timing
        rows = [r for r in map(self._row, glosses) if r is not None]
        log_t = t.length_intercept + t.length_slope * np.log(self.planned_frames(glosses))
        return float(np.exp(log_t + self.length_bias[rows].sum()))

    def plan(
        self,
        glosses: Sequence[str],
        max_frames: int | None = None,
        target: SentenceTarget | None = None,
    ) -> np.ndarray:
        """Integer frames of every segment: ``[lead hold, entry, core 1, trans 2, core 2, ...,
        core n, exit, tail hold]`` (``2n + 3`` entries), rescaled to ``target`` when given (the
        text path's, see :class:`SentenceTarget`), else by the length model, and cut from the
        end to ``max_frames``. Unknown glosses get the pooled transition + core."""
        check_glosses(glosses, self.config.max_glosses)
        limit = frame_limit(max_frames, self.config.max_frames)
        raw = self._lengths(glosses)
        own = self.predicted_frames(glosses) if self.config.length_model else float(raw.sum())
        frames = own if target is None else target.frames
        if target is not None and target.keep_signs:
            raw *= own / float(raw.sum())  # the signs at the speed the glosses give
            moves = np.ones(len(raw), bool)
            moves[2:-1:2] = False  # all but the cores
            room = float(raw[moves].sum())
            raw[moves] *= max((room + frames - float(raw.sum())) / room, MIN_MOVE_SCALE)
        raw *= frames / float(raw.sum())  # keep_signs: a no-op unless the moves hit their floor
        bounds = np.round(np.concatenate([[0.0], np.cumsum(raw)])).astype(np.int64)
        counts = np.diff(bounds)
        counts[2:-1:2] = np.maximum(counts[2:-1:2], 1)  # every core shows at least one frame
        return trim_to(counts, limit)

    # ----------------------------------------------------------------------- synthesis
    def _core(self, row: int, count: int) -> np.ndarray:
        clip = self.cores[self.offsets[row] : self.offsets[row + 1]]
        return clip if len(clip) == count else resample(clip, count)

    @staticmethod
    def _move(a: np.ndarray, b: np.ndarray, count: int) -> np.ndarray:
        u = min_jerk(np.arange(1, count + 1) / (count + 1.0))[:, None, None]
        return a[None] + u.astype(np.float32) * (b - a)[None]

    def _pieces(
        self, glosses: Sequence[str], limit: int | None, target: SentenceTarget | None
    ) -> Iterator[np.ndarray]:
        """Stored-joint frames ``(n, J, 2)``: the lead + first sign, each following transition
        + sign, then the exit + hold -- one piece per gloss, built only when asked for."""
        frames = self.plan(glosses, limit, target)
        rest = self.rest[self.joints]
        current = rest
        parts = [np.repeat(rest[None], frames[0], 0)]
        for i, gloss in enumerate(glosses):
            move, count = int(frames[2 * i + 1]), int(frames[2 * i + 2])
            row = self._row(gloss)
            if row is None:  # unknown gloss: hold the previous pose (see module docstring)
                parts.append(np.repeat(current[None], move + count, 0))
            elif count:
                core = self._core(row, count)
                parts += [self._move(current, core[0], move), core]
                current = core[-1]
            else:  # cut by max_frames
                parts.append(self._move(current, self._core(row, 1)[0], move))
            yield np.concatenate(parts)
            parts = []
        hold = np.repeat(rest[None], int(frames[-1]), 0)
        yield np.concatenate([self._move(current, rest, int(frames[-2])), hold])

    def _full(self, piece: np.ndarray) -> np.ndarray:
        """Stored-joint xy ``(n, J, 2)`` -> whole-body xy + confidence ``(n, 133, 3)``."""
        out = np.empty((len(piece), L.NUM_WHOLEBODY, 3), np.float32)
        out[..., :2] = self.rest
        out[:, self.joints, :2] = piece
        out[..., 2] = self.confidence
        return out

    def generate(
        self,
        gloss_lists: Sequence[Sequence[str]],
        batch_size: int = 16,
        max_frames: int | None = None,
        targets: Sequence[SentenceTarget | None] | None = None,
    ) -> list[PoseSequence]:
        """One canonical whole-body :class:`PoseSequence` (25 fps) per gloss sequence, each
        timed to ``targets[i]`` when given (see :meth:`plan`). ``batch_size`` is accepted for
        interface parity with GlossToPose (no batching here)."""
        limit = frame_limit(max_frames, self.config.max_frames)
        timed = [None] * len(gloss_lists) if targets is None else list(targets)
        if len(timed) != len(gloss_lists):
            raise ValueError(f"{len(timed)} targets for {len(gloss_lists)} sentences")
        return [
            as_sequence(self._full(np.concatenate(list(self._pieces(glosses, limit, target)))))
            for glosses, target in zip(gloss_lists, timed, strict=True)
        ]

    def generate_stream(
        self,
        glosses: Sequence[str],
        chunk_frames: int = 8,
        max_frames: int | None = None,
        target: SentenceTarget | None = None,
    ) -> Iterator[np.ndarray]:
        """Frames as ``(n <= chunk_frames, 133, 3)`` chunks; the first is yielded as soon as the
        first gloss is built, before any later one. Concatenated they equal ``generate``."""
        if chunk_frames < 1:
            raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
        pending = np.zeros((0, L.NUM_WHOLEBODY, 3), np.float32)
        for piece in self._pieces(glosses, frame_limit(max_frames, self.config.max_frames), target):
            pending = np.concatenate([pending, self._full(piece)])
            while len(pending) >= chunk_frames:
                yield pending[:chunk_frames]
                pending = pending[chunk_frames:]
        if len(pending):
            yield pending

    # ----------------------------------------------------------------------- folders
    def save_pretrained(self, directory: str | Path) -> Path:
        """``config.json`` (settings + learnt timing), ``model.safetensors`` (the arrays, no
        pickle) and ``vocab.json``, each written atomically."""
        config = {**self.config.to_dict(), "timing": self.timing.to_dict()}
        directory = write_config(directory, type(self).__name__, config)
        arrays = {k: np.ascontiguousarray(v) for k, v in self.arrays.items()}
        atomic_write(directory / WEIGHTS_NAME, save(arrays))
        self.vocab.save(directory / VOCAB_NAME)
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> GlossDictionary:
        """Load a folder written by :meth:`save_pretrained`; a missing or corrupt file is a
        ``FileNotFoundError``/``ValueError`` naming the folder."""
        directory = Path(directory)
        meta = read_config(directory, cls.__name__, "gloss dictionary", files=(VOCAB_NAME,))
        timing = DictionaryTiming.from_dict(meta.pop("timing", None) or {})
        try:
            arrays = load_file(str(directory / WEIGHTS_NAME))
        except Exception as e:  # safetensors raises its own error types for corrupt files
            raise ValueError(f"{directory}: cannot read {WEIGHTS_NAME} ({e})") from e
        try:
            return cls(
                DictionaryConfig.from_dict(meta),
                timing,
                GlossVocab.load(directory / VOCAB_NAME),
                arrays,
            )
        except ValueError as e:
            raise ValueError(f"{directory}: {e}") from e

    @property
    def size_bytes(self) -> int:
        return sum(int(v.nbytes) for v in self.arrays.values())


# --------------------------------------------------------------------------- building
class _Corpus:
    """The training split as gloss occurrences, with the head re-centred per sentence."""

    def __init__(self, data: G2PData) -> None:
        self.data = data
        heads = np.stack([p[:, HEAD].astype(np.float64).mean(0) for p in data.poses])
        self.head_shift = (heads.mean(0) - heads).astype(np.float32)  # (N, |HEAD|, 2)
        self.by_gloss: dict[str, list[_Occurrence]] = defaultdict(list)
        for k, (glosses, durations) in enumerate(zip(data.glosses, data.durations, strict=True)):
            starts = np.concatenate([[0], np.cumsum(durations)[:-1]])
            n = len(glosses)
            for i, (gloss, start, d) in enumerate(zip(glosses, starts, durations, strict=True)):
                position = ONLY if n == 1 else FIRST if i == 0 else LAST if i == n - 1 else MID
                self.by_gloss[gloss].append(_Occurrence(k, int(start), int(d), position))

    def frames(self, sentence: int, start: int = 0, stop: int | None = None) -> np.ndarray:
        clip = self.data.poses[sentence][start:stop].astype(np.float32)
        clip[:, HEAD] += self.head_shift[sentence]
        return clip

    def segment(self, occ: _Occurrence) -> np.ndarray:
        return self.frames(occ.sentence, occ.start, occ.start + occ.frames)


def _sample(items: list, count: int, rng: np.random.Generator) -> list:
    if len(items) <= count:
        return items
    return [items[i] for i in sorted(rng.choice(len(items), count, replace=False))]


def _hold(frames: np.ndarray, tolerance: float) -> int:
    """Frames at the start of ``frames`` whose hands stay within ``tolerance`` of the first."""
    moved = np.linalg.norm(frames[:, HANDS] - frames[0, HANDS], axis=-1).max(-1) > tolerance
    return int(np.argmax(moved)) if moved.any() else len(frames)


def _shrunk(values: list[float], pooled: float, prior: float) -> float:
    return (float(np.sum(values)) + prior * pooled) / (len(values) + prior)


def build_dictionary(data: G2PData, config: DictionaryConfig | None = None) -> GlossDictionary:
    """Learn a :class:`GlossDictionary` from training sentences (see the module docstring)."""
    config = dataclasses.replace(config or DictionaryConfig(), language=data.language)
    if not len(data):
        raise ValueError("cannot build a gloss dictionary from no sentences")
    rng = np.random.default_rng(config.seed)
    corpus = _Corpus(data)
    mids = {g: [o for o in occ if o.position == MID] for g, occ in corpus.by_gloss.items()}

    # Sentence speed: a sentence's mid-sentence gloss frames over those glosses' mean frames.
    mean_mid = {g: float(np.mean([o.frames for o in m])) for g, m in mids.items() if m}
    speed = np.ones(len(data))
    for k, glosses in enumerate(data.glosses):
        known = [(d, mean_mid[g]) for g, d in zip(glosses[1:-1], data.durations[k][1:-1],
                                                 strict=True) if g in mean_mid]  # fmt: skip
        if known:
            speed[k] = sum(d for d, _ in known) / sum(m for _, m in known)

    # Transition share of every gloss with enough mid-sentence occurrences (spread profile).
    shares: dict[str, float] = {}
    for gloss, occ in mids.items():
        if len(occ) >= config.min_profile_occurrences:
            picked = _sample(occ, config.profile_occurrences, rng)
            stack = np.stack(
                [resample(corpus.segment(o)[:, HANDS], config.profile_points, True) for o in picked]
            )
            spread = np.sqrt(stack.var(0).sum(-1)).mean(-1)  # (profile_points,)
            shares[gloss] = transition_share(spread, config.core_threshold)
    pooled_trans = float(np.median(
        [shares[g] * o.frames / speed[o.sentence] for g in shares for o in mids[g]]
    )) if shares else 0.0  # fmt: skip

    def mid_cut(gloss: str, occ: _Occurrence) -> int:
        """Transition frames at the start of a mid-sentence occurrence."""
        if gloss in shares:
            pre = round(shares[gloss] * occ.frames)
        else:
            pre = round(pooled_trans * speed[occ.sentence])
        return int(min(max(pre, 0), occ.frames - 1))

    core_samples = {g: [(o.frames - mid_cut(g, o)) / speed[o.sentence] for o in m]
                    for g, m in mids.items() if m}  # fmt: skip
    pooled_core = float(np.median([v for s in core_samples.values() for v in s]))

    trans_samples = {g: [mid_cut(g, o) / speed[o.sentence] for o in m]
                     for g, m in mids.items() if m}  # fmt: skip

    # Sentence ends: rest hold and movement before the first core and after the last one,
    # from sentences whose first and last glosses have mid-sentence timing.
    ends: dict[str, list[float]] = defaultdict(list)
    for k, glosses in enumerate(data.glosses):
        first, last = glosses[0], glosses[-1]
        if len(glosses) < 2 or first not in core_samples or last not in core_samples:
            continue
        poses, s = corpus.frames(k), speed[k]
        d_first, d_last = float(data.durations[k][0]), float(data.durations[k][-1])
        lead = max(d_first - s * float(np.mean(core_samples[first])), 0.0)
        trans = s * float(np.mean(trans_samples[last]))
        tail = max(d_last - trans - s * float(np.mean(core_samples[last])), 0.0)
        hold_in = min(float(_hold(poses, config.rest_tolerance)), lead)
        hold_out = min(float(_hold(poses[::-1], config.rest_tolerance)), tail)
        ends["lead_hold"].append(hold_in / s)
        ends["lead_move"].append((lead - hold_in) / s)
        ends["tail_move"].append((tail - hold_out) / s)
        ends["tail_hold"].append(hold_out / s)
        ends["first_pre"].append(lead / d_first)
        ends["last_pre"].append(min(trans / d_last, 1.0))
        ends["last_post"].append(tail / d_last)
    if not ends:
        raise ValueError("no sentence of >= 2 glosses with mid-sentence statistics to learn from")
    med = {k: float(np.median(v)) for k, v in ends.items()}
    lead_total = med["lead_hold"] + med["lead_move"]
    tail_total = med["tail_move"] + med["tail_hold"]
    only_total = lead_total + pooled_core + tail_total
    # The non-sign shares of a boundary segment (for glosses never seen mid-sentence).
    boundary = {FIRST: (med["first_pre"], 0.0), LAST: (med["last_pre"], med["last_post"]),
                ONLY: (lead_total / only_total, tail_total / only_total)}  # fmt: skip

    def core_clip(gloss: str, occ: _Occurrence) -> np.ndarray:
        segment = corpus.segment(occ)
        if occ.position == MID:
            return segment[mid_cut(gloss, occ) :]
        pre_share, post_share = boundary[occ.position]
        pre = min(round(pre_share * occ.frames), occ.frames - 1)
        stop = max(occ.frames - round(post_share * occ.frames), pre + 1)
        return segment[pre:stop]

    vocab = GlossVocab.build(data.glosses)
    joints = np.flatnonzero(data.labelled)
    weights = np.where(np.isin(joints, HANDS), config.hand_weight, 1.0)
    cores, core_frames, trans_frames = [], [], []
    for gloss in vocab.tokens[len(GlossVocab.SPECIALS) :]:
        pool = mids[gloss] or corpus.by_gloss[gloss]
        clips = [
            core_clip(gloss, o)[:, joints] for o in _sample(pool, config.medoid_candidates, rng)
        ]
        cores.append(clips[medoid(clips, config.medoid_points, weights)])
        samples = core_samples.get(gloss) or [
            len(core_clip(gloss, o)) / speed[o.sentence] for o in corpus.by_gloss[gloss]
        ]
        core_frames.append(_shrunk(samples, pooled_core, config.timing_prior))
        trans_frames.append(
            _shrunk(trans_samples.get(gloss, []), pooled_trans, config.timing_prior)
        )
    # The rest pose: the medoid of sentence first frames (a real frame, like the cores).
    firsts = [corpus.frames(k, 0, 1) for k in range(min(len(data), config.medoid_candidates))]
    rest = firsts[medoid([f[:, joints] for f in firsts], 1, np.ones(len(joints)))][0]
    arrays = {
        **pack_cores(cores),
        "core_frames": np.asarray(core_frames, np.float16),
        "transition_frames": np.asarray(trans_frames, np.float16),
        "length_bias": np.zeros(len(core_frames), np.float16),
        "joints": joints.astype(np.int64),
        "rest": rest.astype(np.float16),
    }
    timing = DictionaryTiming(
        transition_frames=pooled_trans,
        core_frames=pooled_core,
        lead_hold=med["lead_hold"],
        lead_move=med["lead_move"],
        tail_move=med["tail_move"],
        tail_hold=med["tail_hold"],
        profiled_glosses=len(shares),
    )
    intercept, slope, bias = _fit_length(GlossDictionary(config, timing, vocab, arrays), data)
    timing = dataclasses.replace(timing, length_intercept=intercept, length_slope=slope)
    arrays["length_bias"] = bias.astype(np.float16)
    return GlossDictionary(config, timing, vocab, arrays)


def _fit_length(model: GlossDictionary, data: G2PData) -> tuple[float, float, np.ndarray]:
    """Ridge regression of ``log T`` on ``[1, log R, gloss counts]`` over the training
    sentences (``R``: the model's speed-1 plan); only the per-gloss terms are penalised
    (``config.length_ridge``). Normal equations, accumulated over blocks of sentences."""
    size = len(model.length_bias) + 2
    gram, moment = np.zeros((size, size)), np.zeros(size)
    for start in range(0, len(data), 1024):
        block = range(start, min(start + 1024, len(data)))
        x = np.zeros((len(block), size))
        for i, k in enumerate(block):
            glosses = data.glosses[k]
            x[i, :2] = 1.0, np.log(model.planned_frames(glosses))
            for row in (r for r in map(model._row, glosses) if r is not None):
                x[i, 2 + row] += 1.0
        gram += x.T @ x
        moment += x.T @ np.log(data.num_frames[list(block)].astype(np.float64))
    penalty = np.full(size, model.config.length_ridge)
    penalty[:2] = 0.0
    coef = np.linalg.lstsq(gram + np.diag(penalty), moment, rcond=None)[0]
    return float(coef[0]), float(coef[1]), coef[2:]


# --------------------------------------------------------------------------- build command
@dataclass
class DictionaryBuildConfig:
    """``slp train text2pose --stage dict``: the ``model:`` and ``train:`` sections of
    ``configs/text2pose/dict-<lang>.yaml``."""

    model: DictionaryConfig = field(default_factory=DictionaryConfig)
    cache_dir: str = "outputs/cache/g2p"
    max_sentences: int | None = None  # first N training sentences (tests)

    @classmethod
    def from_yaml(cls, path: str | Path) -> DictionaryBuildConfig:
        return recipe_from_yaml(cls, DictionaryConfig, path)


@dataclass
class DictionaryBuildReport:
    """What a build did (``build.json`` beside the model folder)."""

    language: str
    sentences: int
    glosses: int
    profiled_glosses: int  # glosses with their own transition share (the rest: pooled)
    core_frames_stored: int
    array_bytes: int
    data_seconds: float  # loading (or first building) the cached G2P data
    build_seconds: float  # learning the dictionary itself


def run_dictionary(cfg: DictionaryBuildConfig, out_dir: str | Path) -> DictionaryBuildReport:
    """Build the dictionary of ``cfg.model.language`` into ``out_dir/model`` and write
    ``out_dir/build.json``. A build takes CPU minutes, so it is not resumable: a re-run
    rebuilds it from the cached G2P data (deterministic for ``cfg.model.seed``)."""
    from pgmm.data.synth.signer import SynthSigner
    from text2pose.data import build_g2p_data

    language = cfg.model.language
    if language not in ("de", "zh"):
        raise ValueError(
            f"the dictionary config must name model.language de or zh, not {language!r}"
        )
    tic = time.perf_counter()
    signer = SynthSigner(languages=[language])
    train = build_g2p_data(signer, "train", language, cfg.cache_dir, cfg.max_sentences)
    loaded = time.perf_counter() - tic
    model = build_dictionary(train, cfg.model)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir / "model")
    report = DictionaryBuildReport(
        language=language,
        sentences=len(train),
        glosses=len(model.vocab) - len(GlossVocab.SPECIALS),
        profiled_glosses=model.timing.profiled_glosses,
        core_frames_stored=len(model.cores),
        array_bytes=model.size_bytes,
        data_seconds=round(loaded, 1),
        build_seconds=round(time.perf_counter() - tic - loaded, 1),
    )
    text = json.dumps(dataclasses.asdict(report), indent=2) + "\n"
    (out_dir / "build.json").write_text(text, encoding="utf-8")
    return report
