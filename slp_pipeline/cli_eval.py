"""``slp eval ...``: the paper's evaluation tasks for one or more PGMM checkpoints.

Every checkpoint is loaded (and every path checked) before the first video is generated, so a
typo in the last ``--checkpoint`` fails in a second, not after an hour of evaluation. Metric
weights that are absent are not an error: their columns read ``n/a (weights not found at
PATH)``. With several checkpoints each one gets ``OUT/<name>/`` (metrics, comparison video)
and ``OUT/metrics.{json,md}`` hold the merged table; with one, everything goes to ``OUT``.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from pgmm.data.loaders import SignVideoDataset, load_dataset
from pgmm.data.synth.dataset import RenderedSynthSigner

# Mirrors of pgmm.evaluation's constants (the tests check they agree): importing that module
# here would load the trainer and metrics for every ``slp`` command, not just ``slp eval``.
TASKS = ("reconstruction", "cross-person")
DRIVES = ("image", "pose")
BATCH_SIZE = 16
COMPARISON_VIDEOS = 4


def register(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser(
        "eval",
        help="evaluate PGMM checkpoints (reconstruction / cross-person)",
        description="Evaluate PGMM checkpoints on the paper's tasks and print the metrics table.",
    )
    ev.add_argument("--task", choices=TASKS, required=True)
    ev.add_argument(
        "--checkpoint",
        type=Path,
        action="append",
        required=True,
        help="PGMM folder (config.json + model.safetensors); repeat to compare models",
    )
    ev.add_argument(
        "--data",
        default="synth",
        help="'synth' (rendered on the fly), DIR (SynthSigner) or NAME:DIR",
    )
    ev.add_argument("--split", default="test", choices=("train", "dev", "test"))
    ev.add_argument("--pose-estimator", type=Path, help="trained P_e (HRNetLite) folder")
    ev.add_argument("--lpips-backbone", type=Path, help="torchvision AlexNet/VGG16 state dict")
    ev.add_argument("--lpips-linear", type=Path, help="LPIPS v0.1 linear-head weights")
    ev.add_argument("--lpips-net", choices=("alex", "vgg"), default="alex")
    ev.add_argument("--i3d", type=Path, help="I3D (Kinetics-400) weights for FVD")
    ev.add_argument(
        "--recognizer",
        type=Path,
        help="PoseCTCRecognizer folder for WER (e.g. models/recognizer/de); needs --pose-estimator",
    )
    ev.add_argument("--max-videos", type=int)
    ev.add_argument("--max-frames", type=int, help="evaluate only the first N frames per video")
    ev.add_argument("--drive", choices=DRIVES, default="image")
    ev.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    ev.add_argument("--comparison-videos", type=int, default=COMPARISON_VIDEOS)
    ev.add_argument("--device", default="cpu")
    ev.add_argument("--out", type=Path, required=True, help="output folder")
    ev.set_defaults(func=run_eval)


def _dataset(spec: str, split: str, size: int, max_videos: int | None) -> SignVideoDataset:
    """``synth`` renders SynthSigner on the fly; ``NAME:DIR`` or ``DIR`` reads a dataset."""
    if spec == "synth":
        return RenderedSynthSigner(split, size, max_videos=max_videos)
    name, _, root = spec.partition(":") if ":" in spec else ("synthsigner", "", spec)
    return load_dataset(name, root, split, size)


def _names(checkpoints: list[Path]) -> list[str]:
    """Short, unique, filesystem-safe names: ``runs/full/model`` -> ``full``."""
    names = []
    for path in checkpoints:
        path = path.resolve()
        base = path.parent.name if path.name in ("model", "last", "checkpoints") else path.name
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", base) or "model"
        name, k = base, 2
        while name in names:
            name, k = f"{base}_{k}", k + 1
        names.append(name)
    return names


def _metric_weights(args: argparse.Namespace) -> tuple[Any, Any]:
    """LPIPS and I3D, or the :class:`MetricWeightsMissing` that explains their absence."""
    from pgmm.metrics import I3D, LPIPS, MetricWeightsMissing

    lpips: Any
    if args.lpips_backbone is None and args.lpips_linear is None:
        lpips = MetricWeightsMissing(
            "<none given: --lpips-backbone/--lpips-linear>", "LPIPS weights"
        )
    else:
        try:
            lpips = LPIPS(args.lpips_net, args.lpips_backbone, args.lpips_linear).to(args.device)
        except MetricWeightsMissing as e:
            lpips = e
    i3d: Any
    if args.i3d is None:
        i3d = MetricWeightsMissing("<none given: --i3d>", "I3D weights")
    elif not args.i3d.is_file():  # checked first: building I3D only to fail would be wasted
        i3d = MetricWeightsMissing(args.i3d, "I3D weights")
    else:
        i3d = I3D().load_weights(args.i3d).to(args.device)
    return lpips, i3d


def run_eval(args: argparse.Namespace) -> int:
    from pgmm.evaluation import evaluate, markdown_table, write_results
    from pgmm.models.pgmm import PGMM
    from pgmm.models.pose_estimator import HRNetLite

    for arg in ("max_videos", "max_frames", "batch_size"):
        value = getattr(args, arg)
        if value is not None and value < 1:
            raise ValueError(f"--{arg.replace('_', '-')} must be >= 1, got {value}")
    for path in args.checkpoint:
        if not path.is_dir():
            raise FileNotFoundError(f"checkpoint folder not found: {path}")
    models = [PGMM.from_pretrained(p, map_location=args.device) for p in args.checkpoint]
    estimator = None
    if args.pose_estimator is not None:
        estimator = HRNetLite.from_pretrained(args.pose_estimator).to(args.device)
    recognizer = None
    if args.recognizer is not None:
        from pgmm.metrics.recognizer import PoseCTCRecognizer, VideoGlossRecognizer

        if estimator is None:
            raise ValueError("--recognizer reads P_e's keypoints: give --pose-estimator too")
        if not args.recognizer.is_dir():
            raise FileNotFoundError(f"recognizer folder not found: {args.recognizer}")
        ctc = PoseCTCRecognizer.from_pretrained(args.recognizer, args.device)
        recognizer = VideoGlossRecognizer(ctc, estimator)
    lpips, i3d = _metric_weights(args)

    datasets: dict[int, SignVideoDataset] = {}
    rows = []
    names = _names(args.checkpoint)
    for name, model in zip(names, models, strict=True):
        size = model.config.image_size
        if size not in datasets:
            datasets[size] = _dataset(args.data, args.split, size, args.max_videos)
        out = args.out if len(models) == 1 else args.out / name
        rows.append(
            evaluate(
                model,
                datasets[size],
                args.task,
                estimator=estimator,
                recognizer=recognizer,
                lpips=lpips,
                i3d=i3d,
                max_videos=args.max_videos,
                max_frames=args.max_frames,
                out_dir=out,
                drive=args.drive,
                name=name,
                batch_size=args.batch_size,
                comparison_videos=args.comparison_videos,
            )
        )
    if len(models) > 1:
        write_results(args.out, rows)
    print(markdown_table(rows), end="")
    print(f"results: {args.out / 'metrics.md'}")
    return 0
