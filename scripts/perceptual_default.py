"""Which perceptual network should the default (no VGG19 weights) be? Train and compare.

Without ImageNet weights the perceptual loss runs on a frozen, fixed-seed random VGG19
(:mod:`pgmm.losses.perceptual`). Its width is a free choice: full width is the real VGG19's
shape, 1/4 width costs ~1/16 of the FLOPs. This script trains the same model (the TPSMM
baseline config, so only L_r differs) with each choice for the same steps, pairs and seed,
then scores reconstruction on held-out SynthSigner videos; keypoint columns are read by
``--evaluator`` (default ``models/evaluator``), never by the ``P_e`` that ``L_pd`` trained the
models against. Resumable like ``scripts/ablation.py``; the numbers in ``docs/results.md`` came
from::

    python scripts/perceptual_default.py --out outputs/perceptual --steps 300 \\
        --pose-estimator models/pose_estimator
"""

from __future__ import annotations

import json
from pathlib import Path

# scripts/ is on sys.path when run as a script
from ablation import budget_parser, load_evaluator, train_variant

from pgmm.data.synth.dataset import RenderedSynthSigner
from pgmm.data.synth.signer import SynthSigner
from pgmm.evaluation import evaluate, markdown_table
from pgmm.models.pgmm import PGMM
from pgmm.models.pose_estimator import HRNetLite

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = budget_parser(__doc__, "outputs/perceptual")
    parser.add_argument("--widths", type=float, nargs="+", default=[0.25, 1.0])
    args = parser.parse_args()
    signer = SynthSigner()
    estimator = HRNetLite.from_pretrained(args.pose_estimator).freeze()
    evaluator = load_evaluator(args, estimator)  # checked before hours of training
    seconds = {
        w: train_variant("tpsmm", args, signer, estimator, f"width-{w:g}", perceptual_width=w)
        for w in args.widths
    }
    data = RenderedSynthSigner("dev", 128, max_videos=args.eval_videos, signer=signer)
    rows = []
    for w in args.widths:
        model = PGMM.from_pretrained(args.out / f"width-{w:g}" / "model").eval()
        row = evaluate(
            model,
            data,
            "reconstruction",
            evaluator=evaluator,
            max_frames=args.eval_frames,
            name=f"random VGG19 x{w:g} ({seconds[w] / 60:.0f} min)",
        )
        rows.append(row)
    (args.out / "table.json").write_text(json.dumps(rows, indent=2, default=str))
    print(markdown_table(rows))


if __name__ == "__main__":
    main()
