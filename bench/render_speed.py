"""Benchmark: PGMM ``full`` vs the ``tpsmm`` baseline renderer, side by side in one run.

Measures pose-driven rendering (``PGMM.animate`` with a cached source, the serving path) in
frames/s at 128^2 and 256^2, and the ratio of their per-frame times (goal: full/tpsmm <= 1.3).
On CUDA it also runs fp16/bf16 autocast and ``torch.compile``.

Run: ``python bench/render_speed.py [--configs full tpsmm] [--size 128 256] [--batch 1]
[--small]``. Prints a table and writes ``bench/results/render_speed.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from pgmm.models.config import PGMMConfig
from pgmm.models.pgmm import PGMM

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "pgmm"


def _build(
    variant: str, size: int, batch: int, device: str, dtype: str, compiled: bool, small: bool
):
    """A timed closure rendering ``batch`` frames from a cached source, plus the model."""
    cfg = PGMMConfig.from_yaml(CONFIGS / f"{variant}{'-small' if small else ''}.yaml")
    cfg = PGMMConfig.from_dict({**cfg.to_dict(), "image_size": size})
    model = PGMM(cfg).to(device).eval()
    src = torch.rand(1, 3, size, size, device=device)
    heat = torch.rand(batch, 36, size // 4, size // 4, device=device)
    state = model.encode_source(src, heat[:1])
    animate = torch.compile(model.animate) if compiled else model.animate
    amp = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(dtype)

    def step() -> None:
        ctx = torch.autocast(device_type=device, dtype=amp) if amp else nullcontext()
        with torch.no_grad(), ctx:
            animate(state, heat)

    return step, model


def measure_pair(
    variants: list[str],
    size: int,
    batch: int,
    device: str,
    dtype: str,
    compiled: bool,
    small: bool,
    warmup: int,
    iters: int,
) -> list[dict]:
    """Time the variants *interleaved* (A B A B ...), so machine load hits both alike."""
    built = [_build(v, size, batch, device, dtype, compiled, small) for v in variants]
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for step, _ in built:
        for _ in range(warmup):
            step()
    times: list[list[float]] = [[] for _ in built]
    for _ in range(iters):
        for k, (step, _) in enumerate(built):
            sync()
            start = time.perf_counter()
            step()
            sync()
            times[k].append(time.perf_counter() - start)
    rows = []
    for variant, (_, model), ts in zip(variants, built, times, strict=True):
        seconds = statistics.median(ts)
        rows.append(
            {
                "variant": variant,
                "size": size,
                "batch": batch,
                "device": device,
                "dtype": dtype,
                "compiled": compiled,
                "small": small,
                "fps": round(batch / seconds, 2),
                "ms_per_frame": round(1000 * seconds / batch, 2),
                "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
            }
        )
    if device == "cuda":
        rows[-1]["peak_MiB"] = round(torch.cuda.max_memory_allocated() / 2**20)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--configs", nargs=2, default=["full", "tpsmm"])
    parser.add_argument("--size", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--batch", type=int, nargs="+", default=[1])
    parser.add_argument("--small", action="store_true", help="use the *-small CPU configs")
    parser.add_argument("--iters", type=int, default=5)
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    settings = (
        [("cpu", "fp32", False)]
        if not cuda
        else [
            ("cuda", "fp32", False),
            ("cuda", "fp16", False),
            ("cuda", "bf16", False),
            ("cuda", "bf16", True),
        ]
    )
    rows = []
    for device, dtype, compiled in settings:
        for size in args.size:
            for batch in args.batch:
                warmup = 3 if compiled else 2
                pair = measure_pair(
                    args.configs,
                    size,
                    batch,
                    device,
                    dtype,
                    compiled,
                    args.small,
                    warmup,
                    args.iters,
                )
                ratio = pair[0]["ms_per_frame"] / pair[1]["ms_per_frame"]
                for r in pair:
                    r["ratio_vs_" + args.configs[1]] = round(ratio, 3)
                rows += pair
                print(
                    f"{device:<5}{dtype:<6}{'compiled' if compiled else '':<9}{size:>4}px "
                    f"batch {batch:<3} {args.configs[0]} {pair[0]['fps']:>8.2f} fps  "
                    f"{args.configs[1]} {pair[1]['fps']:>8.2f} fps  "
                    f"time ratio {ratio:.2f}",
                    flush=True,
                )
    device = (
        torch.cuda.get_device_name()
        if cuda
        else f"CPU ({os.cpu_count()} cores, "
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    )
    out = (
        Path(__file__).parent
        / "results"
        / ("render_speed_gpu.json" if cuda else "render_speed.json")
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"device": device, "results": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
