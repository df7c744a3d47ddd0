"""WER of gloss recognisers on a corpus split, read two ways: from SynthSigner's exact poses,
and from an estimator's keypoints of SynthSigner's own video of each sentence (the perfect
renderer seen through the end-to-end evaluation's evaluator). One JSON line per recogniser.

    python scripts/reader_scores.py --language de --split dev models/recognizer/de \
        outputs/runs/recognizer_de_read/model

The readings are cached per sentence in ``--reads`` (default
``outputs/reads/ESTIMATOR_DIGEST/LANG/SPLIT``, so a retrained estimator never reuses another's
readings), and comparing more recognisers, or re-running, reads no frame twice.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from pgmm.data.synth.signer import SynthSigner
from pgmm.evaluation import network_digest
from pgmm.metrics.recognizer import PoseCTCRecognizer, evaluate_recognizer
from pgmm.models.pose_estimator import HRNetLite
from pgmm.training.recognizer import cache_reads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recognizers", nargs="+", type=Path, help="recogniser folders")
    parser.add_argument("--language", choices=("de", "zh"), default="de")
    parser.add_argument("--split", choices=("dev", "test"), default="dev")
    parser.add_argument("--estimator", type=Path, default=Path("models/evaluator"))
    parser.add_argument("--reads", type=Path, help="cache folder of the readings")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    signer = SynthSigner(languages=[args.language])
    sentences = signer.sentences(args.split, args.language)
    estimator = HRNetLite.from_pretrained(args.estimator).eval()
    folder = args.reads or (
        Path("outputs/reads") / network_digest(estimator) / args.language / args.split
    )
    reads = cache_reads(signer, sentences, estimator, folder)
    for path in args.recognizers:
        model = PoseCTCRecognizer.from_pretrained(path).eval()
        row = {
            "recognizer": str(path),
            "split": args.split,
            "sentences": len(sentences),
            "wer_poses": evaluate_recognizer(model, signer, args.split, args.language),
            "wer_read": evaluate_recognizer(
                model, signer, args.split, args.language, samples=reads
            ),
            "read_by": str(args.estimator),
        }
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}))


if __name__ == "__main__":
    main()
