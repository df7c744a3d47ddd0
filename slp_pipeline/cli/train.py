"""``slp train ...``: the pose estimator P_e, PGMM (any variant, by config) and the recogniser
behind the WER metric; the text side registers itself from :mod:`slp_pipeline.cli.text2pose`."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pgmm.data.synth.dataset import RenderedSynthSigner
from pgmm.data.synth.identity import HELD_OUT_IDENTITIES
from slp_pipeline.cli.text2pose import register as register_text2pose

if TYPE_CHECKING:  # heavy imports stay inside the commands
    from pgmm.data.loaders import SignVideoDataset
    from pgmm.models.pgmm import PGMM
    from pgmm.models.pose_estimator import PoseEstimator
    from pgmm.training.trainer import TrainState


def register(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="train models").add_subparsers(
        dest="train_command", required=True
    )
    register_recognizer(train)
    register_text2pose(train)
    pe = train.add_parser("pose-estimator", help="train P_e (HRNetLite) on SynthSigner labels")
    pe.add_argument("--data", default="synth", help="'synth' (rendered on the fly) or a folder")
    pe.add_argument("--out", type=Path, required=True, help="run folder (resumes if present)")
    pe.add_argument("--steps", type=int, default=2000)
    pe.add_argument("--batch-size", type=int, default=16)
    pe.add_argument("--size", type=int, default=128)
    pe.add_argument("--max-videos", type=int, help="use only the first N training videos")
    pe.add_argument("--preset", choices=("cpu", "gpu", "evaluator"), default="cpu")
    pe.add_argument("--seed", type=int, default=0, help="data order, augmentation and init")
    pe.add_argument(
        "--random-looks",
        type=float,
        default=0.0,
        metavar="FRACTION",
        help="this fraction of the SynthSigner videos drawn in random looks (skin, clothes, "
        "background), so the network reads looks it never saw (default: 0)",
    )
    pe.add_argument("--device", default="cpu")
    pe.set_defaults(func=run_pose_estimator)

    pg = train.add_parser("pgmm", help="train a PGMM variant")
    pg.add_argument("--config", type=Path, required=True, help="configs/pgmm/<variant>.yaml")
    pg.add_argument("--data", default="synth", help="'synth' (rendered on the fly) or a folder")
    pg.add_argument("--out", type=Path, required=True, help="run folder (resumes if present)")
    pg.add_argument("--pose-estimator", type=Path, help="trained P_e folder (needed by L_pd)")
    pg.add_argument("--vgg19", type=Path, help="local VGG19 weights for the perceptual loss")
    pg.add_argument("--max-videos", type=int, help="train on N videos (default: all)")
    pg.add_argument(
        "--balanced-identities",
        action="store_true",
        help="with --max-videos: spread the N videos over the corpus signers instead of taking "
        "the first N (the first 120 German sentences hold 5 of 9 signers)",
    )
    pg.add_argument(
        "--cross-identity",
        nargs="?",
        type=float,
        const=1.0,
        default=0.0,
        metavar="FRACTION",
        help="SynthSigner only: this fraction of the training videos (all if no value is given) "
        "ends with another corpus identity's motion drawn in its own appearance; half of such a "
        "video's pairs re-pose one body onto another's proportions (cross-person animation)",
    )
    pg.add_argument(
        "--random-looks",
        type=float,
        default=0.0,
        metavar="FRACTION",
        help="SynthSigner only: this fraction of the training videos drawn in a random look "
        "(source and driving frames alike), so the renderer learns to copy the source's look "
        "rather than paint its training signers' (default: 0)",
    )
    pg.add_argument(
        "--appearance-jitter",
        type=float,
        help="recolour each training pair (same transform for source and driving) with this "
        "strength in [0, 1]; overrides train.appearance_jitter",
    )
    pg.add_argument(
        "--lr",
        type=float,
        help="Adam learning rate (overrides train.lr); fine-tuning a converged renderer with "
        "--init-from wants the lr it ended at, not the from-scratch one",
    )
    pg.add_argument("--max-steps", type=int)
    pg.add_argument("--epochs", type=int)
    pg.add_argument("--device", default="cpu", help="single-process training only")
    pg.add_argument(
        "--init-from",
        type=Path,
        help="start from this trained PGMM folder (e.g. models/pgmm/full-small) instead of "
        "random weights; a transposed-P_d checkpoint converts to a bilinear config",
    )
    pg.add_argument(
        "--validate-every",
        type=int,
        default=0,
        help="every N steps, score L1 of pose-driven reconstruction on a fixed dev set; the "
        "best by dev becomes RUN/model (0: no validation, the last step is the model)",
    )
    pg.add_argument("--validate-videos", type=int, default=4, help="dev videos for validation")
    pg.add_argument("--validate-frames", type=int, default=48, help="frames of each dev video")
    pg.add_argument(
        "--workers",
        type=int,
        default=1,
        help="data-parallel (DDP) worker processes via Ray Train: one per GPU with --gpu",
    )
    pg.add_argument("--gpu", action="store_true", help="distributed training on GPUs (NCCL)")
    pg.add_argument(
        "--ray-address",
        help="join this Ray cluster for multi-node training (e.g. 'auto'); OUT must then be on "
        "a filesystem every node sees. Default: a private local Ray",
    )
    pg.set_defaults(func=run_pgmm)


def run_pose_estimator(args: argparse.Namespace) -> int:
    from pgmm.models.pose_estimator import HRNETLITE_PRESETS
    from pgmm.training.distributed import build_dataset
    from pgmm.training.pose_estimator import evaluate_pck, train_pose_estimator

    data = build_dataset(
        args.data, "train", args.size, args.max_videos, random_looks=args.random_looks
    )
    model = train_pose_estimator(data, args.out, HRNETLITE_PRESETS[args.preset], args.steps,
                                 args.batch_size, seed=args.seed, device=args.device)  # fmt: skip
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
    """Single-process training, or DDP through Ray Train with ``--workers N > 1`` / ``--gpu``."""
    from pgmm.models.config import PGMMConfig
    from pgmm.training.config import TrainConfig
    from pgmm.training.distributed import DatasetSpec  # Ray loads only inside training

    model_cfg = PGMMConfig.from_yaml(args.config)
    options = ("max_steps", "epochs", "appearance_jitter", "lr")
    overrides = {k: getattr(args, k) for k in options if getattr(args, k) is not None}
    train_cfg = TrainConfig.from_yaml(args.config, overrides)
    if args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    if args.validate_every < 0:
        raise ValueError(f"--validate-every must be >= 0, got {args.validate_every}")
    distributed = args.workers > 1 or args.gpu or args.ray_address
    if distributed and (args.init_from or args.validate_every):
        raise ValueError("--init-from and --validate-every are for single-process training")
    data = DatasetSpec(
        args.data,
        "train",
        args.max_videos,
        args.balanced_identities,
        args.cross_identity,
        args.random_looks,
    )
    state: TrainState
    if distributed:
        from pgmm.training.distributed import train_distributed

        state = train_distributed(
            model_cfg,
            train_cfg,
            data,
            args.out,
            num_workers=args.workers,
            use_gpu=args.gpu,
            estimator_dir=args.pose_estimator,
            vgg_weights=args.vgg19,
            ray_address=args.ray_address,
        )
        how = f" on {state.world_size} workers"
    else:
        from pgmm.models.pgmm import PGMM
        from pgmm.models.pose_estimator import HRNetLite
        from pgmm.training.distributed import check_resume_world_size, record_world_size
        from pgmm.training.trainer import PGMMTrainer

        check_resume_world_size(args.out, 1)
        record_world_size(args.out, 1)
        estimator = HRNetLite.from_pretrained(args.pose_estimator) if args.pose_estimator else None
        dataset = data.build(model_cfg.image_size)
        base = PGMM.from_pretrained(args.init_from) if args.init_from else None
        validator = None
        if args.validate_every:
            dev = DatasetSpec(args.data, "dev", args.validate_videos).build(model_cfg.image_size)
            validator = dev_l1_validator(dev, args.validate_frames, estimator)
        trainer = PGMMTrainer(
            model_cfg,
            train_cfg,
            dataset,
            args.out,
            args.device,
            estimator,
            args.vgg19,
            init_from=base,
            validator=validator,
            validate_every=max(1, args.validate_every),
            patience=10**9,  # a long run keeps going; selection is by the best dev score
        )
        state, how = trainer.run(), ""
    print(
        f"trained {model_cfg.variant} for {state.global_step} steps{how}; "
        f"model: {args.out / 'model'}"
    )
    return 0


def dev_l1_validator(
    dev: SignVideoDataset, frames: int, estimator: PoseEstimator | None
) -> Callable[[PGMM], float]:
    """Mean L1 of pose-driven reconstruction on ``dev``: the same videos and frames each time.

    L1 rather than a keypoint score, so that selection uses neither P_e (the L_pd network,
    which would flatter) nor the independent evaluator whose hand readings are reported.
    """
    from pgmm.evaluation import evaluate

    def score(model: PGMM) -> float:
        row = evaluate(model, dev, drive="pose", estimator=estimator, max_frames=frames,
                       progress=False)  # fmt: skip
        return float(row["metrics"]["l1"])

    return score


def register_recognizer(train: argparse._SubParsersAction) -> None:
    """``slp train recognizer``: the pose-based CTC gloss recogniser behind the WER metric."""
    rec = train.add_parser(
        "recognizer",
        help="train the pose-based CTC gloss recogniser used for WER",
        description="Train PoseCTCRecognizer on SynthSigner poses of one corpus (a pose-based "
        "proxy for the paper's CorrNet WER), then report its WER on ground-truth dev poses.",
    )
    rec.add_argument(
        "--language", choices=("de", "zh"), required=True, help="de: PHOENIX-2014T, zh: CSL-Daily"
    )
    rec.add_argument("--out", type=Path, required=True, help="run folder (resumes if present)")
    rec.add_argument("--steps", type=int, default=20000)
    rec.add_argument("--batch-size", type=int, default=32)
    rec.add_argument("--lr", type=float, default=1e-3)
    rec.add_argument("--max-sentences", type=int, help="train on the first N sentences only")
    rec.add_argument(
        "--noise",
        type=float,
        default=0.02,
        help="max std of the Gaussian keypoint noise (frame units)",
    )
    rec.add_argument("--hidden", type=int, help="conv and GRU width (default: the model's)")
    rec.add_argument(
        "--kernel-size", type=int, help="temporal conv kernel, odd (default: the model's)"
    )
    rec.add_argument(
        "--seed",
        type=int,
        default=0,
        help="initialisation and batch seed; a second recognizer with another seed scores "
        "models trained against the first (issue 15)",
    )
    rec.add_argument(
        "--eval-sentences", type=int, help="evaluate on the first N dev sentences (default: all)"
    )
    rec.add_argument("--beam-width", type=int, default=1, help="1 = greedy decoding")
    rec.add_argument(
        "--read-by",
        type=Path,
        metavar="ESTIMATOR",
        help="pose estimator folder (e.g. models/evaluator): train on its readings of "
        "SynthSigner's videos as well as on exact poses, so the recogniser reads videos through "
        "it (readings cached in OUT/reads; ~15 min per 1,000 sentences on one core, resumable); "
        "dev WER is then reported on both",
    )
    rec.add_argument(
        "--read-fraction",
        type=float,
        default=0.5,
        help="with --read-by: share of each batch taken from the readings",
    )
    rec.add_argument(
        "--read-sentences",
        type=int,
        help="with --read-by: read only the first N training sentences (exact poses still come "
        "from all of them)",
    )
    rec.add_argument(
        "--init-from",
        type=Path,
        metavar="MODEL",
        help="start from this saved recogniser (e.g. the shipped models/recognizer/zh) with a "
        "fresh optimizer and schedule, instead of a random initialisation; same language, "
        "vocabulary and architecture (ignored when OUT already holds a checkpoint)",
    )
    rec.add_argument("--data-dir", type=Path, help="shared data folder (default: $SLP_SHARED_DATA)")
    rec.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads; 1 is fastest for this small model on a busy CPU",
    )
    rec.add_argument("--device", default="cpu")
    rec.set_defaults(func=run_recognizer)


def run_recognizer(args: argparse.Namespace) -> int:
    import torch

    from pgmm.data.synth.signer import SynthSigner
    from pgmm.metrics.recognizer import evaluate_recognizer
    from pgmm.models.pose_estimator import HRNetLite
    from pgmm.training.recognizer import cache_reads, train_recognizer

    for name in ("steps", "batch_size", "threads", "beam_width"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
    torch.set_num_threads(args.threads)  # this process only: training and evaluation
    signer = SynthSigner(data_dir=args.data_dir, languages=[args.language])
    config: dict[str, int] = {}
    if args.hidden:
        config.update(hidden=args.hidden, rnn_hidden=args.hidden)
    if args.kernel_size:
        config["kernel_size"] = args.kernel_size
    estimator = None
    if args.read_by is not None:
        if not (args.read_by / "config.json").is_file():
            raise ValueError(f"--read-by {args.read_by}: no pose estimator there (no config.json)")
        estimator = HRNetLite.from_pretrained(args.read_by).eval()
    if args.init_from is not None and not (args.init_from / "config.json").is_file():
        raise ValueError(f"--init-from {args.init_from}: no recogniser there (no config.json)")
    model = train_recognizer(
        signer,
        args.language,
        args.out,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        max_sentences=args.max_sentences,
        noise=args.noise,
        config=config or None,
        seed=args.seed,
        device=args.device,
        read_by=estimator,
        read_fraction=args.read_fraction,
        read_sentences=args.read_sentences,
        init_from=args.init_from,
    )
    wer = evaluate_recognizer(
        model, signer, "dev", args.language, args.eval_sentences, beam_width=args.beam_width
    )
    sentences = signer.sentences("dev", args.language)[: args.eval_sentences]
    result: dict[str, object] = {
        "language": args.language,
        "split": "dev",
        "poses": "ground truth (SynthSigner)",
        "sentences": len(sentences),
        "beam_width": args.beam_width,
        "wer": wer,
    }
    print(f"dev WER on ground-truth poses: {wer:.3f} ({len(sentences)} sentences)")
    if estimator is not None:
        reads = cache_reads(signer, sentences, estimator, args.out / "reads" / "dev")
        wer_read = evaluate_recognizer(
            model, signer, "dev", args.language, args.eval_sentences, args.beam_width,
            samples=reads,
        )  # fmt: skip
        result.update(read_by=str(args.read_by), wer_read=wer_read)
        print(f"dev WER on {args.read_by}'s reading of SynthSigner's videos: {wer_read:.3f}")
    (args.out / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"model: {args.out / 'model'}")
    return 0
