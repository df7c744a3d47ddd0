"""Benchmark: the CPU renderer, old code against new, side by side in one run.

What is timed is what ``slp synthesize`` and the service spend 96-99 % of a sentence on:
:meth:`PGMM.animate` of the shipped ``models/pgmm/full-small`` on a cached source state, one
16-frame chunk at 128^2 (the chunk size after the first), float32. Each *arm* is a worker
process: ``new`` runs this tree, ``old`` a copy in which every file the CPU-inference work
changed (:data:`CHANGED`) is as it was at ``--baseline``. A new-arm worker sets up the process
as ``PGMMRenderer`` does (:func:`pgmm.allocator.keep_freed_memory`); the old tree has no such
module. The parent asks the workers in turn (old, new, old, new, ...) so load from other jobs
hits both alike: read the ratios.

Per arm: seconds per chunk (median), frames/s, minor page faults and kernel (sys) seconds per
chunk, and the peak RSS of the worker. Both arms render the same inputs with the same weights;
the largest difference between their frames, in 8-bit grey levels, shows the speed-up did not
change what is drawn.

Run: ``python bench/render_cpu.py [--threads 1 2] [--rounds 5]``. Writes
``bench/results/render_cpu.json`` and prints a Markdown table for docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import (  # noqa: E402
    RESULTS,
    ROOT,
    TreeWorker,
    cpu_name,
    rss_mib,
    run_worker,
    tree_at,
    write_report,
)

from pgmm.report import md_table  # noqa: E402

#: The commit before the CPU-inference work (stop 42).
BASELINE = "71682ef"
#: Every file that work changed; the old arm takes them as of the baseline.
CHANGED = (
    "pgmm/allocator.py", "pgmm/models/cmm.py", "pgmm/models/hourglass.py",
    "pgmm/models/encoder.py", "pgmm/models/pfm.py", "pgmm/models/posenet.py",
    "pgmm/models/generator.py",
)  # fmt: skip
MODEL = ROOT / "models" / "pgmm" / "full-small"
FRAMES = 16


def _worker(spec: dict[str, Any]) -> None:
    """Load the model, answer one JSON line per command: ``chunk`` or ``frames``."""
    import torch

    try:
        from pgmm.allocator import keep_freed_memory
    except ImportError:  # the old tree: the process keeps glibc's defaults
        pass
    else:
        keep_freed_memory()
    from pgmm.export import example_inputs
    from pgmm.models.pgmm import PGMM

    torch.set_num_threads(spec["threads"])
    model = PGMM.from_pretrained(spec["model"]).eval().float()
    source, source_maps, driving = example_inputs(model, FRAMES)
    state = model.encode_source(source, source_maps)
    model.animate(state, driving)  # warm-up: oneDNN primitives, allocator pools
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "frames":
            frames = model.animate(state, driving)
            np.save(cmd["path"], (frames * 255).round().clamp(0, 255).to(torch.uint8).numpy())
            answer: dict[str, Any] = {"path": cmd["path"]}
        else:
            before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            model.animate(state, driving)
            seconds = time.perf_counter() - start
            after = resource.getrusage(resource.RUSAGE_SELF)
            answer = {
                "seconds": seconds,
                "faults": after.ru_minflt - before.ru_minflt,
                "sys_s": after.ru_stime - before.ru_stime,
                "peak_rss_mib": rss_mib("VmHWM"),
            }
        print(json.dumps(answer), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", default=BASELINE, help="git revision of the old arm")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=5, help="timed chunks per arm")
    parser.add_argument("--out", type=Path, default=RESULTS / "render_cpu.json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if run_worker(args.worker, _worker):
        return 0
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="render-cpu-") as scratch:
        trees = {"old": tree_at(args.baseline, CHANGED, Path(scratch) / "old"), "new": ROOT}
        script = Path(__file__).resolve()
        workers = [TreeWorker(f"{t} code, {n} thread{'s' * (n > 1)}", script, trees[t],
                              {"model": str(MODEL), "threads": n}, n)
                   for n in args.threads for t in ("old", "new")]  # fmt: skip
        try:
            frames = [np.load(w.ask(cmd="frames", path=f"{scratch}/{i}.npy")["path"])
                      for i, w in enumerate(workers)]  # fmt: skip
            runs: list[list[dict[str, float]]] = [[] for _ in workers]
            for r in range(args.rounds):
                times = []
                for w, run in zip(workers, runs, strict=True):
                    run.append(w.ask(cmd="chunk"))
                    times.append(f"{w.name} {run[-1]['seconds']:.2f} s")
                print(f"round {r + 1}/{args.rounds}: " + ", ".join(times), flush=True)
        finally:
            for w in workers:
                w.close()
    arms, rows = [], []
    for i, (w, run) in enumerate(zip(workers, runs, strict=True)):
        seconds = statistics.median(x["seconds"] for x in run)
        old = i - 1 if i % 2 else i  # the old arm of the same thread count
        old_s = statistics.median(x["seconds"] for x in runs[old])
        diff = int(np.abs(frames[i].astype(np.int16) - frames[old].astype(np.int16)).max())
        arm = {
            "name": w.name,
            "threads": args.threads[i // 2],
            "seconds_per_chunk": seconds,
            "frames_per_s": FRAMES / seconds,
            "speedup_vs_old": old_s / seconds,
            "faults_per_chunk": statistics.median(x["faults"] for x in run),
            "sys_s_per_chunk": statistics.median(x["sys_s"] for x in run),
            "peak_rss_mib": run[-1]["peak_rss_mib"],
            "max_diff_vs_old": diff,
            "rounds": run,
        }
        arms.append(arm)
        rows.append([w.name, f"{seconds:.3f}", f"{arm['frames_per_s']:.1f}",
                     f"{arm['speedup_vs_old']:.2f}x", f"{arm['faults_per_chunk']:,.0f}",
                     f"{arm['sys_s_per_chunk']:.3f}", f"{arm['peak_rss_mib']:.0f}",
                     str(diff)])  # fmt: skip
    header = ["arm", "s per 16-frame chunk", "frames/s", "vs old", "page faults per chunk",
              "kernel s per chunk", "peak RSS MiB", "max diff vs old (grey levels)"]  # fmt: skip
    print(md_table(header, rows))
    report = {
        "command": " ".join(["python", "bench/render_cpu.py", *sys.argv[1:]]),
        "baseline": args.baseline,
        "machine": f"{cpu_name()}, {platform.machine()}, {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.1f} at the end",
        "seconds": round(time.perf_counter() - start, 1),
        "frames": FRAMES,
        "arms": arms,
    }
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
