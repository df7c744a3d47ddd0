"""The paper's ablation (Tables 1 and 4) on SynthSigner: train every variant with the same
budget, evaluate reconstruction and cross-person, write ``docs/results.md``.

Every variant sees the same videos in the same order (seeded sampler) for the same number of
steps; runs are resumable (re-running the command continues unfinished runs and skips
finished ones). Example (the numbers in docs/results.md came from this)::

    python scripts/ablation.py --out outputs/ablation --steps 300 --videos 40 \\
        --pose-estimator outputs/runs/pose_estimator/model
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from pgmm.data.synth.dataset import RenderedSynthSigner
from pgmm.data.synth.signer import SynthSigner
from pgmm.evaluation import evaluate, markdown_table
from pgmm.models.config import VARIANTS, PGMMConfig
from pgmm.models.pgmm import PGMM
from pgmm.models.pose_estimator import HRNetLite
from pgmm.training.config import TrainConfig
from pgmm.training.trainer import PGMMTrainer

ROOT = Path(__file__).resolve().parents[1]
COLORS = {
    "tpsmm": (200, 60, 60),
    "pose_sum": (230, 150, 30),
    "pfm": (60, 150, 60),
    "pfm_pd": (40, 120, 200),
    "full": (120, 60, 180),
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
        return json.loads((run / "done.json").read_text())["seconds"]
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
    start = time.perf_counter()
    PGMMTrainer(mcfg, tcfg, data, run, estimator=estimator).run()
    seconds = time.perf_counter() - start
    (run / "done.json").write_text(json.dumps({"seconds": seconds, "steps": _last_step(run)}))
    return seconds


def _last_step(run: Path) -> int:
    """Steps actually trained: ``--steps`` is a cap, the epochs may end the run first."""
    rows = list(csv.DictReader((run / "log.csv").open()))
    return int(rows[-1]["step"]) if rows else 0


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


def write_section(path: Path, body: str) -> None:
    """Replace only the generated block of ``path`` so hand-written sections (the reading of
    the tables, other issues' results) survive a re-run."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    block = f"{START}\n{body}\n{END}"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = block + "\n\n" + text
    path.write_text(text, encoding="utf-8")


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
    parser.add_argument("--pose-estimator", type=Path, required=True)
    return parser


def main() -> None:
    parser = budget_parser(__doc__, "outputs/ablation")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--results", type=Path, default=ROOT / "docs" / "results.md")
    args = parser.parse_args()
    signer = SynthSigner()
    estimator = HRNetLite.from_pretrained(args.pose_estimator).freeze()
    seconds = {v: train_variant(v, args, signer, estimator) for v in args.variants}
    steps = "/".join(sorted({str(_last_step(args.out / v)) for v in args.variants}))
    tables: dict[str, list[dict]] = {"reconstruction": [], "cross-person": []}
    for task in tables:
        data = RenderedSynthSigner("dev", 128, max_videos=args.eval_videos, signer=signer)
        for v in args.variants:
            model = PGMM.from_pretrained(args.out / v / "model").eval()
            for drive in ("image", "pose"):
                if task == "cross-person" and drive == "image":
                    continue
                row = evaluate(
                    model,
                    data,
                    task,
                    estimator=estimator,
                    max_frames=args.eval_frames,
                    drive=drive,
                    name=f"{v} ({drive})",
                    out_dir=args.out / "eval" / task / f"{v}-{drive}",
                )
                tables[task].append(row)
    curves_png(ROOT / "docs" / "results_curves.png", args.out, args.variants)
    lines = [
        "## PGMM ablation on SynthSigner (Tables 1 and 4, our version)",
        "",
        f"Budget: every variant trained for **{steps} steps** (batch 4, 128², `*-small` "
        f"configs, the first {args.videos} SynthSigner train videos rendered on the fly, same "
        "seeded pair order for all) on the 2-core CPU machine; P_e = our HRNetLite trained by "
        "`slp train pose-estimator`. Training wall time per variant: "
        + ", ".join(f"{v} {s / 60:.1f} min" for v, s in seconds.items())
        + ".",
        "",
        "Command:",
        "",
        "```bash",
        f"python scripts/ablation.py --out {args.out} --steps {args.steps} --videos {args.videos}"
        f" --eval-videos {args.eval_videos} --eval-frames {args.eval_frames}"
        f" --pose-estimator {args.pose_estimator}",
        "```",
        "",
        f"Evaluation: SynthSigner dev, first {args.eval_videos} videos, first {args.eval_frames} "
        "frames each. `image` = driven by the driving frame (the paper's setting), `pose` = "
        "driven by heatmaps only (our text-to-video path).",
        "",
        "### Reconstruction (Table 1)",
        "",
        markdown_table(tables["reconstruction"]),
        "",
        "### Cross-person (Table 4)",
        "",
        markdown_table(tables["cross-person"]),
        "",
        "### Training curves",
        "",
        "![total training loss per variant](results_curves.png)",
        "",
    ]
    write_section(args.results, "\n".join(lines))
    (args.out / "tables.json").write_text(json.dumps(tables, indent=2, default=str))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
