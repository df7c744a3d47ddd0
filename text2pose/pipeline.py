"""``TextToPose``: text → glosses (T2G) → pose frames (G2P), one object per language.

The serving graph only needs this object: ``generate`` for a whole sentence and
``generate_stream`` for chunks that can be rendered while later sentences are still being
decoded. Text longer than one sentence is split on sentence boundaries (see
:mod:`text2pose.normalize`), each sentence is signed in turn, and consecutive sentences are
joined by a short linear blend so the signer never jumps.

The gloss -> pose step is either the NAR/AR network (:class:`text2pose.g2p.GlossToPose`) or the
dictionary model (:class:`text2pose.dictionary.GlossDictionary`): both offer ``generate``,
``generate_stream`` and ``config.max_glosses``. :func:`load_g2p` picks the class a folder's
``config.json`` names, and ``text2pose.json`` may name the G2P folder (``"g2p"``, default
``g2p``), so a dictionary can ship beside the network and be selected without moving either.
With a dictionary G2P, an optional ``length/`` folder (:class:`text2pose.length.SentenceLength`)
times each sentence from its text as well as its glosses, so a gloss the T2G leaves out does not
shorten the signed sentence.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from pgmm.checkpoint import CONFIG_NAME
from pgmm.pose.sequence import PoseSequence
from text2pose.canonical import as_sequence
from text2pose.dictionary import GlossDictionary, SentenceTarget
from text2pose.g2p import GlossToPose
from text2pose.length import SentenceLength
from text2pose.normalize import TextInputError, split_sentences
from text2pose.t2g import TextToGloss
from text2pose.timeline import GlossSpan, GlossTimeline

log = logging.getLogger(__name__)
PIPELINE_NAME = "text2pose.json"
LENGTH_FOLDER = "length"
BLEND_FRAMES = 6
G2PModel = GlossToPose | GlossDictionary


def load_g2p(directory: str | Path) -> G2PModel:
    """The gloss -> pose model saved in ``directory``, of the class its ``config.json`` names."""
    path = Path(directory) / CONFIG_NAME
    try:
        model_type = json.loads(path.read_text(encoding="utf-8")).get("model_type")
    except (OSError, json.JSONDecodeError, AttributeError):
        model_type = None  # GlossToPose.from_pretrained names what is wrong with the folder
    if model_type == GlossDictionary.__name__:
        return GlossDictionary.from_pretrained(directory)
    return GlossToPose.from_pretrained(directory)


def sentence_target(
    g2p: G2PModel, length: SentenceLength | None, sentence: str, glosses: Sequence[str]
) -> SentenceTarget | None:
    """How long one sentence is signed: the dictionary's estimate from ``glosses`` joined with
    ``length``'s from the (normalised) ``sentence``; None leaves the G2P's own timing (no
    length model, or a network G2P, which times each gloss itself)."""
    if length is None or not isinstance(g2p, GlossDictionary):
        return None
    frames = length.frames(sentence, g2p.predicted_frames(glosses))
    return SentenceTarget(frames, length.config.keep_signs)


class TextToPose:
    def __init__(
        self, t2g: TextToGloss, g2p: G2PModel, length: SentenceLength | None = None
    ) -> None:
        self.t2g, self.g2p, self.length = t2g, g2p, length
        self.language = t2g.config.language
        if length is not None and length.config.language != self.language:
            raise ValueError(
                f"the sentence length model reads {length.config.language!r} text but the "
                f"T2G translates {self.language!r}"
            )

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> TextToPose:
        """A folder with ``t2g/`` and ``g2p/`` model folders (what ``save_pretrained`` writes);
        ``text2pose.json`` may name another G2P folder of it (``"g2p": "g2p_dict"``)."""
        directory = Path(directory)
        if not (directory / PIPELINE_NAME).is_file():
            raise FileNotFoundError(
                f"not a text2pose model folder (no {PIPELINE_NAME}): {directory}"
            )
        try:
            g2p_name = json.loads((directory / PIPELINE_NAME).read_text()).get("g2p", "g2p")
        except (json.JSONDecodeError, AttributeError) as e:
            raise ValueError(f"{directory / PIPELINE_NAME}: not a JSON object ({e})") from e
        if not isinstance(g2p_name, str) or g2p_name in ("", ".", "..") or "/" in g2p_name:
            raise ValueError(f"{directory / PIPELINE_NAME}: 'g2p' must name a subfolder")
        length_dir = directory / LENGTH_FOLDER
        length = SentenceLength.from_pretrained(length_dir) if length_dir.is_dir() else None
        t2g = TextToGloss.from_pretrained(directory / "t2g")
        return cls(t2g, load_g2p(directory / g2p_name), length)

    def save_pretrained(self, directory: str | Path) -> Path:
        directory = Path(directory)
        self.t2g.save_pretrained(directory / "t2g")
        self.g2p.save_pretrained(directory / "g2p")
        if self.length is not None:
            self.length.save_pretrained(directory / LENGTH_FOLDER)
        (directory / PIPELINE_NAME).write_text(json.dumps({"language": self.language}))
        return directory

    def glosses(self, text: str) -> list[list[str]]:
        """Gloss sequence of every sentence of ``text`` (TextInputError on unusable text)."""
        return [g for _, g in self._sentences(text)]

    def _sentences(self, text: str) -> list[tuple[str, list[str]]]:
        """Every normalised sentence of ``text`` with its glosses, cut to what G2P accepts."""
        sentences = split_sentences(text, self.language)
        glosses = self.t2g.translate_normalized(sentences)
        for sentence, g in zip(sentences, glosses, strict=True):
            if not g:
                raise TextInputError(f"no signs could be produced for {sentence!r}")
        return [(s, self.fit(g)) for s, g in zip(sentences, glosses, strict=True)]

    def sign(self, sentences: Sequence[str], glosses: Sequence[list[str]]) -> list[PoseSequence]:
        """The G2P's poses of each normalised sentence's glosses (already :meth:`fit`), timed as
        :meth:`generate` times them but without joining sentences: the text path's poses
        for glosses decoded elsewhere (evaluation decodes the T2G in batches)."""
        if not isinstance(self.g2p, GlossDictionary):
            return self.g2p.generate(glosses)
        targets = [sentence_target(self.g2p, self.length, s, g)
                   for s, g in zip(sentences, glosses, strict=True)]  # fmt: skip
        return self.g2p.generate(glosses, targets=targets)

    def fit(self, glosses: list[str]) -> list[str]:
        """Cut a gloss sequence to what G2P accepts. Only a degenerate T2G output (a repetition
        loop) is that long -- a sentence within the length limit has far fewer signs -- so the
        cut is logged rather than failing the request."""
        limit = self.g2p.config.max_glosses - 2
        if len(glosses) > limit:
            log.warning("T2G produced %d glosses; keeping the first %d", len(glosses), limit)
        return glosses[:limit]

    def timeline(self, text: str) -> GlossTimeline:
        """The glosses of ``text`` and the frames each is signed in, from the G2P model's own
        plan (no pose is made). For the dictionary a sign's span is its core, without the
        incoming transition; for the NAR network it is the gloss's predicted duration."""
        sentences = self._sentences(text)
        spans: list[GlossSpan] = []
        offset = 0
        for k, (sentence, glosses) in enumerate(sentences):
            bounds = self._sign_bounds(sentence, glosses)
            if bounds is None:
                return GlossTimeline([g for _, g in sentences], [], 0, timed=False)
            starts, ends, total = bounds
            spans += [
                GlossSpan(g, k, offset + int(a), offset + int(b))
                for g, a, b in zip(glosses, starts, ends, strict=True)
            ]
            offset += total
        return GlossTimeline([g for _, g in sentences], spans, offset, timed=True)

    def _sign_bounds(
        self, sentence: str, glosses: Sequence[str]
    ) -> tuple[np.ndarray, np.ndarray, int] | None:
        """Start and end frame of every sign of one sentence and the sentence's length, as
        :meth:`generate_stream` will make them (same default frame limit); None for AR."""
        if isinstance(self.g2p, GlossDictionary):
            # plan(): [lead hold, entry, core 1, trans 2, core 2, ..., core n, exit, tail hold]
            target = sentence_target(self.g2p, self.length, sentence, glosses)
            segments = self.g2p.plan(glosses, target=target)
            edges = np.concatenate([[0], np.cumsum(segments)])
            cores = np.arange(2, 2 * len(glosses) + 1, 2)
            return edges[cores], edges[cores + 1], int(edges[-1])
        if self.g2p.config.mode != "nar":
            return None
        g2p = self.g2p
        with g2p.evaluating(), torch.no_grad():
            ids, mask = g2p.encode_ids([glosses])
            durations = g2p.predict_durations(g2p._encode(ids, mask), mask, g2p.config.max_frames)
        edges = np.concatenate([[0], np.cumsum(durations[0])])
        return edges[:-1], edges[1:], int(edges[-1])

    def generate(self, text: str) -> PoseSequence:
        """The whole text as one canonical whole-body sequence (25 fps)."""
        chunks = list(self.generate_stream(text, chunk_frames=1 << 30))
        return as_sequence(np.concatenate([c.data for c in chunks]))

    def generate_stream(self, text: str, chunk_frames: int = 16) -> Iterator[PoseSequence]:
        """Chunks of at most ``chunk_frames`` frames, yielded as soon as they are decoded.

        Concatenated, the chunks equal :meth:`generate`'s output frame for frame.
        """
        if chunk_frames < 1:
            raise ValueError("chunk_frames must be >= 1")
        previous: np.ndarray | None = None  # last frame of the previous sentence
        for sentence, glosses in self._sentences(text):
            index = 0  # frame index within this sentence: blending must not depend on chunking
            last = previous
            if isinstance(self.g2p, GlossDictionary):
                target = sentence_target(self.g2p, self.length, sentence, glosses)
                stream = self.g2p.generate_stream(glosses, chunk_frames, target=target)
            else:
                stream = self.g2p.generate_stream(glosses, chunk_frames)
            for frames in stream:
                frames = np.array(frames, np.float32)  # (n, 133, 3): xy + confidence
                if previous is not None and index < BLEND_FRAMES:
                    i = np.arange(index, index + len(frames))
                    near = i < BLEND_FRAMES
                    w = ((i[near] + 1) / (BLEND_FRAMES + 1))[:, None, None].astype(np.float32)
                    frames[near, :, :2] = (1 - w) * previous[None, :, :2] + w * frames[near, :, :2]
                index += len(frames)
                for j in range(0, len(frames), chunk_frames):
                    yield as_sequence(frames[j : j + chunk_frames])
                if len(frames):
                    last = frames[-1]
            previous = last
