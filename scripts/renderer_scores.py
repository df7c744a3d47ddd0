"""Scores of renderer folders as their model cards give them: pose-driven reconstruction and
cross-person on the first 4 SynthSigner videos of each split, 48 frames each, hand columns read
by the independent ``models/evaluator`` (or ``--evaluator``; P_e only draws driving heatmaps).
One JSON line per (split, model, task).

    python scripts/renderer_scores.py --splits dev test models/pgmm/full-small \
        outputs/runs/renderer_long/model

``--ceiling`` adds a row per split and task for SynthSigner's own drawing of the driving poses
(in the held-out source's look for cross-person), read by the same evaluator: what a perfect
renderer would score on the hand columns (``pgmm.evaluation.keypoint_ceiling``).
"""

from __future__ import annotations

import argparse
import json

import torch

from pgmm.data.synth.dataset import RenderedSynthSigner
from pgmm.evaluation import TASKS, evaluate, keypoint_ceiling
from pgmm.models.pgmm import PGMM
from pgmm.models.pose_estimator import HRNetLite
from pgmm.training.distributed import build_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", help="PGMM folders")
    parser.add_argument("--ceiling", action="store_true", help="also score a perfect renderer")
    parser.add_argument("--splits", nargs="+", default=["dev"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--evaluator", default="models/evaluator", help="pose network that reads the frames"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    estimator = HRNetLite.from_pretrained("models/pose_estimator")
    evaluator = HRNetLite.from_pretrained(args.evaluator)
    for split in args.splits:
        data = build_dataset("synth", split, 128, 4)
        if args.ceiling:
            assert isinstance(data, RenderedSynthSigner)
            for task in TASKS:
                scores = keypoint_ceiling(data, task, evaluator, max_frames=48)
                ceiling = {k: round(v, 4) for k, v in scores.items() if isinstance(v, float)}
                print(
                    json.dumps(
                        {"split": split, "model": "synth (ceiling)", "task": task, **ceiling}
                    )
                )
        for folder in args.models:
            model = PGMM.from_pretrained(folder).eval()
            for task in TASKS:
                row = evaluate(model, data, task, drive="pose", estimator=estimator,
                               evaluator=evaluator, max_frames=48, progress=False)  # fmt: skip
                scores = {k: round(v, 4) for k, v in row["metrics"].items() if isinstance(v, float)}
                print(json.dumps({"split": split, "model": folder, "task": task, **scores}))


if __name__ == "__main__":
    main()
