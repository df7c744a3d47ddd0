"""Gloss -> pose training data: SynthSigner poses of corpus sentences in the canonical frame.

Every G2P model (and baseline) learns from and is scored against the same targets: the
canonical whole-body xy (:mod:`text2pose.canonical`) of SynthSigner signing a corpus sentence
with its real length, plus the number of frames each gloss occupies. Synthesising a sentence
costs ~7 ms, and a training run reads each one hundreds of times, so a split is computed once
and cached as one ``.npz`` (float16 xy: ~5e-4 of the canvas, far below any model's error).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pgmm.data.corpus import CorpusSentence
from pgmm.data.synth.motion import timeline
from pgmm.data.synth.signer import SynthSigner, to_pose_sequence
from pgmm.pose import layout as L
from text2pose.canonical import to_canonical

CACHE_VERSION = 1  # bump when the cached content changes meaning


# --------------------------------------------------------------------------- vocabulary
class GlossVocab:
    """Word-level gloss vocabulary with ``<pad>``/``<bos>``/``<eos>``/``<unk>`` at ids 0-3.

    Glosses outside the training split map to ``<unk>``: a model never saw a sign for them, and
    one shared id keeps inference total (it always returns a pose) instead of failing on the
    first unseen gloss.
    """

    PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
    SPECIALS = (PAD, BOS, EOS, UNK)
    pad_id, bos_id, eos_id, unk_id = 0, 1, 2, 3

    def __init__(self, tokens: Sequence[str]) -> None:
        if tuple(tokens[: len(self.SPECIALS)]) != self.SPECIALS:
            raise ValueError(f"a GlossVocab must start with {self.SPECIALS}")
        if len(set(tokens)) != len(tokens):
            raise ValueError("GlossVocab tokens must be unique")
        self.tokens = tuple(tokens)
        self.index = {t: i for i, t in enumerate(self.tokens)}

    @classmethod
    def build(cls, gloss_lists: Iterable[Sequence[str]], min_count: int = 1) -> GlossVocab:
        """Vocabulary of the glosses seen ``>= min_count`` times (most frequent first)."""
        counts = Counter(g for glosses in gloss_lists for g in glosses)
        kept = sorted(
            (g for g, c in counts.items() if c >= min_count), key=lambda g: (-counts[g], g)
        )
        return cls(cls.SPECIALS + tuple(kept))

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, glosses: Sequence[str], bos_eos: bool = True) -> list[int]:
        ids = [self.index.get(g, self.unk_id) for g in glosses]
        return [self.bos_id, *ids, self.eos_id] if bos_eos else ids

    def save(self, path: str | Path) -> None:
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps({"tokens": list(self.tokens)}, ensure_ascii=False), "utf-8")
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> GlossVocab:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"gloss vocabulary not found: {path}")
        try:
            tokens = json.loads(path.read_text("utf-8"))["tokens"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{path}: not a gloss vocabulary ({e})") from e
        return cls(tokens)


def check_glosses(glosses: Sequence[str], max_glosses: int) -> None:
    """A gloss sequence a G2P model can sign: not empty, and ``max_glosses`` (its positions,
    ``<bos>``/``<eos>`` included) not exceeded."""
    if not glosses:
        raise ValueError("cannot generate a pose for an empty gloss sequence")
    if len(glosses) > max_glosses - 2:
        raise ValueError(f"{len(glosses)} glosses exceed max_glosses - 2 = {max_glosses - 2}")


def frame_limit(max_frames: int | None, cap: int) -> int:
    """The frame limit of one generation: ``max_frames`` (default ``cap``), within ``[1, cap]``."""
    limit = cap if max_frames is None else max_frames
    if not 1 <= limit <= cap:
        raise ValueError(f"max_frames must be in [1, {cap}], got {limit}")
    return limit


def trim_to(counts: np.ndarray, limit: int) -> np.ndarray:
    """Frames per segment cut from the end so that they sum to at most ``limit``: each segment
    keeps what is left of ``limit`` after the segments before it."""
    return np.clip(limit - (np.cumsum(counts) - counts), 0, counts)


# --------------------------------------------------------------------------- durations
def gloss_durations(signer: SynthSigner, sentence: CorpusSentence) -> np.ndarray:
    """Frames per gloss of a sentence as SynthSigner times it (int64, sums to ``num_frames``).

    SynthSigner's :func:`~pgmm.data.synth.motion.timeline` lays out rest, entry, sign,
    transition, exit and rest segments. A gloss owns its incoming transition (or the entry) and
    its sign; the first gloss also owns the leading rest and the last one the exit and trailing
    rest, so the durations tile the sentence exactly. Boundaries are rounded to whole frames.
    """
    if not sentence.glosses:
        return np.zeros(0, np.int64)
    weights = [s.duration for s in signer.signs(sentence.language, sentence.glosses)]
    starts = [
        a for kind, _, a, _ in timeline(weights, sentence.num_frames) if kind in ("in", "trans")
    ]
    bounds = np.round([0.0, *starts[1:], float(sentence.num_frames)]).astype(np.int64)
    return np.diff(bounds)


# --------------------------------------------------------------------------- dataset
@dataclass
class G2PData:
    """Sentences with canonical poses: ``poses[i]`` is ``(T_i, 133, 2)`` float16 xy,
    ``durations[i]`` the frames per gloss (sums to ``T_i``). ``labelled`` marks the joints
    SynthSigner labels in some frame: it has no feet (confidence 0 throughout), while hands at
    rest below the signer's frame have confidence 0 there but exact coordinates, so they are
    kept as targets."""

    ids: list[str]
    language: str
    glosses: list[tuple[str, ...]]
    poses: list[np.ndarray]
    durations: list[np.ndarray]
    labelled: np.ndarray  # (133,) bool

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def num_frames(self) -> np.ndarray:
        return np.array([len(p) for p in self.poses], np.int64)

    def subset(self, indices: Iterable[int]) -> G2PData:
        idx = list(indices)
        return G2PData(
            [self.ids[i] for i in idx],
            self.language,
            [self.glosses[i] for i in idx],
            [self.poses[i] for i in idx],
            [self.durations[i] for i in idx],
            self.labelled,
        )

    def save(self, path: str | Path) -> None:
        """One ``.npz`` (concatenated frames + offsets; text as JSON), written atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"version": CACHE_VERSION, "ids": self.ids, "language": self.language,
                "glosses": [list(g) for g in self.glosses]}  # fmt: skip
        empty = np.zeros((0, L.NUM_WHOLEBODY, 2), np.float16)
        tmp = path.with_name(f".{path.name}.tmp")
        with tmp.open("wb") as f:
            np.savez(
                f,
                meta=np.array(json.dumps(meta, ensure_ascii=False)),
                frames=np.concatenate(self.poses) if self.poses else empty,
                lengths=self.num_frames,
                durations=np.concatenate(self.durations) if self.durations else np.zeros(0, int),
                labelled=self.labelled,
            )
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path) -> G2PData:
        try:
            with np.load(path) as z:
                meta = json.loads(str(z["meta"]))
                frames, lengths = z["frames"], z["lengths"]
                durations, labelled = z["durations"], z["labelled"]
        except (OSError, KeyError, ValueError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: not a G2P data cache ({e})") from e
        if meta.get("version") != CACHE_VERSION:
            raise ValueError(f"{path}: cache version {meta.get('version')} != {CACHE_VERSION}")
        glosses = [tuple(g) for g in meta["glosses"]]
        frame_cuts = np.cumsum(lengths)[:-1]
        gloss_cuts = np.cumsum([len(g) for g in glosses])[:-1]
        return cls(
            meta["ids"],
            meta["language"],
            glosses,
            list(np.split(frames, frame_cuts)) if len(lengths) else [],
            list(np.split(durations, gloss_cuts)) if len(glosses) else [],
            labelled.astype(bool),
        )


def sentence_example(
    signer: SynthSigner, sentence: CorpusSentence
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Canonical xy ``(T, 133, 2)`` float16, per-gloss durations and the joints labelled in
    some frame."""
    seq = to_canonical(to_pose_sequence(signer.pose(sentence)))
    labelled = (seq.confidence > 0).any(0)
    return seq.xy.astype(np.float16), gloss_durations(signer, sentence), labelled


def build_g2p_data(
    signer: SynthSigner,
    split: str,
    language: str,
    cache_dir: str | Path | None = None,
    max_sentences: int | None = None,
    progress: bool = True,
) -> G2PData:
    """The G2P data of a corpus split, read from / written to ``cache_dir`` when given.

    The cache name records language, split, sentence cap and the signer's seed, so a cache
    never silently stands in for different data.
    """
    path = None
    if cache_dir is not None:
        cap = "all" if max_sentences is None else str(max_sentences)
        path = Path(cache_dir) / f"g2p_{language}_{split}_{cap}_seed{signer.seed}.npz"
        if path.is_file():
            return G2PData.load(path)
    sentences = signer.sentences(split, language)[:max_sentences]
    if not sentences:
        raise ValueError(f"no {language}/{split} sentences in the SynthSigner corpus")
    data = g2p_data_from_sentences(signer, sentences, progress)
    if path is not None:
        data.save(path)
    return data


def text_tokens(text: str, language: str) -> tuple[str, ...]:
    """The input tokens of direct text -> pose: the normalised text's words (German) or
    characters (Chinese, which has no spaces), exactly as the T2G model sees the text."""
    from text2pose.normalize import normalize_sentence

    text = normalize_sentence(text, language)
    return tuple(text.split()) if language == "de" else tuple(c for c in text if not c.isspace())


def as_text_data(data: G2PData, signer: SynthSigner, split: str) -> G2PData:
    """The same poses keyed by the sentences' *text* instead of their glosses: the data of the
    direct T2P variant (Progressive Transformers' T2P), which skips glosses altogether.

    Text tokens have no frame alignment, so each gets an equal share of the sentence's frames
    (the NAR duration predictor then learns these shares; AR mode ignores durations).
    """
    text = {s.id: s.text for s in signer.sentences(split, data.language)}
    tokens = [text_tokens(text[i], data.language) or ("<empty>",) for i in data.ids]
    durations = [
        np.diff(np.round(np.linspace(0, len(p), len(t) + 1))).astype(np.int64)
        for p, t in zip(data.poses, tokens, strict=True)
    ]
    return G2PData(data.ids, data.language, tokens, data.poses, durations, data.labelled)


def g2p_data_from_sentences(
    signer: SynthSigner, sentences: Sequence[CorpusSentence], progress: bool = False
) -> G2PData:
    """The G2P data of any sentences of one language (no caching)."""
    languages = {s.language for s in sentences}
    if len(languages) != 1:
        raise ValueError(f"sentences must share one language, got {sorted(languages)}")
    from pgmm.console import progress as progress_bar

    poses, durations, labelled = [], [], np.zeros(L.NUM_WHOLEBODY, bool)
    for s in progress_bar(sentences, desc="g2p poses", unit="sent", disable=not progress):
        xy, dur, lab = sentence_example(signer, s)
        poses.append(xy)
        durations.append(dur)
        labelled |= lab
    glosses = [s.glosses for s in sentences]
    return G2PData([s.id for s in sentences], languages.pop(), glosses, poses, durations, labelled)
