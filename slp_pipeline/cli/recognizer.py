"""``slp train recognizer``: the pose-based CTC gloss recogniser behind the WER metric.

Wired into ``slp train`` by :func:`register`, which takes the ``train`` sub-parsers (see
:mod:`slp_pipeline.cli.train`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(train_subparsers: argparse._SubParsersAction) -> None:
    """Add ``recognizer`` to the sub-commands of ``slp train``."""
    rec = train_subparsers.add_parser(
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
    from pgmm.training.recognizer import train_recognizer

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
    )
    wer = evaluate_recognizer(
        model, signer, "dev", args.language, args.eval_sentences, beam_width=args.beam_width
    )
    result = {
        "language": args.language,
        "split": "dev",
        "poses": "ground truth (SynthSigner)",
        "sentences": args.eval_sentences or len(signer.sentences("dev", args.language)),
        "beam_width": args.beam_width,
        "wer": wer,
    }
    (args.out / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"dev WER on ground-truth poses: {wer:.3f} ({result['sentences']} sentences)")
    print(f"model: {args.out / 'model'}")
    return 0
