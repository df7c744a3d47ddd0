"""Choose the T2G's decoding settings on dev by gloss WER, the measure the text path is judged by.

Beam search with length penalty 1.0 ranks hypotheses by mean log-probability per token, which
lets a doubtful gloss in as long as it is not much less likely than the rest. Word error rate
counts a wrong gloss as one substitution *and* a missing one as one deletion, so under doubt a
shorter output costs less -- and, for a viewer, a sign left out misleads less than a wrong
one. This sweep measures that trade on dev (WER, BLEU-4 and length ratio per setting) and
optionally writes the chosen setting into a T2G folder's ``t2g_config.json`` (the weights are
untouched). With ``--g2p`` and ``--recognizer`` it also plays each setting's glosses through
the G2P and reads them back: the text path's back-translation WER (the goal) and its length
error against the target sentences (fewer glosses make shorter sentences: a constraint).

    python scripts/t2g_decoding.py --t2g models/text2pose/de/t2g --lang de \
        --g2p models/text2pose/de/g2p --recognizer models/recognizer/de
    python scripts/t2g_decoding.py --t2g models/text2pose/de/t2g --lang de --write 5,0.3,2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pgmm.data.synth.signer import SynthSigner  # noqa: E402
from pgmm.metrics.recognizer import PoseCTCRecognizer  # noqa: E402
from pgmm.metrics.wer import word_error_rate  # noqa: E402
from text2pose.data import build_g2p_data  # noqa: E402
from text2pose.metrics import back_translation, duration_error  # noqa: E402
from text2pose.pipeline import load_g2p  # noqa: E402
from text2pose.t2g import CONFIG_NAME, TextToGloss, gloss_scores  # noqa: E402
from text2pose.train_t2g import corpus_pairs  # noqa: E402

# (beams, length penalty, no-repeat n-gram size); the first is the training default.
GRID = [(5, 1.0, 0), (5, 1.0, 2), (5, 0.6, 2), (5, 0.3, 2), (5, 0.0, 2), (5, 0.3, 0), (8, 0.3, 2)]


def parse_setting(text: str) -> tuple[int, float, int]:
    try:
        beams, penalty, ngram = text.split(",")
        return int(beams), float(penalty), int(ngram)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected BEAMS,PENALTY,NGRAM, got {text!r}") from e


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--t2g", required=True, type=Path, help="T2G model folder")
    parser.add_argument("--lang", required=True, choices=["de", "zh"])
    parser.add_argument("--split", default="dev", choices=["dev", "test"])
    parser.add_argument(
        "--write",
        type=parse_setting,
        metavar="BEAMS,PENALTY,NGRAM",
        help="store this setting in the folder's t2g_config.json and stop",
    )
    parser.add_argument("--g2p", type=Path, help="G2P folder: adds the text-path columns")
    parser.add_argument("--recognizer", type=Path, help="gloss recognizer for those columns")
    args = parser.parse_args()
    torch.set_num_threads(1)
    config_path = args.t2g / CONFIG_NAME
    if args.write is not None:
        stored = json.loads(config_path.read_text())
        beams, penalty, ngram = args.write
        stored.update(num_beams=beams, length_penalty=penalty, no_repeat_ngram_size=ngram)
        config_path.write_text(json.dumps(stored, indent=2, ensure_ascii=False) + "\n")
        print(f"{config_path}: num_beams={beams} length_penalty={penalty} "
              f"no_repeat_ngram_size={ngram}")  # fmt: skip
        return 0
    model = TextToGloss.from_pretrained(args.t2g)
    pairs = corpus_pairs(args.lang, args.split)
    texts, gold = [t for t, _ in pairs], [list(g) for _, g in pairs]
    path = None
    if args.g2p is not None:
        if args.recognizer is None:
            parser.error("--g2p needs --recognizer")
        g2p, recognizer = load_g2p(args.g2p), PoseCTCRecognizer.from_pretrained(args.recognizer)
        data = build_g2p_data(SynthSigner(languages=[args.lang]), args.split, args.lang,
                              "outputs/cache/g2p", progress=False)  # fmt: skip
        path = (g2p, recognizer, [len(p) for p in data.poses[: len(pairs)]])
    print(f"**{args.lang} {args.split}** ({len(pairs)} sentences; `{args.t2g}`)\n")
    header = "beams | length penalty | no-repeat n-gram | gloss WER ↓ | BLEU-4 ↑ | length ratio | s"
    header += " | text path: back-transl. WER ↓ | length error (frames) ↓" if path else ""
    print(f"| {header} |")
    print("|---" * (header.count("|") + 1) + "|")
    for beams, penalty, ngram in GRID:
        model.config.length_penalty, model.config.no_repeat_ngram_size = penalty, ngram
        tic = time.perf_counter()
        hyps: list[list[str]] = []
        for i in range(0, len(texts), 32):
            hyps += model.translate_normalized(texts[i : i + 32], beams)
        seconds = time.perf_counter() - tic
        wer = word_error_rate(gold, hyps)
        ratio = sum(map(len, hyps)) / sum(map(len, gold))
        bleu = gloss_scores(hyps, gold)["bleu4"]
        cells = [beams, penalty, ngram, f"{wer:.3f}", f"{bleu:.2f}", f"{ratio:.3f}", round(seconds)]
        if path is not None:
            g2p, recognizer, target_lengths = path
            limit = g2p.config.max_glosses - 2  # as TextToPose hands glosses to the G2P
            poses = g2p.generate([h[:limit] for h in hyps])
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
