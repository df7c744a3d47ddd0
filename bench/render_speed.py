"""Benchmark: PGMM ``full`` vs the ``tpsmm`` baseline renderer, side by side in one run.

Measures the serving path -- :meth:`PGMM.animate` on a cached :meth:`PGMM.encode_source`
state -- in frames/s at 128^2 and 256^2, batch 1 and 16, for the paper-size configs
(``configs/pgmm/{full,tpsmm}.yaml``) and the CPU ones (``*-small.yaml``), with the ratio of
per-frame times full/tpsmm (the issue's goal: <= 1.3) and peak memory.

The two variants are timed *interleaved* (A B A B ...) in one process, so load from other jobs
on a shared machine hits both alike and the ratio stays meaningful when the absolute numbers do
not. Peak memory on CPU is the peak RSS (``VmHWM``, reset before each step) of a fresh
subprocess per (config, size) -- PyTorch's allocations bypass tracemalloc, and inside the timing
process the other variant's pages would count; compiled CPU rows have none (the probe runs
eager). On CUDA it is ``torch.cuda.max_memory_allocated`` per variant over building the step and
its first run, so compiled and CUDA-graph rows report their own memory.

CUDA (``--device cuda``): fp32, fp16 and bf16 autocast by default, plus ``--compile``
(``torch.compile``, compiled afresh for each model and batch) and ``--cuda-graphs`` (one
captured graph per batch shape). Each setting that fails -- out of memory included -- is
recorded with its error instead of aborting the run. Without a GPU, ``--device cuda`` prints
that it measured nothing and exits 0.

Run: ``python bench/render_speed.py [--device cpu|cuda] [--sets paper small] [--size 128 256]
[--batch 1 16] [--iters 2]``. Writes ``bench/results/render_speed.json`` (``_gpu`` on CUDA).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from functools import cache, partial
from pathlib import Path

import torch

from pgmm.export import example_inputs
from pgmm.models.config import PGMMConfig
from pgmm.models.pgmm import PGMM

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, ROOT, cpu_name, interleaved, probe, rss_mib, write_report  # noqa: E402

CONFIGS = ROOT / "configs" / "pgmm"
SETS = {"paper": "", "small": "-small"}
DTYPES = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
#: Combinations too slow for the CPU budget (~16 s per step per variant on 2 cores).
CPU_SKIP = {("paper", 256, 16)}


def build(variant: str, config_set: str, size: int, device: str) -> PGMM:
    """A randomly initialised model: speed does not depend on the weights."""
    cfg = PGMMConfig.from_yaml(CONFIGS / f"{variant}{SETS[config_set]}.yaml")
    cfg = PGMMConfig.from_dict({**cfg.to_dict(), "image_size": size})
    return PGMM(cfg).to(device).eval()


def make_step(
    model: PGMM, batch: int, device: str, dtype: str, compiled: bool, graphs: bool
) -> Callable[[], None]:
    """One serving step: ``batch`` frames from a cached source state."""
    source, source_maps, heat = (t.to(device) for t in example_inputs(model, batch))
    state = model.encode_source(source, source_maps)
    animate = torch.compile(model.animate) if compiled else model.animate
    amp = DTYPES[dtype]

    def autocast() -> torch.autocast | nullcontext:
        # Cached weight casts would be captured into the graph and go stale: no cache there.
        return (
            torch.autocast(device_type=device, dtype=amp, cache_enabled=not graphs)
            if amp
            else nullcontext()
        )

    def step() -> None:
        with torch.no_grad(), autocast():
            animate(state, heat)

    if not graphs:
        return step
    static = heat.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):  # warm up kernels and the allocator outside the capture
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), torch.no_grad(), autocast():
        animate(state, static)

    def replay() -> None:
        static.copy_(heat)  # a real step copies the new chunk into the graph's input
        graph.replay()

    return replay


def reset_peak_rss() -> None:
    """Start a new ``VmHWM`` peak (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def probe_memory(variant: str, config_set: str, size: int, batches: list[int]) -> dict:
    """Run in a fresh subprocess: peak RSS of one step per batch size, for one model."""
    torch.set_num_threads(1)
    model = build(variant, config_set, size, "cpu")
    steps = {b: make_step(model, b, "cpu", "fp32", False, False) for b in sorted(batches)}
    base = rss_mib()
    out = {"model_rss_MiB": round(base)}
    for batch, step in steps.items():
        reset_peak_rss()
        step()
        peak = rss_mib("VmHWM")
        out[str(batch)] = {"peak_MiB": round(peak), "over_model_MiB": round(peak - base)}
    return out


@cache
def cpu_memory(variant: str, config_set: str, size: int, batches: tuple[int, ...]) -> dict:
    """:func:`probe_memory` in a fresh interpreter, so no other model's pages count; once per
    model, when its first row needs it."""
    return probe(__file__, variant, config_set, str(size), *(str(b) for b in batches))


def cuda_memory(build: Callable[[], Callable[[], None]]) -> tuple[Callable[[], None], dict]:
    """Build a step and run it once: the step, and the peak allocated memory of both with how
    much of it they added. Building is included so that each row reports its own memory -- a
    compiled step's first call (compilation), a CUDA graph's capture and private pool --
    rather than an eager step's."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    step = build()
    step()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    memory = {"peak_MiB": round(peak / 2**20), "over_model_MiB": round((peak - base) / 2**20)}
    return step, memory


def measure(
    args: argparse.Namespace,
    models: list[PGMM],
    batch: int,
    setting: tuple[str, bool, bool],
    cpu_probe: Callable[[str], dict],
) -> tuple[list[float], list[dict | None]]:
    """Seconds per step and memory of each model for one setting.

    ``torch.compile`` caches compiled code on ``PGMM.animate`` itself, for every model and batch
    shape together; past ``recompile_limit`` (8) entries it would silently run eager. Hence a
    fresh cache per setting (two entries: the two models) and a hard error at the limit, so a
    compiled row is compiled or it is an error. CPU memory comes from a fresh process, eager
    only: compiled CPU rows have none.
    """
    dtype, compiled, graphs = setting
    if compiled:
        torch._dynamo.reset()
    limit = torch._dynamo.config.patch(fail_on_recompile_limit_hit=True)
    with limit if compiled else nullcontext():
        if args.device == "cuda":
            built = [
                cuda_memory(lambda m=m: make_step(m, batch, "cuda", dtype, compiled, graphs))
                for m in models
            ]
            steps, memory = [s for s, _ in built], [m for _, m in built]
        else:
            steps = [make_step(m, batch, "cpu", dtype, compiled, graphs) for m in models]
            probes = [None if compiled else cpu_probe(v) for v in args.variants]
            memory = [p[str(batch)] if p else None for p in probes]
        warmup = args.warmup + (2 if compiled else 0)
        sync = torch.cuda.synchronize if args.device == "cuda" else lambda: None
        return interleaved(steps, warmup, args.iters, sync), memory


def settings(args: argparse.Namespace) -> list[tuple[str, bool, bool]]:
    """``(dtype, compiled, cuda graphs)`` to measure."""
    if args.device == "cpu":
        return [("fp32", False, False)] + ([("fp32", True, False)] if args.compile else [])
    out = [(d, False, False) for d in args.dtype]
    fast = "bf16" if "bf16" in args.dtype else args.dtype[-1]
    if args.compile:
        out.append((fast, True, False))
    if args.cuda_graphs:
        out.append((fast, False, True))
    return out


def run(args: argparse.Namespace) -> dict:
    rows, skipped = [], []
    a, b = args.variants
    for config_set in args.sets:
        for size in args.size:
            batches = [
                n
                for n in args.batch
                if args.device == "cuda" or args.no_skip or (config_set, size, n) not in CPU_SKIP
            ]
            skipped += [
                {"set": config_set, "size": size, "batch": n, "why": "too slow for the CPU budget"}
                for n in sorted(set(args.batch) - set(batches))
            ]
            if not batches:
                continue
            models = [build(v, config_set, size, args.device) for v in (a, b)]
            for batch in batches:
                for setting in settings(args):
                    dtype, compiled, graphs = setting
                    label = f"{config_set:<6}{size:>4}px batch {batch:<3}{dtype} " + (
                        "compiled " if compiled else "cuda-graphs " if graphs else ""
                    )
                    row = {"set": config_set, "size": size, "batch": batch, "dtype": dtype}
                    row |= {"compiled": compiled, "cuda_graphs": graphs}
                    try:
                        probe = partial(cpu_memory, config_set=config_set, size=size,
                                        batches=tuple(batches))  # fmt: skip
                        seconds, memory = measure(args, models, batch, setting, probe)
                    except Exception as e:  # out of memory, an unsupported setting: record, go on
                        rows.append({**row, "error": f"{type(e).__name__}: {e}"[:500]})
                        print(f"{label}FAILED: {rows[-1]['error']}", flush=True)
                        if args.device == "cuda":
                            torch.cuda.empty_cache()  # what the failed setting held
                        continue
                    for variant, model, sec, mem in zip(
                        (a, b), models, seconds, memory, strict=True
                    ):
                        row[variant] = {
                            "fps": round(batch / sec, 2),
                            "ms_per_frame": round(1000 * sec / batch, 2),
                            "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
                            "memory": mem,
                        }
                    row[f"time_ratio_{a}_over_{b}"] = round(seconds[0] / seconds[1], 3)
                    rows.append(row)
                    peaks = [f"{m['peak_MiB']:>6} MiB" if m else "   n/a MiB" for m in memory]
                    print(
                        f"{label}{a} {row[a]['fps']:>8.2f} fps {peaks[0]} | "
                        f"{b} {row[b]['fps']:>8.2f} fps {peaks[1]} | "
                        f"time ratio {seconds[0] / seconds[1]:.2f}",
                        flush=True,
                    )
            del models
    return {"rows": rows, "skipped": skipped}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--variants", nargs=2, default=["full", "tpsmm"])
    parser.add_argument("--sets", nargs="+", choices=tuple(SETS), default=list(SETS))
    parser.add_argument("--size", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--dtype", nargs="+", choices=tuple(DTYPES), default=list(DTYPES))
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--cuda-graphs", action="store_true", help="also time CUDA graphs")
    parser.add_argument("--iters", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--no-skip", action="store_true", help="run the slow CPU combinations")
    parser.add_argument("--out", type=Path, help="JSON path (default bench/results/...)")
    parser.add_argument("--probe", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        variant, config_set, size, *batches = args.probe
        print(json.dumps(probe_memory(variant, config_set, int(size), [int(n) for n in batches])))
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device here; nothing measured")
        return 0
    if args.device == "cpu" and (args.cuda_graphs or args.dtype != list(DTYPES)):
        print("note: --dtype and --cuda-graphs apply to --device cuda; CPU runs fp32")
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    result = run(args)
    for s in result["skipped"]:
        print(f"skipped {s['set']} {s['size']}px batch {s['batch']}: {s['why']} (--no-skip)")
    cpu = f"CPU {cpu_name()} ({os.cpu_count()} cores, {args.threads} torch threads)"
    report = {
        "device": torch.cuda.get_device_name() if args.device == "cuda" else cpu,
        "torch": torch.__version__,
        "threads": args.threads,
        "iters": args.iters,
        "seconds": round(time.perf_counter() - start, 1),
        **result,
    }
    suffix = "_gpu" if args.device == "cuda" else ""
    write_report(
        args.out or RESULTS / f"render_speed{suffix}.json", report, f" ({report['seconds']} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
