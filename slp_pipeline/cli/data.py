"""``slp data ...``: dataset generation (SynthSigner)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from pgmm.data.corpus import LANGUAGES, SPLITS
from pgmm.data.synth.generate import GenerateConfig, default_workers, generate
from pgmm.data.synth.identity import NUM_IDENTITIES


def _videos(value: str) -> int | None:
    if value == "all":
        return None
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'all', got {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return n


def register(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="datasets").add_subparsers(
        dest="data_command", required=True
    )
    synth = data.add_parser(
        "synth",
        help="generate a SynthSigner corpus (videos + exact poses)",
        description="Render procedural signers signing real PHOENIX-2014T / CSL-Daily "
        "sentences. Deterministic for a seed; resumes an interrupted run.",
    )
    synth.add_argument("--out", type=Path, required=True, help="output folder")
    synth.add_argument(
        "--videos", type=_videos, default=20, help="number of sentences, or 'all' (default 20)"
    )
    synth.add_argument(
        "--size",
        type=int,
        action="append",
        dest="sizes",
        help="frame size; repeat for several (default 128)",
    )
    synth.add_argument("--split", action="append", dest="splits", choices=SPLITS)
    synth.add_argument("--language", action="append", dest="languages", choices=LANGUAGES)
    synth.add_argument(
        "--frames",
        choices=("mp4", "png", "none"),
        default="mp4",
        help="how to store frames; 'none' writes poses only",
    )
    synth.add_argument(
        "--identity",
        type=int,
        choices=range(NUM_IDENTITIES),
        metavar="0-11",
        help="render every video with this identity (10, 11 are held out)",
    )
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--workers", type=int, default=default_workers())
    synth.add_argument("--data-dir", type=Path, help="shared data folder (holds corpora/)")
    synth.add_argument("--overwrite", action="store_true", help="re-render existing outputs")
    synth.set_defaults(func=run_synth)


def run_synth(args: argparse.Namespace) -> int:
    cfg = GenerateConfig(
        out=args.out,
        videos=args.videos,
        sizes=tuple(args.sizes or (128,)),
        splits=tuple(args.splits or SPLITS),
        languages=tuple(args.languages or LANGUAGES),
        seed=args.seed,
        frames=args.frames,
        identity=args.identity,
        workers=args.workers,
        data_dir=args.data_dir,
        overwrite=args.overwrite,
    )
    start = time.perf_counter()
    rows = generate(cfg)
    frames = sum(int(r["num_frames"]) for r in rows)
    took = time.perf_counter() - start
    print(f"wrote {len(rows)} videos ({frames} frames) to {args.out} in {took:.1f} s")
    if cfg.frames != "none":
        print(f"browse: {args.out / 'index.html'}  preview: {args.out / 'preview.mp4'}")
    return 0
