"""``slp eval ...``: the paper's evaluation tasks for PGMM checkpoints, and the product's.

``--task reconstruction|cross-person`` scores one or more PGMM checkpoints. Every checkpoint
is loaded (and every path checked) before the first video is generated, so a typo in the last
``--checkpoint`` fails in a second, not after an hour of evaluation. Metric weights that are
absent are not an error: their columns read ``n/a (weights not found at PATH)``. With several
checkpoints each one gets ``OUT/<name>/`` (metrics, comparison video) and
``OUT/metrics.{json,md}`` hold the merged table; with one, everything goes to ``OUT``.

``--task text`` follows corpus sentences from text to video and reads the glosses back
(:mod:`slp_pipeline.evaluate_text`).

Generated frames are read by ``--evaluator`` (default ``models/evaluator``), a pose estimator
trained independently of the ``P_e`` that ``L_pd`` trains the renderers against;
``--pose-estimator`` only makes driving heatmaps for datasets without poses.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pgmm.data.loaders import SignVideoDataset, load_dataset
from pgmm.data.synth.dataset import RenderedSynthSigner

if TYPE_CHECKING:
    import torch

# Mirrors of pgmm.evaluation's constants (the tests check they agree): importing that module
# here would load the trainer and metrics for every ``slp`` command, not just ``slp eval``.
TASKS = ("reconstruction", "cross-person")
DRIVES = ("image", "pose")
BATCH_SIZE = 16
COMPARISON_VIDEOS = 4
# ... and of slp_pipeline.evaluate_text's (same reason: it loads the serving stages).
TEXT_TASK = "text"
DEFAULT_SENTENCES = 6
DEFAULT_RENDERERS = ("synth", "skeleton", "full", "tpsmm")
DEFAULT_EVALUATOR = Path("models/evaluator")
NO_EVALUATOR = "none"
#: Options of --task text only, with their defaults (given with another task: an error).
TEXT_OPTIONS = {
    "language": None, "max_sentences": None, "renderers": None, "docs": None, "threads": 1,
}  # fmt: skip


def register(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser(
        "eval",
        help="evaluate PGMM checkpoints (reconstruction / cross-person)",
        description="Evaluate PGMM checkpoints on the paper's tasks and print the metrics table.",
    )
    ev.add_argument(
        "--task",
        choices=(*TASKS, TEXT_TASK),
        required=True,
        help="text: corpus text -> text2pose -> renderers -> evaluator -> recogniser (WER)",
    )
    ev.add_argument(
        "--checkpoint",
        type=Path,
        action="append",
        help="PGMM folder (config.json + model.safetensors); repeat to compare models "
        "(reconstruction / cross-person)",
    )
    ev.add_argument(
        "--data",
        default="synth",
        help="'synth' (rendered on the fly), DIR (SynthSigner) or NAME:DIR",
    )
    ev.add_argument("--split", default="test", choices=("train", "dev", "test"))
    ev.add_argument(
        "--evaluator",
        default=str(DEFAULT_EVALUATOR),
        help="independent pose estimator that reads the generated frames (keypoint columns, "
        f"WER); '{NO_EVALUATOR}' leaves those columns n/a (default: %(default)s)",
    )
    ev.add_argument(
        "--pose-estimator",
        type=Path,
        help="P_e folder for driving heatmaps of datasets without poses (never for scoring)",
    )
    ev.add_argument("--lpips-backbone", type=Path, help="torchvision AlexNet/VGG16 state dict")
    ev.add_argument("--lpips-linear", type=Path, help="LPIPS v0.1 linear-head weights")
    ev.add_argument("--lpips-net", choices=("alex", "vgg"), default="alex")
    ev.add_argument("--i3d", type=Path, help="I3D (Kinetics-400) weights for FVD")
    ev.add_argument(
        "--recognizer",
        type=Path,
        help="PoseCTCRecognizer folder for WER, reading the evaluator's keypoints "
        "(e.g. models/recognizer/de; --task text: default models/recognizer/de_read for "
        "German, models/recognizer/zh_read for Chinese)",
    )
    ev.add_argument("--max-videos", type=int)
    ev.add_argument("--max-frames", type=int, help="evaluate only the first N frames per video")
    ev.add_argument("--drive", choices=DRIVES, default="image")
    ev.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    ev.add_argument("--comparison-videos", type=int, default=COMPARISON_VIDEOS)
    ev.add_argument(
        "--device",
        default="auto",
        help="auto (CUDA where present) | cpu | cuda[:N] (reconstruction / cross-person; "
        "--task text runs on the serve config's device) (default: %(default)s)",
    )
    ev.add_argument("--out", type=Path, required=True, help="output folder")
    text = ev.add_argument_group("--task text")
    text.add_argument("--language", choices=("de", "zh"), help="required with --task text")
    text.add_argument(
        "--max-sentences",
        type=int,
        help=f"the first N sentences of --split (default {DEFAULT_SENTENCES}); a re-run with "
        "a larger N adds only the new sentences",
    )
    text.add_argument(
        "--renderers",
        nargs="+",
        help=f"renderers of the serve config, 'synth' (SynthSigner's own drawing) or PGMM "
        f"folders (default: {' '.join(DEFAULT_RENDERERS)})",
    )
    text.add_argument(
        "--config", type=Path, default=Path("configs/serve/cpu.yaml"), help="serve config"
    )
    text.add_argument("--docs", type=Path, help="also (re)write this document's e2e:LANGUAGE block")
    text.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads; on the shared 2-core machine 1 thread ran 3-4x faster than 2 "
        "(docs/results.md) (default: %(default)s)",
    )
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


def _device(value: str) -> torch.device:
    """``--device``: ``auto`` as the serving stages resolve it; anything else checked first, so
    a typo or a missing GPU is one line, not a traceback from the first model load."""
    from pgmm.checkpoint import target_device
    from slp_pipeline.stages import resolve_device

    return resolve_device(value) if value == "auto" else target_device(value)


def _metric_weights(args: argparse.Namespace, device: torch.device) -> tuple[Any, Any]:
    """LPIPS and I3D, or the :class:`MetricWeightsMissing` that explains their absence."""
    from pgmm.metrics import I3D, LPIPS, MetricWeightsMissing

    lpips: Any
    if args.lpips_backbone is None and args.lpips_linear is None:
        lpips = MetricWeightsMissing(
            "<none given: --lpips-backbone/--lpips-linear>", "LPIPS weights"
        )
    else:
        try:
            lpips = LPIPS(args.lpips_net, args.lpips_backbone, args.lpips_linear).to(device)
        except MetricWeightsMissing as e:
            lpips = e
    i3d: Any
    if args.i3d is None:
        i3d = MetricWeightsMissing("<none given: --i3d>", "I3D weights")
    elif not args.i3d.is_file():  # checked first: building I3D only to fail would be wasted
        i3d = MetricWeightsMissing(args.i3d, "I3D weights")
    else:
        i3d = I3D().load_weights(args.i3d).to(device)
    return lpips, i3d


def _option(name: str) -> str:
    return f"--{name.replace('_', '-')}"


def run_eval(args: argparse.Namespace) -> int:
    for arg in ("max_videos", "max_frames", "batch_size", "max_sentences", "threads"):
        value = getattr(args, arg)
        if value is not None and value < 1:
            raise ValueError(f"{_option(arg)} must be >= 1, got {value}")
    if args.task == TEXT_TASK:
        return run_text(args)
    given = [_option(k) for k, default in TEXT_OPTIONS.items() if getattr(args, k) != default]
    if given:
        raise ValueError(f"{', '.join(given)} only apply to --task text")
    if not args.checkpoint:
        raise ValueError(f"--task {args.task} needs at least one --checkpoint")
    return run_video_tasks(args)


def run_video_tasks(args: argparse.Namespace) -> int:
    from pgmm.evaluation import evaluate, markdown_table, write_results
    from pgmm.models.pgmm import PGMM
    from pgmm.models.pose_estimator import HRNetLite

    device = _device(args.device)
    for path in args.checkpoint:
        if not path.is_dir():
            raise FileNotFoundError(f"checkpoint folder not found: {path}")
    models = [PGMM.from_pretrained(p, map_location=device) for p in args.checkpoint]
    estimator = evaluator = None
    if args.pose_estimator is not None:
        estimator = HRNetLite.from_pretrained(args.pose_estimator).to(device)
    if args.evaluator != NO_EVALUATOR:
        from slp_pipeline.evaluate_text import require  # names the recipe of a missing folder

        folder = require(Path(args.evaluator), "evaluator", "LANG")
        evaluator = HRNetLite.from_pretrained(folder).to(device)
    recognizer = None
    if args.recognizer is not None:
        from pgmm.metrics.recognizer import PoseCTCRecognizer

        if evaluator is None:
            raise ValueError("--recognizer reads the evaluator's keypoints: give --evaluator")
        recognizer = PoseCTCRecognizer.from_pretrained(args.recognizer, device)
    lpips, i3d = _metric_weights(args, device)

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
                evaluator=evaluator,
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


def run_text(args: argparse.Namespace) -> int:
    """``--task text``: the end-to-end table of one language (see :mod:`evaluate_text`)."""
    import torch

    from slp_pipeline import evaluate_text as et

    if args.language is None:
        raise ValueError("--task text needs --language (de or zh)")
    if args.checkpoint:
        raise ValueError("--task text takes PGMM folders through --renderers, not --checkpoint")
    if args.evaluator == NO_EVALUATOR:
        raise ValueError("--task text reads every video with the evaluator: it cannot be 'none'")
    settings = et.TextEvalSettings(
        language=args.language,
        out=args.out,
        split=args.split,
        max_sentences=args.max_sentences or et.DEFAULT_SENTENCES,
        renderers=tuple(args.renderers or et.DEFAULT_RENDERERS),
        evaluator=Path(args.evaluator),
        recognizer=args.recognizer,
        config=args.config,
        threads=args.threads,
    )
    previous = torch.get_num_threads()
    torch.set_num_threads(args.threads)  # restored: main() also runs inside other processes
    try:
        chain = et.load_chain(settings)
        result = et.run_text_eval(settings, chain, command=settings.command(args.docs))
    finally:
        torch.set_num_threads(previous)
    et.write_outputs(result, args.out)
    if args.docs is not None:
        et.update_docs(args.docs, result)
    print(et.markdown_table(result), end="")
    print(f"results: {args.out / 'e2e.md'}")
    return 0
