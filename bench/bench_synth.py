"""Benchmark: SynthSigner rendering + H.264 encoding speed (issue target: 200 videos x 100 frames
at 128^2 in < 3 min on 2 CPU cores).

Run: ``python bench/bench_synth.py [--videos 200] [--frames 100] [--size 128] [--workers 2]``.
Prints a table and writes ``bench/results/synth.json``.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

from pgmm.data.synth.generate import GenerateConfig, generate

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, write_report  # noqa: E402

TARGET_S = 180.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--videos", type=int, default=200)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="bench_synth_"))
    try:
        results = {}
        for mode in ("none", "mp4"):
            cfg = GenerateConfig(
                out=out / mode,
                videos=args.videos,
                sizes=(args.size,),
                frames=mode,
                workers=args.workers,
                frames_per_video=args.frames,
            )
            start = time.perf_counter()
            generate(cfg, progress=False)
            took = time.perf_counter() - start
            size = sum(p.stat().st_size for p in (out / mode).rglob("*") if p.is_file())
            results[mode] = {
                "seconds": round(took, 2),
                "bytes": size,
                "frames_per_s": round(args.videos * args.frames / took, 1),
            }
    finally:
        shutil.rmtree(out, ignore_errors=True)
    total = results["mp4"]["seconds"]
    report = {
        "device": f"CPU ({os.cpu_count()} cores, {platform.processor() or platform.machine()})",
        "videos": args.videos,
        "frames_per_video": args.frames,
        "size": args.size,
        "workers": args.workers,
        "poses_only": results["none"],
        "render_and_encode": results["mp4"],
        "target_s": TARGET_S,
        "time_over_target": round(total / TARGET_S, 3),
    }
    print(f"{'mode':<20}{'seconds':>10}{'frames/s':>12}{'MB on disk':>12}")
    for mode, label in (("none", "poses only"), ("mp4", "render + encode")):
        r = results[mode]
        print(
            f"{label:<20}{r['seconds']:>10.1f}{r['frames_per_s']:>12.1f}{r['bytes'] / 1e6:>12.1f}"
        )
    print(f"render+encode / 180 s target = {report['time_over_target']:.2f} (must be < 1)")
    write_report(RESULTS / "synth.json", report)


if __name__ == "__main__":
    main()
