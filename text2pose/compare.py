"""``slp text2pose compare``: gloss -> pose models read back by several recognizers (issue 15).

Model selection between G2P families needs one table: every model fed the same glosses (gold,
and optionally the T2G's predictions for the text -> pose path), beside the lexicon baseline
and the ground-truth poses, each read back by *every* given recognizer. A model trained
against a recognizer (the back-translation loss, :mod:`text2pose.backtranslation`) is marked
with † in that recognizer's columns: such a score can reward patterns only that network
reads, so selection and reporting use the other recognizer.

Each model generates once per gloss source; the recognizers then read the same poses, so the
columns differ only by the reader. DTW-MJE (optional, the slowest part) compares with the
SynthSigner targets as ``slp text2pose eval`` does.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pgmm.metrics.recognizer import PoseCTCRecognizer
from pgmm.pose.sequence import PoseSequence
from pgmm.report import md_table
from text2pose.backtranslation import BackTranslationRecord
from text2pose.baselines import LexiconBaseline, canonical_sequence
from text2pose.data import G2PData, build_g2p_data
from text2pose.dictionary import GlossDictionary
from text2pose.length import SentenceLength
from text2pose.metrics import back_translation, mean_dtw_mje
from text2pose.pipeline import load_g2p, sentence_target
from text2pose.t2g import TextToGloss
from text2pose.train_t2g import corpus_pairs

LEXICON = "lexicon"
GROUND_TRUTH = "ground-truth poses"


@dataclass(frozen=True)
class ReadBack:
    """Back-translation of one system's poses by one recognizer."""

    wer: float
    bleu4: float


@dataclass
class ComparisonRow:
    system: str
    glosses: str  # "gold" | "T2G" | "" (ground-truth poses)
    trained_against: str  # recognizer folder of its back-translation loss, "" if none
    read_back: dict[str, ReadBack]  # recognizer column name -> scores
    dtw_mje: float | None = None
    dtw_mje_hands: float | None = None


@dataclass
class Comparison:
    language: str
    split: str
    sentences: int
    recognizers: dict[str, str]  # column name -> recognizer folder
    rows: list[ComparisonRow] = field(default_factory=list)
    length: str = ""  # sentence length model folder timing the dictionaries' T2G rows

    def row(self, system: str, glosses: str) -> ComparisonRow:
        return next(r for r in self.rows if (r.system, r.glosses) == (system, glosses))

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, ensure_ascii=False) + "\n"

    def markdown(self) -> str:
        """One row per (system, gloss source); WER and BLEU-4 per recognizer; † marks a score
        by the recognizer the system was trained against."""
        names = list(self.recognizers)
        header = ["system", "glosses", "trained against", "DTW-MJE ↓", "hands ↓"]
        for name in names:
            header += [f"WER ({name}) ↓", f"BLEU-4 ({name}) ↑"]
        table = []
        for row in self.rows:
            against = f"`{row.trained_against}`" if row.trained_against else "–"
            cells = [row.system, row.glosses or "–", against]
            cells += [_number(row.dtw_mje, 4), _number(row.dtw_mje_hands, 4)]
            for name in names:
                mark = " †" if _same_folder(row.trained_against, self.recognizers[name]) else ""
                score = row.read_back[name]
                cells += [f"{score.wer:.3f}{mark}", f"{score.bleu4:.2f}{mark}"]
            table.append(cells)
        text = f"**{self.language} {self.split}** ({self.sentences} sentences; recognizers: "
        text += ", ".join(f"{n} = `{p}`" for n, p in self.recognizers.items()) + ")"
        if self.length:
            text += f"; dictionaries' T2G rows timed from the text by `{self.length}`"
        text += "\n\n" + md_table(header, table)
        if any(r.trained_against for r in self.rows):
            text += "\n\n† read by the recognizer the system was trained against"
        return text


def _number(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _same_folder(a: str, b: str) -> bool:
    return bool(a) and Path(a).resolve() == Path(b).resolve()


def _generate(
    system: Any,
    gloss_lists: Sequence[Sequence[str]],
    texts: Sequence[str],
    length: SentenceLength | None,
) -> list[PoseSequence]:
    """Poses of every gloss sequence, 16 at a time (what every G2P and baseline accepts),
    each cut to the system's gloss limit as :meth:`TextToPose.fit` does in serving; a
    dictionary is timed by ``length`` from the sentences' ``texts`` when it is given, as
    :meth:`TextToPose.sign` times the text path."""
    config = getattr(system, "config", None)
    limit = config.max_glosses - 2 if config is not None else None
    cut = [list(g)[:limit] for g in gloss_lists]
    if length is not None and isinstance(system, GlossDictionary):
        targets = [sentence_target(system, length, t, g) for t, g in zip(texts, cut, strict=True)]
        return system.generate(cut, targets=targets)
    out: list[PoseSequence] = []
    for start in range(0, len(cut), 16):
        out += system.generate(cut[start : start + 16])
    return out


def _score(
    system: str,
    glosses: str,
    trained_against: str,
    poses: Sequence[PoseSequence],
    gold: Sequence[Sequence[str]],
    recognizers: dict[str, PoseCTCRecognizer],
    data: G2PData | None,
) -> ComparisonRow:
    read = {}
    for name, recognizer in recognizers.items():
        scores = back_translation(recognizer, poses, gold)
        read[name] = ReadBack(scores["bt_wer"], scores["bt_bleu4"])
    dtw = mean_dtw_mje(poses, data.poses) if data is not None else {}
    return ComparisonRow(system, glosses, trained_against, read, **dtw)


def compare_g2p(
    language: str,
    split: str,
    systems: dict[str, str | Path],
    recognizers: dict[str, str | Path],
    t2g_dir: str | Path | None = None,
    max_sentences: int | None = None,
    dtw: bool = False,
    cache_dir: str | Path = "outputs/cache/g2p",
    length_dir: str | Path | None = None,
) -> Comparison:
    """Score ``systems`` (name -> G2P folder: network or dictionary) and the lexicon baseline
    on ``split`` from gold glosses and, with ``t2g_dir``, from that T2G's glosses; every pose
    set is read by every recognizer (name -> folder), the ground-truth poses too.
    ``length_dir``: a sentence length model that times the dictionaries' T2G rows from the
    text, as the shipped text path does."""
    from pgmm.data.synth.signer import SynthSigner

    if not systems or not recognizers:
        raise ValueError("compare needs at least one G2P model and one recognizer")
    readers = {n: PoseCTCRecognizer.from_pretrained(p) for n, p in recognizers.items()}
    for name, reader in readers.items():
        if reader.config.language != language:
            raise ValueError(
                f"recognizer {name} reads {reader.config.language!r}, not {language!r}"
            )
    models = {n: load_g2p(p) for n, p in systems.items()}
    for name, model in models.items():
        if model.config.language != language:
            raise ValueError(f"G2P {name} signs {model.config.language!r}, not {language!r}")
    trained = {n: BackTranslationRecord.load(p) for n, p in systems.items()}
    signer = SynthSigner(languages=[language])
    data = build_g2p_data(signer, split, language, cache_dir)
    if max_sentences is not None:
        data = data.subset(range(min(len(data), max_sentences)))
    gold = [list(g) for g in data.glosses]
    sources = {"gold": gold}
    texts: list[str] = []
    if length_dir is not None and t2g_dir is None:
        raise ValueError("a sentence length model times the T2G rows: give a T2G as well")
    length = None if length_dir is None else SentenceLength.from_pretrained(length_dir)
    if t2g_dir is not None:
        t2g = TextToGloss.from_pretrained(t2g_dir)
        pairs = corpus_pairs(language, split)[: len(data)]
        if [list(g) for _, g in pairs] != gold:
            raise ValueError(f"the {language} {split} texts and pose targets are not aligned")
        texts = [t for t, _ in pairs]
        sources["T2G"] = [g for i in range(0, len(texts), 32)
                          for g in t2g.translate_normalized(texts[i : i + 32])]  # fmt: skip
    lexicon = LexiconBaseline(signer, build_g2p_data(signer, "train", language, cache_dir))
    generators: dict[str, Any] = {**models, LEXICON: lexicon}
    result = Comparison(language, split, len(data), {n: str(p) for n, p in recognizers.items()},
                        length=str(length_dir or ""))  # fmt: skip
    for glosses, gloss_lists in sources.items():
        for name, generator in generators.items():
            record = trained.get(name)
            timing = length if glosses == "T2G" else None
            poses = _generate(generator, gloss_lists, texts, timing)
            result.rows.append(_score(name, glosses, record.recognizer if record else "", poses,
                                      gold, readers, data if dtw else None))  # fmt: skip
    truth = [canonical_sequence(t, data.labelled) for t in data.poses]
    result.rows.append(_score(GROUND_TRUTH, "", "", truth, gold, readers, None))
    return result
