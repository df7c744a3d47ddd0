"""``slp train ...``: the pose estimator P_e, then PGMM (any variant, by config)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pgmm.data.loaders import SignVideoDataset, load_dataset
from pgmm.data.synth.dataset import RenderedSynthSigner
from pgmm.data.synth.identity import HELD_OUT_IDENTITIES


def _dataset(spec: str, split: str, size: int, max_videos: int | None) -> SignVideoDataset:
    """``synth`` renders SynthSigner on the fly; ``NAME:DIR`` or ``DIR`` reads a dataset."""
    if spec == "synth":
        return RenderedSynthSigner(split, size, max_videos=max_videos)
    name, _, root = spec.rpartition(":") if ":" in spec else ("synthsigner", "", spec)
    dataset = load_dataset(name, root, split, size)
    if max_videos:
        dataset.records = dataset.records[:max_videos]
    return dataset


def register(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="train models").add_subparsers(
        dest="train_command", required=True
    )
    pe = train.add_parser("pose-estimator", help="train P_e (HRNetLite) on SynthSigner labels")
    pe.add_argument("--data", default="synth", help="'synth' (rendered on the fly) or a folder")
    pe.add_argument("--out", type=Path, required=True, help="run folder (resumes if present)")
    pe.add_argument("--steps", type=int, default=2000)
    pe.add_argument("--batch-size", type=int, default=16)
    pe.add_argument("--size", type=int, default=128)
    pe.add_argument("--max-videos", type=int, help="use only the first N training videos")
    pe.add_argument("--preset", choices=("cpu", "gpu"), default="cpu")
    pe.add_argument("--device", default="cpu")
    pe.set_defaults(func=run_pose_estimator)

    pg = train.add_parser("pgmm", help="train a PGMM variant")
    pg.add_argument("--config", type=Path, required=True, help="configs/pgmm/<variant>.yaml")
    pg.add_argument("--data", default="synth", help="'synth' (rendered on the fly) or a folder")
    pg.add_argument("--out", type=Path, required=True, help="run folder (resumes if present)")
    pg.add_argument("--pose-estimator", type=Path, help="trained P_e folder (needed by L_pd)")
    pg.add_argument("--vgg19", type=Path, help="local VGG19 weights for the perceptual loss")
    pg.add_argument("--max-videos", type=int)
    pg.add_argument("--max-steps", type=int)
    pg.add_argument("--epochs", type=int)
    pg.add_argument("--device", default="cpu")
    pg.set_defaults(func=run_pgmm)


def run_pose_estimator(args: argparse.Namespace) -> int:
    from pgmm.models.pose_estimator import HRNETLITE_PRESETS
    from pgmm.training.pose_estimator import evaluate_pck, train_pose_estimator

    data = _dataset(args.data, "train", args.size, args.max_videos)
    model = train_pose_estimator(data, args.out, HRNETLITE_PRESETS[args.preset], args.steps,
                                 args.batch_size, device=args.device)  # fmt: skip
    results = {}
    for identity in HELD_OUT_IDENTITIES:
        held = RenderedSynthSigner("test", args.size, identity=identity, max_videos=8)
        results[f"identity_{identity}"] = evaluate_pck(model, held, device=args.device)
    (args.out / "eval.json").write_text(json.dumps(results, indent=2))
    for name, r in results.items():
        print(f"held-out {name}: PCK@0.05 {r['pck']:.3f} (hands {r['pck_hands']:.3f})")
    print(f"model: {args.out / 'model'}")
    return 0


def run_pgmm(args: argparse.Namespace) -> int:
    from pgmm.models.config import PGMMConfig
    from pgmm.models.pose_estimator import HRNetLite
    from pgmm.training.config import TrainConfig
    from pgmm.training.trainer import PGMMTrainer

    model_cfg = PGMMConfig.from_yaml(args.config)
    overrides = {k: v for k, v in (("max_steps", args.max_steps), ("epochs", args.epochs)) if v}
    train_cfg = TrainConfig.from_yaml(args.config, overrides)
    estimator = HRNetLite.from_pretrained(args.pose_estimator) if args.pose_estimator else None
    data = _dataset(args.data, "train", model_cfg.image_size, args.max_videos)
    trainer = PGMMTrainer(model_cfg, train_cfg, data, args.out, args.device, estimator, args.vgg19)
    state = trainer.run()
    print(f"trained {model_cfg.variant} for {state.global_step} steps; model: {args.out / 'model'}")
    return 0
