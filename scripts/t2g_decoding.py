"""Choose the T2G's decoding settings on dev by gloss WER, the measure the text path is judged by.

Beam search with length penalty 1.0 ranks hypotheses by mean log-probability per token, which
lets a doubtful gloss in as long as it is not much less likely than the rest. Word error rate
counts a wrong gloss as one substitution *and* a missing one as one deletion, so under doubt a
shorter output costs less -- and, for a viewer, a sign left out misleads less than a wrong
one. This sweep measures that trade on dev (WER, BLEU-4 and length ratio per setting) --
beam search, or minimum-Bayes-risk choice among the beam's candidates, of one T2G or of an
ensemble of several (same recipe, other seeds) -- and can save the chosen setting with the
weights as one T2G folder (``--write``). With ``--g2p`` and ``--recognizer`` it also plays
each setting's glosses through the G2P and reads them back: the text path's back-translation
WER (the goal) and its length error against the target sentences (fewer glosses make shorter
sentences: a constraint).

    python scripts/t2g_decoding.py --t2g models/text2pose/de/t2g --lang de \
        --g2p models/text2pose/de/g2p --recognizer models/recognizer/de
    python scripts/t2g_decoding.py --t2g models/text2pose/de/t2g --lang de \
        --g2p models/text2pose/de/g2p --recognizer models/recognizer/de --length DIR
    python scripts/t2g_decoding.py --t2g models/text2pose/de/t2g outputs/t2g_ens/de_s1/model \
        --lang de --setting 5,1.0,2,mbr,1.0 --write outputs/t2g_ens/de_2 --int8
    python scripts/t2g_decoding.py --t2g models/text2pose/de/t2g outputs/t2g_ens/de_s4/model \
        --members 0 1 2 4 --lang de --g2p models/text2pose/de/g2p --recognizer models/recognizer/de
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, astuple, dataclass, replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pgmm.data.synth.signer import SynthSigner  # noqa: E402
from pgmm.metrics.recognizer import PoseCTCRecognizer  # noqa: E402
from pgmm.metrics.wer import word_error_rate  # noqa: E402
from text2pose.data import build_g2p_data  # noqa: E402
from text2pose.length import SentenceLength  # noqa: E402
from text2pose.metrics import back_translation, duration_error  # noqa: E402
from text2pose.pipeline import TextToPose, load_g2p  # noqa: E402
from text2pose.t2g import DECODINGS, TextToGloss, gloss_scores  # noqa: E402
from text2pose.train_t2g import corpus_pairs  # noqa: E402


@dataclass(frozen=True)
class Setting:
    """One way to decode: the T2GConfig fields a sweep varies."""

    num_beams: int
    length_penalty: float
    no_repeat_ngram_size: int
    decoding: str = "beam"
    mbr_temperature: float = 1.0

    def cells(self) -> list[object]:
        return [*astuple(self)[:3], self.decoding if self.decoding == "beam"
                else f"mbr T={self.mbr_temperature:g}"]  # fmt: skip


# The first is the training default.
GRID = [Setting(5, 1.0, 0), Setting(5, 1.0, 2), Setting(5, 0.6, 2), Setting(5, 0.3, 2),
        Setting(5, 0.0, 2), Setting(5, 0.3, 0), Setting(8, 0.3, 2)]  # fmt: skip


def parse_setting(text: str) -> Setting:
    parts = text.split(",")
    try:
        if not 3 <= len(parts) <= 5 or (len(parts) > 3 and parts[3] not in DECODINGS):
            raise ValueError(text)
        decoding = parts[3] if len(parts) > 3 else "beam"
        temperature = float(parts[4]) if len(parts) > 4 else 1.0
        return Setting(int(parts[0]), float(parts[1]), int(parts[2]), decoding, temperature)
    except ValueError as e:
        raise argparse.ArgumentTypeError(
            f"expected BEAMS,PENALTY,NGRAM[,beam|mbr[,TEMPERATURE]], got {text!r}"
        ) from e


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--t2g", required=True, type=Path, nargs="+",
        help="T2G model folder; several: an ensemble of them (same recipe, other seeds)",
    )  # fmt: skip
    parser.add_argument("--lang", required=True, choices=["de", "zh"])
    parser.add_argument("--split", default="dev", choices=["dev", "test"])
    parser.add_argument(
        "--setting", type=parse_setting, nargs="+", metavar="BEAMS,PENALTY,NGRAM[,DEC[,T]]",
        help="settings to measure instead of the default grid (DEC: beam or mbr)",
    )  # fmt: skip
    parser.add_argument(
        "--write", type=Path, metavar="DIR",
        help="save the --t2g folder(s) with the single --setting as one T2G folder DIR and stop",
    )  # fmt: skip
    parser.add_argument(
        "--members", type=int, nargs="+", metavar="I",
        help="keep only these members of the pooled --t2g folders (0-based, in folder order)",
    )  # fmt: skip
    parser.add_argument(
        "--int8", action="store_true", help="with --write: int8 weights (a quarter of float32)"
    )
    parser.add_argument(
        "--batch", type=int, default=32, help="sentences per decode call (1: as serving decodes)"
    )
    parser.add_argument("--g2p", type=Path, help="G2P folder: adds the text-path columns")
    parser.add_argument("--recognizer", type=Path, help="gloss recognizer for those columns")
    parser.add_argument(
        "--length", type=Path,
        help="sentence length model folder: adds the text-path columns timed by it, as "
        "TextToPose times a sentence with it",
    )  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(1)
    grid = args.setting or GRID
    models = [TextToGloss.from_pretrained(folder) for folder in args.t2g]
    if args.write is not None:
        if len(grid) != 1:
            parser.error("--write needs exactly one --setting")
        model = TextToGloss.ensemble(models, args.members, **asdict(grid[0]))
        model.save_pretrained(args.write, int8=args.int8)
        print(f"{args.write}: {model.config.members} member(s), {grid[0]}, int8={args.int8}")
        return 0
    model = TextToGloss.ensemble(models, args.members)
    pairs = corpus_pairs(args.lang, args.split)
    texts, gold = [t for t, _ in pairs], [list(g) for _, g in pairs]
    path = None
    if args.length is not None and args.g2p is None:
        parser.error("--length needs --g2p and --recognizer")
    if args.g2p is not None:
        if args.recognizer is None:
            parser.error("--g2p needs --recognizer")
        g2p, recognizer = load_g2p(args.g2p), PoseCTCRecognizer.from_pretrained(args.recognizer)
        data = build_g2p_data(SynthSigner(languages=[args.lang]), args.split, args.lang,
                              "outputs/cache/g2p", progress=False)  # fmt: skip
        length = None if args.length is None else SentenceLength.from_pretrained(args.length)
        path = (g2p, recognizer, length, [len(p) for p in data.poses[: len(pairs)]])
    folders = " + ".join(f"`{f}`" for f in args.t2g)
    folders += "" if args.members is None else f", members {args.members}"
    print(f"**{args.lang} {args.split}** ({len(pairs)} sentences; {folders})\n")
    header = "beams | length penalty | no-repeat n-gram | decoding | gloss WER ↓ | BLEU-4 ↑"
    header += " | length ratio | s"
    header += " | text path: back-transl. WER ↓ | length error (frames) ↓" if path else ""
    header += " | timed by text: WER ↓ | length error ↓" if path and args.length else ""
    print(f"| {header} |")
    print("|---" * (header.count("|") + 1) + "|")
    for setting in grid:
        model.config = replace(model.config, **asdict(setting))
        tic = time.perf_counter()
        hyps: list[list[str]] = []
        for i in range(0, len(texts), args.batch):
            hyps += model.translate_normalized(texts[i : i + args.batch])
        seconds = time.perf_counter() - tic
        wer = word_error_rate(gold, hyps)
        ratio = sum(map(len, hyps)) / sum(map(len, gold))
        bleu = gloss_scores(hyps, gold)["bleu4"]
        cells = [*setting.cells(), f"{wer:.3f}", f"{bleu:.2f}", f"{ratio:.3f}", round(seconds)]
        if path is not None:
            g2p, recognizer, length, target_lengths = path
            limit = g2p.config.max_glosses - 2  # as TextToPose hands glosses to the G2P
            for timing in [None] if length is None else [None, length]:
                poses = TextToPose(model, g2p, timing).sign(texts, [h[:limit] for h in hyps])
                wer_path = back_translation(recognizer, poses, gold)["bt_wer"]
                error = duration_error([len(p) for p in poses], target_lengths)["frames"]
                cells += [f"{wer_path:.3f}", f"{error:.1f}"]
        print("| " + " | ".join(map(str, cells)) + " |", flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (FileNotFoundError, ValueError, KeyError) as e:  # a wrong folder: one line, no trace
        sys.exit(f"t2g_decoding: error: {e}")
