"""Choose the text length model's settings on dev by length error, the constraint it serves.

The sentence length model (:mod:`text2pose.length`) has two settings: the ridge penalty of its
token terms and ``w``, the gloss estimate's share when the two lengths are joined. Both are
chosen here on dev, by the mean absolute length error of the signed sentences against their
corpus lengths -- with the glosses the shipped T2G produces (the text path, what serving signs)
and, for reference, with the gold glosses. The length error is read from the dictionary's plan
(:meth:`GlossDictionary.plan`), which is what the generated poses' length is.

    python scripts/length_model.py --lang de --t2g models/text2pose/de/t2g \\
        --g2p models/text2pose/de/g2p
    python scripts/length_model.py --lang de --ridge 30 --weight 0.2 [--keep-signs] --write DIR
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pgmm.data.corpus import load_corpus  # noqa: E402
from text2pose.dictionary import GlossDictionary  # noqa: E402
from text2pose.length import SentenceLength, SentenceLengthConfig  # noqa: E402
from text2pose.normalize import normalize_sentence  # noqa: E402
from text2pose.pipeline import sentence_target  # noqa: E402
from text2pose.t2g import TextToGloss  # noqa: E402

RIDGES = [1.0, 3.0, 10.0, 30.0, 100.0]
WEIGHTS = [round(0.1 * i, 1) for i in range(11)]


def corpus(language: str, split: str) -> tuple[list[str], list[list[str]], np.ndarray]:
    """Normalised texts, gold glosses and corpus lengths (frames) of one split."""
    rows = load_corpus(language, split)
    texts = [normalize_sentence(r.text, language) for r in rows]
    return texts, [list(r.glosses) for r in rows], np.array([r.num_frames for r in rows], float)


def length_error(
    g2p: GlossDictionary,
    model: SentenceLength,
    texts: list[str],
    glosses: list[list[str]],
    target: np.ndarray,
) -> float:
    """Mean absolute error (frames) of the planned sentence lengths against ``target``."""
    limit = g2p.config.max_glosses - 2  # as TextToPose hands glosses to the G2P
    planned = []
    for text, g in zip(texts, glosses, strict=True):
        g = g[:limit]
        planned.append(g2p.plan(g, target=sentence_target(g2p, model, text, g)).sum())
    return float(np.abs(np.array(planned) - target).mean())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lang", required=True, choices=["de", "zh"])
    parser.add_argument("--t2g", type=Path, help="T2G folder whose dev glosses the sweep reads")
    parser.add_argument("--g2p", type=Path, help="the dictionary G2P folder the lengths time")
    parser.add_argument("--ridge", type=float, nargs="+", default=RIDGES)
    parser.add_argument("--weight", type=float, nargs="+", default=WEIGHTS, help="values of w")
    parser.add_argument(
        "--keep-signs", action="store_true",
        help="with --write: reach the length by pausing between signs, not slowing them",
    )  # fmt: skip
    parser.add_argument(
        "--write", type=Path, metavar="DIR",
        help="fit one --ridge/--weight on the training split, save it to DIR and stop",
    )  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(1)
    texts, _, frames = corpus(args.lang, "train")
    if args.write is not None:
        if len(args.ridge) != 1 or len(args.weight) != 1:
            parser.error("--write needs exactly one --ridge and one --weight")
        config = SentenceLengthConfig(args.lang, args.ridge[0], args.weight[0], args.keep_signs)
        SentenceLength.fit(config, texts, list(frames)).save_pretrained(args.write)
        print(f"{args.write}: {config}")
        return 0
    if args.t2g is None or args.g2p is None:
        parser.error("a sweep needs --t2g and --g2p (or --write)")
    g2p = GlossDictionary.from_pretrained(args.g2p)
    t2g = TextToGloss.from_pretrained(args.t2g)
    dev_texts, gold, target = corpus(args.lang, "dev")
    decoded = [g for i in range(0, len(dev_texts), 32)
               for g in t2g.translate_normalized(dev_texts[i : i + 32])]  # fmt: skip
    print(f"**{args.lang} dev** ({len(dev_texts)} sentences; T2G `{args.t2g}`, G2P `{args.g2p}`)")
    print("\n| ridge | w | length error, T2G glosses ↓ | length error, gold glosses ↓ |")
    print("|---|---|---|---|")
    for ridge in args.ridge:
        fitted = SentenceLength.fit(SentenceLengthConfig(args.lang, ridge), texts, list(frames))
        for w in args.weight:
            fitted.config = SentenceLengthConfig(args.lang, ridge, w)
            errors = [length_error(g2p, fitted, dev_texts, g, target) for g in (decoded, gold)]
            print(f"| {ridge:g} | {w:g} | {errors[0]:.2f} | {errors[1]:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (FileNotFoundError, ValueError) as e:  # a wrong folder: one line, no trace
        sys.exit(f"length_model: error: {e}")
