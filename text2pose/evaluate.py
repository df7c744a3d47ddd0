"""Side-by-side evaluation of text2pose on one split (``slp text2pose eval``).

One table row per system, all on the same sentences and the same SynthSigner targets:

* ``T2G`` — BLEU-1..4 / chrF of the predicted glosses (sacrebleu, gloss tokens);
* ``G2P (gold glosses)`` vs the **lexicon** and **mean-pose** baselines — DTW-MJE over all
  joints and hands only (canonical units: fraction of the canvas, shoulder width = 0.37),
  length error, decode speed;
* ``T2P direct`` (optional) — text straight into a pose network, no glosses;
* ``dictionary`` (optional) — the dictionary-signs model (:mod:`text2pose.dictionary`) from
  gold and from T2G glosses, beside the G2P and lexicon rows;
* ``T2G2P`` — the full text → pose path (predicted glosses into G2P), and the lexicon baseline
  fed the same predicted glosses (what a lexicon pipeline such as sign.mt would produce);
* with a gloss recognizer: **back-translation** WER / BLEU-4 of every pose system, and of the
  ground-truth SynthSigner poses (the recognizer's own ceiling).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pgmm.data.synth.signer import SynthSigner
from pgmm.pose.sequence import PoseSequence
from pgmm.report import md_table
from text2pose.baselines import LexiconBaseline, MeanPoseBaseline, canonical_sequence
from text2pose.data import build_g2p_data, text_tokens
from text2pose.dictionary import GlossDictionary
from text2pose.g2p import GlossToPose
from text2pose.metrics import PoseGenerator, back_translation, evaluate_g2p
from text2pose.pipeline import TextToPose
from text2pose.t2g import gloss_scores
from text2pose.train_t2g import corpus_pairs

POSE_COLUMNS = [
    "pose system", "DTW-MJE ↓", "hands DTW-MJE ↓", "length error (frames) ↓", "frames/s",
    "back-transl. WER ↓", "back-transl. BLEU-4 ↑",
]  # fmt: skip


class _Fixed:
    """A pose generator that ignores its input glosses and uses ``glosses`` instead, so the
    metric code scores T2G2P (predicted glosses) against the gold-gloss targets. With
    ``texts``, ``generator`` is the :class:`TextToPose` whose G2P signs them, timed from the
    texts too, as serving does (:meth:`TextToPose.sign`)."""

    def __init__(
        self, generator: Any, glosses: list[list[str]], texts: list[str] | None = None
    ) -> None:
        self.generator, self.glosses, self.texts, self.cursor = generator, glosses, texts, 0

    def generate(self, gloss_lists: Sequence[Sequence[str]]) -> list[PoseSequence]:
        part = slice(self.cursor, self.cursor + len(gloss_lists))
        self.cursor = part.stop
        if self.texts is not None:
            return self.generator.sign(self.texts[part], self.glosses[part])
        return self.generator.generate(self.glosses[part])


def evaluate_text2pose(
    model_dir: str | Path,
    split: str = "test",
    max_sentences: int | None = None,
    cache_dir: str | Path = "outputs/cache/g2p",
    recognizer_dir: str | Path | None = None,
    t2p_dir: str | Path | None = None,
    dictionary_dir: str | Path | None = None,
) -> dict[str, Any]:
    model = TextToPose.from_pretrained(model_dir)
    recognizer = None
    if recognizer_dir is not None:
        from pgmm.metrics.recognizer import PoseCTCRecognizer

        recognizer = PoseCTCRecognizer.from_pretrained(recognizer_dir)
        if recognizer.config.language != model.language:
            raise ValueError(
                f"the recognizer reads {recognizer.config.language!r} glosses but the model "
                f"signs {model.language!r}"
            )
    language = model.language
    signer = SynthSigner(languages=[language])
    pairs = corpus_pairs(language, split)[:max_sentences]
    texts = [t for t, _ in pairs]
    data = build_g2p_data(signer, split, language, cache_dir)
    data = data.subset(range(len(pairs)))
    train = build_g2p_data(signer, "train", language, cache_dir)

    tic = time.perf_counter()
    predicted: list[list[str]] = []
    for i in range(0, len(texts), 32):
        predicted += model.t2g.translate_normalized(texts[i : i + 32])
    posed = [model.fit(g) for g in predicted]  # what TextToPose hands to G2P
    t2g_seconds = time.perf_counter() - tic
    gold = [list(g) for g in data.glosses]
    targets = data.poses
    rows: dict[str, Any] = {
        "T2G": {**gloss_scores(predicted, gold), "sentences_per_second": len(pairs) / t2g_seconds}
    }
    lexicon = LexiconBaseline(signer, train)
    systems: dict[str, PoseGenerator] = {
        "G2P (gold glosses)": model.g2p,
        "lexicon (gold glosses)": lexicon,
        "mean pose": MeanPoseBaseline(train),
        "T2G2P (text -> pose)": _Fixed(model, posed, texts),
        "lexicon (T2G glosses)": _Fixed(lexicon, posed),
    }
    if dictionary_dir is not None:  # dictionary signs, fed the gold and the T2G glosses
        dictionary = GlossDictionary.from_pretrained(dictionary_dir)
        if dictionary.config.language != language:
            raise ValueError(
                f"the dictionary signs {dictionary.config.language!r} but the model "
                f"signs {language!r}"
            )
        systems["dictionary (gold glosses)"] = dictionary
        cut = [g[: dictionary.config.max_glosses - 2] for g in predicted]
        systems["dictionary (T2G glosses)"] = _Fixed(dictionary, cut)
    if t2p_dir is not None:  # direct text -> pose, fed the same test texts
        tokens = [list(text_tokens(t, language)) for t in texts]
        systems["T2P direct (text -> pose)"] = _Fixed(GlossToPose.from_pretrained(t2p_dir), tokens)
    for name, system in systems.items():
        rows[name] = evaluate_g2p(system, gold, targets, recognizer=recognizer)
    if recognizer is not None:
        truth = [canonical_sequence(t, data.labelled) for t in targets]
        rows["ground-truth poses"] = back_translation(recognizer, truth, gold)
    return {"language": language, "split": split, "sentences": len(pairs), "rows": rows}


def markdown(result: dict[str, Any]) -> str:
    rows = result["rows"]
    t2g = rows["T2G"]
    scores = ["ours", *(t2g[k] for k in ("bleu1", "bleu2", "bleu3", "bleu4", "chrf"))]
    poses = []
    for name, row in rows.items():
        if name == "T2G":
            continue
        bt = [f"{row['bt_wer']:.3f}", f"{row['bt_bleu4']:.2f}"] if "bt_wer" in row else ["–"] * 2
        g2p = ["–"] * 4  # ground truth: back-translation only
        if "dtw_mje" in row:
            g2p = [
                f"{row['dtw_mje']:.4f}", f"{row['dtw_mje_hands']:.4f}",
                f"{row['duration_error_frames']:.1f}", f"{row['frames_per_second']:.0f}",
            ]  # fmt: skip
        poses.append([name, *g2p, *bt])
    title = f"**{result['language']} {result['split']}** ({result['sentences']} sentences)"
    t2g_table = md_table(["T2G", "BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "chrF"], [scores])
    return "\n\n".join([title, t2g_table, md_table(POSE_COLUMNS, poses)])


def write(result: dict[str, Any], out: str | Path) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "text2pose_eval.json").write_text(json.dumps(result, indent=2, ensure_ascii=False))
    (out / "text2pose_eval.md").write_text(markdown(result) + "\n", encoding="utf-8")
