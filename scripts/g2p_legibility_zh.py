"""Why does the lexicon read better than the dictionary G2P in Chinese (issue 15)?

Two measurements, one thread:

1. How often each test gloss occurs in training (de and zh): if Chinese glosses were rare, the
   dictionary's clips (medoids of few occurrences, pooled timing) would be the suspect.
2. Back-translation WER by ``models/recognizer/zh`` on the first ``--sentences`` dev sentences
   for the ground-truth canonical poses, the shipped dictionary and the lexicon baseline, each
   also played ``--stretch`` times slower (nearest-frame resampling): the recognizer pools 4
   frames into one step, so a reader that misses short signs would gain from slower signing.

Usage: ``python scripts/g2p_legibility_zh.py [--sentences 300] [--stretch 1.3]``
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Sequence

import numpy as np
import torch

from pgmm.data.synth.signer import SynthSigner
from pgmm.metrics.recognizer import PoseCTCRecognizer
from pgmm.pose.sequence import PoseSequence
from text2pose.baselines import LexiconBaseline, canonical_sequence
from text2pose.data import build_g2p_data
from text2pose.metrics import back_translation
from text2pose.pipeline import load_g2p

CACHE = "outputs/cache/g2p"


def gloss_counts(language: str) -> str:
    """Share of test gloss tokens whose gloss has 0 / 1-7 / 8-29 / >= 30 training examples."""
    signer = SynthSigner(languages=[language])
    train = Counter(g for s in signer.sentences("train", language) for g in s.glosses)
    counts = np.array([train[g] for s in signer.sentences("test", language) for g in s.glosses])
    shares = [np.mean(counts == 0), np.mean((counts > 0) & (counts < 8)),
              np.mean((counts >= 8) & (counts < 30)), np.mean(counts >= 30)]  # fmt: skip
    return (
        f"{language}: {len(train)} training glosses; test tokens with 0 / 1-7 / 8-29 / >=30 "
        f"training examples: {' / '.join(f'{x:.3f}' for x in shares)}; "
        f"median {int(np.median(counts))}"
    )


def slower(pose: PoseSequence, factor: float) -> PoseSequence:
    index = np.round(np.linspace(0, len(pose) - 1, max(4, round(len(pose) * factor))))
    return PoseSequence(pose.data[index.astype(np.int64)], pose.fps, pose.layout,
                        pose.width, pose.height)  # fmt: skip


def generate(model: object, glosses: Sequence[list[str]]) -> list[PoseSequence]:
    out: list[PoseSequence] = []
    for start in range(0, len(glosses), 16):
        out += model.generate(list(glosses[start : start + 16]))  # type: ignore[attr-defined]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sentences", type=int, default=300)
    parser.add_argument("--stretch", type=float, default=1.3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for language in ("de", "zh"):
        print(gloss_counts(language), flush=True)
    signer = SynthSigner(languages=["zh"])
    dev = build_g2p_data(signer, "dev", "zh", CACHE).subset(range(args.sentences))
    gold = [list(g) for g in dev.glosses]
    recognizer = PoseCTCRecognizer.from_pretrained("models/recognizer/zh")
    systems = {
        "ground truth": [canonical_sequence(t, dev.labelled) for t in dev.poses],
        "dictionary": generate(load_g2p("models/text2pose/zh/g2p"), gold),
        "lexicon": generate(
            LexiconBaseline(signer, build_g2p_data(signer, "train", "zh", CACHE)), gold
        ),  # fmt: skip
    }
    for name, poses in systems.items():
        per_gloss = np.mean([len(p) / len(g) for p, g in zip(poses, gold, strict=True)])
        wer = back_translation(recognizer, poses, gold)["bt_wer"]
        stretched = [slower(p, args.stretch) for p in poses]
        wer_slow = back_translation(recognizer, stretched, gold)["bt_wer"]
        print(f"zh dev[:{args.sentences}] {name}: {per_gloss:.1f} frames/gloss, WER {wer:.3f}, "
              f"x{args.stretch} slower {wer_slow:.3f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
