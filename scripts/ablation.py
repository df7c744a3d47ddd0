"""The paper's ablation (its Table 4) on SynthSigner: train every variant with the same
budget, evaluate reconstruction and cross-person (the paper shows the latter only as Fig. 6),
write ``docs/results.md``.

Every variant sees the same videos in the same order (seeded sampler) for the same number of
steps; runs are resumable (re-running the command continues unfinished runs and skips
finished ones). Example (the numbers in docs/results.md came from this)::

    python scripts/ablation.py --out outputs/ablation --steps 300 --videos 40 \\
        --pose-estimator outputs/runs/pose_estimator/model --evaluator models/evaluator

Two pose networks: ``--pose-estimator`` is the ``P_e`` that ``L_pd`` trains the renderers
against; ``--evaluator`` (an independently trained estimator) reads the generated frames for
the hand/body keypoint columns. The hand columns are also read by ``P_e`` and shown side by
side in a small table, labelled as such: the gap between the two is how much a renderer learnt
to please its own examiner rather than to draw the hands where the pose says.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import sys
from bisect import bisect_left, insort
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from pgmm.data.synth.dataset import RenderedSynthSigner
from pgmm.data.synth.signer import SynthSigner
from pgmm.evaluation import evaluate, markdown_table, network_digest, write_doc_block
from pgmm.models.config import VARIANTS, PGMMConfig, default_loss_weights
from pgmm.models.pgmm import PGMM
from pgmm.models.pose_estimator import HRNetLite
from pgmm.training.common import TrainingStopped
from pgmm.training.config import TrainConfig
from pgmm.training.trainer import PGMMTrainer

ROOT = Path(__file__).resolve().parents[1]
COLORS = {
    "tpsmm": (200, 60, 60),
    "pose_sum": (230, 150, 30),
    "pfm": (60, 150, 60),
    "pfm_pd": (40, 120, 200),
    "full": (120, 60, 180),
    "pfm_align": (20, 170, 170),
    "full_w1": (120, 120, 120),
}
# Runs beyond the five variants, each a variant with other loss weights (name: variant,
# weight overrides): the paper's "+PFM, L_align" row of Table 4 (L_align without L_pd), and
# the full model with Eq. 7's literal unit weights for L_pd and L_align instead of our 10.
EXTRA_RUNS: dict[str, tuple[str, dict[str, float]]] = {
    "pfm_align": ("full", {"pose_distance": 0.0}),
    "full_w1": ("full", {"pose_distance": 1.0, "align": 1.0}),
}


def train_variant(
    variant: str,
    args,
    signer: SynthSigner,
    estimator: HRNetLite,
    run_name: str | None = None,
    **model_overrides,
) -> float:
    """Train ``configs/pgmm/<variant>-small.yaml`` (with ``model_overrides``) into
    ``args.out / run_name`` at the ablation's budget; returns the wall time (a finished run
    is not trained again)."""
    run = args.out / (run_name or variant)
    if (run / "model" / "config.json").exists() and (run / "done.json").exists():
        return training_seconds(run)
    path = ROOT / "configs" / "pgmm" / f"{variant}-small.yaml"
    mcfg = dataclasses.replace(PGMMConfig.from_yaml(path), **model_overrides)
    tcfg = TrainConfig.from_yaml(
        path,
        {
            "epochs": args.epochs,
            "max_steps": args.steps,
            "pairs_per_video": args.pairs_per_video,
            "log_every": 5,
            "sample_every": 100,
            "checkpoint_every": 50,
        },
    )
    data = RenderedSynthSigner("train", mcfg.image_size, max_videos=args.videos, signer=signer)
    PGMMTrainer(mcfg, tcfg, data, run, estimator=estimator).run()
    seconds = training_seconds(run)
    (run / "done.json").write_text(json.dumps({"seconds": seconds, "steps": _last_step(run)}))
    return seconds


def train_run(name: str, args, signer: SynthSigner, estimator: HRNetLite) -> float:
    """A variant by its name, or one of :data:`EXTRA_RUNS` (a variant with other weights)."""
    if name not in EXTRA_RUNS:
        return train_variant(name, args, signer, estimator)
    variant, weights = EXTRA_RUNS[name]
    loss_weights = {**default_loss_weights(variant), **weights}
    return train_variant(variant, args, signer, estimator, name, loss_weights=loss_weights)


def _last_step(run: Path) -> int:
    """Steps actually trained: ``--steps`` is a cap, the epochs may end the run first."""
    rows = list(csv.DictReader((run / "log.csv").open()))
    return int(rows[-1]["step"]) if rows else 0


def training_seconds(run: Path) -> float:
    """Training time of a run over all its sittings, estimated from its ``log.csv``.

    A timer around one sitting misses the earlier ones of a resumed run. The trainer's
    ``seconds`` column is the time of the logged step alone (fetching its batch and the
    update; checkpoint and sample writes are not timed), taken once per ``log_every`` steps, so
    each row stands for the steps trained since the logged step before it. A sitting that
    resumes from a checkpoint older than the last logged row trains (and logs) those steps
    again: the time is counted again, measured from the highest logged step below the row.
    """
    total, logged = 0.0, [0]
    for row in csv.DictReader((run / "log.csv").open()):
        step = int(row["step"])
        total += float(row["seconds"]) * (step - logged[bisect_left(logged, step) - 1])
        insort(logged, step)
    return total


def curves_png(out: Path, runs: Path, variants: list[str]) -> None:
    """Total training loss per variant (moving average of 5 logged steps), as a PNG."""
    w, h, pad = 720, 360, 40
    img = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(img)
    series = {}
    for v in variants:
        rows = list(csv.DictReader((runs / v / "log.csv").open()))
        steps = np.array([int(r["step"]) for r in rows])
        loss = np.array([float(r["total"]) for r in rows])
        k = min(5, len(loss))
        series[v] = (steps[k - 1 :], np.convolve(loss, np.ones(k) / k, "valid"))
    xmax = max(s[-1] for s, _ in series.values())
    ymin = min(y.min() for _, y in series.values())
    ymax = max(y.max() for _, y in series.values())
    draw.rectangle([pad, pad // 2, w - pad // 2, h - pad], outline=(0, 0, 0))
    for i, (v, (s, y)) in enumerate(series.items()):
        pts = [
            (
                pad + (w - 1.5 * pad) * x / xmax,
                h - pad - (h - 1.5 * pad) * (yy - ymin) / max(ymax - ymin, 1e-9),
            )
            for x, yy in zip(s, y, strict=True)
        ]
        draw.line(pts, fill=COLORS[v], width=2)
        draw.text((w - 150, pad // 2 + 6 + 14 * i), v, fill=COLORS[v])
    draw.text((pad, h - pad + 6), f"step 0 .. {xmax}", fill=(0, 0, 0))
    draw.text((pad + 4, pad // 2 + 4), f"total loss {ymin:.2f} .. {ymax:.2f}", fill=(0, 0, 0))
    img.save(out)


START, END = "<!-- ablation:start -->", "<!-- ablation:end -->"
HAND_COLUMNS = {"ke_hands": "KE hands ↓", "pck_hands": "PCK@0.05 hands ↑"}


def examiner_table(scored: list[dict], by_pe: list[dict]) -> str:
    """Hand columns of the same generated frames read by the independent evaluator and by the
    ``P_e`` of ``L_pd``: the published numbers before the evaluator existed were the latter."""
    header = ["Model", "Task"]
    for label in HAND_COLUMNS.values():
        header += [f"{label} (evaluator)", f"{label} (P_e of L_pd)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row, other in zip(scored, by_pe, strict=True):
        cells = [row["model"], row["task"]]
        for key in HAND_COLUMNS:
            cells += [_number(row["metrics"][key]), _number(other["metrics"][key])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _number(value: float | str) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def budget_parser(description: str, out: str) -> argparse.ArgumentParser:
    """The arguments every training comparison here shares: output folder, training budget,
    evaluation size and P_e."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path, default=Path(out))
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--pairs-per-video", type=int, default=6)
    parser.add_argument("--videos", type=int, default=40)
    parser.add_argument("--eval-videos", type=int, default=4)
    parser.add_argument("--eval-frames", type=int, default=48)
    parser.add_argument(
        "--pose-estimator", type=Path, required=True, help="the P_e that L_pd trains against"
    )
    parser.add_argument(
        "--evaluator",
        type=Path,
        default=ROOT / "models" / "evaluator",
        help="an independently trained pose estimator that reads the generated frames",
    )
    return parser


def load_evaluator(args: argparse.Namespace, estimator: HRNetLite) -> HRNetLite:
    """The scoring network, refused when it is the training ``P_e`` under another name."""
    if not (args.evaluator / "config.json").is_file():
        raise SystemExit(
            f"evaluator not found: {args.evaluator} (train it with `slp train pose-estimator "
            "--preset evaluator --seed 1 --out outputs/runs/evaluator`)"
        )
    evaluator = HRNetLite.from_pretrained(args.evaluator)
    if network_digest(evaluator) == network_digest(estimator):
        raise SystemExit(
            f"--evaluator {args.evaluator} has the weights of --pose-estimator: the renderers "
            "are trained against that network, so it cannot score them"
        )
    return evaluator


def main() -> None:
    parser = budget_parser(__doc__, "outputs/ablation")
    parser.add_argument(
        "--variants",
        nargs="+",
        default=[*VARIANTS, *EXTRA_RUNS],
        help=", ".join(EXTRA_RUNS) + " are the full model with other loss weights (see EXTRA_RUNS)",
    )
    parser.add_argument("--results", type=Path, default=ROOT / "docs" / "results.md")
    args = parser.parse_args()
    unknown = sorted(set(args.variants) - set(VARIANTS) - set(EXTRA_RUNS))
    if unknown:
        parser.error(f"unknown variants {unknown}")
    signer = SynthSigner()
    estimator = HRNetLite.from_pretrained(args.pose_estimator).freeze()
    evaluator = load_evaluator(args, estimator)
    seconds = {v: train_run(v, args, signer, estimator) for v in args.variants}
    steps = "/".join(sorted({str(_last_step(args.out / v)) for v in args.variants}))
    tables: dict[str, list[dict]] = {"reconstruction": [], "cross-person": []}
    read_by_pe: list[dict] = []
    for task in tables:
        data = RenderedSynthSigner("dev", 128, max_videos=args.eval_videos, signer=signer)
        for v in args.variants:
            model = PGMM.from_pretrained(args.out / v / "model").eval()
            for drive in ("image", "pose"):
                if task == "cross-person" and drive == "image":
                    continue
                common = dict(max_frames=args.eval_frames, drive=drive, name=f"{v} ({drive})")
                row = evaluate(
                    model,
                    data,
                    task,
                    evaluator=evaluator,
                    out_dir=args.out / "eval" / task / f"{v}-{drive}",
                    **common,
                )
                tables[task].append(row)
                # The same frames (generation is deterministic) read by the training P_e.
                read_by_pe.append(evaluate(model, data, task, evaluator=estimator, **common))
    curves_png(args.results.parent / "results_curves.png", args.out, args.variants)
    lines = [
        "## PGMM ablation on SynthSigner (our version of the paper's Table 4)",
        "",
        f"Budget: every variant trained for **{steps} steps** (batch 4, 128², `*-small` "
        f"configs, the first {args.videos} SynthSigner train videos rendered on the fly, same "
        "seeded pair order for all) on the 2-core CPU machine; P_e (for L_pd) = our HRNetLite "
        "trained by `slp train pose-estimator`. Training time per variant (all sittings, "
        "from each run's `log.csv`): "
        + ", ".join(f"{v} {s / 60:.1f} min" for v, s in seconds.items())
        + ".",
        "",
        "Command:",
        "",
        "```bash",
        f"python scripts/ablation.py --out {args.out} --steps {args.steps} --videos {args.videos}"
        f" --eval-videos {args.eval_videos} --eval-frames {args.eval_frames}"
        f" --pose-estimator {args.pose_estimator} --evaluator {args.evaluator}",
        "```",
        "",
        f"Evaluation: SynthSigner dev, first {args.eval_videos} videos, first {args.eval_frames} "
        "frames each. `image` = motion from the driving frame, pose branch fed heatmaps "
        "rendered from the ground-truth labels (the paper feeds P_d(P_e(I_d)), so this is the "
        "paper's setting for the motion branch only), `pose` = driven by heatmaps only (our "
        "text-to-video path). The keypoint columns are read from "
        f"the generated frames by the independent evaluator `{args.evaluator}` (weights "
        f"{network_digest(evaluator)}), which no renderer was trained against.",
        "",
        "### Reconstruction (cf. the paper's Table 4)",
        "",
        markdown_table(tables["reconstruction"]),
        "",
        "### Cross-person (no paper table: the paper shows it only qualitatively, Fig. 6)",
        "",
        markdown_table(tables["cross-person"]),
        "",
        "### Hands read by the evaluator and by the P_e of L_pd",
        "",
        "The same generated frames; the right-hand column of each pair is read by the network "
        "the renderers were trained against (how these numbers were published before the "
        "evaluator existed), so it flatters variants with L_pd.",
        "",
        examiner_table(tables["reconstruction"] + tables["cross-person"], read_by_pe),
        "",
        "### Training curves",
        "",
        "![total training loss per variant](results_curves.png)",
        "",
    ]
    write_doc_block(args.results, START, END, "\n".join(lines))
    payload = {**tables, "read_by_training_pe": read_by_pe}
    (args.out / "tables.json").write_text(json.dumps(payload, indent=2, default=str))
    print("\n".join(lines))


if __name__ == "__main__":
    try:
        main()
    except TrainingStopped as e:  # Ctrl-C / SIGTERM: the variant's checkpoint is written
        sys.exit(f"ablation: {e}")
