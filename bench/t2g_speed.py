"""Seconds per sentence of T2G folders decoding one sentence at a time on one thread.

That is what a request waits before its first pose chunk (serving decodes each sentence as it
arrives), so each ensemble member added shows up here. Folders are timed one after the other in
one run, on the first 30 dev sentences, after two warm-up sentences:

    OMP_NUM_THREADS=1 .venv/bin/python bench/t2g_speed.py OLD_T2G_DIR models/text2pose/de/t2g
"""

from __future__ import annotations

import argparse
import time

import torch

from text2pose.t2g import TextToGloss
from text2pose.train_t2g import corpus_pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", help="T2G folders")
    parser.add_argument("--lang", default="de", choices=["de", "zh"])
    parser.add_argument("--sentences", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(1)
    texts = [t for t, _ in corpus_pairs(args.lang, "dev")[: args.sentences]]
    print("| T2G | members | s per sentence |\n|---|---|---|")
    for folder in args.folders:
        model = TextToGloss.from_pretrained(folder)
        model.translate_normalized(texts[:2])
        start = time.perf_counter()
        for text in texts:
            model.translate_normalized([text])
        seconds = (time.perf_counter() - start) / len(texts)
        print(f"| `{folder}` | {model.config.members} | {seconds:.3f} |")


if __name__ == "__main__":
    main()
