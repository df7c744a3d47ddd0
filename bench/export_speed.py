"""Benchmark: the exported renderer in ONNX Runtime (CPU) vs the same model in PyTorch.

Both run the serving path -- the per-frame animate graph on a cached source state (see
:mod:`pgmm.export`) -- for the ``*-small`` configs at 128^2, batch 1 and 16, one thread each,
timed interleaved (torch, ORT, torch, ORT, ...) so a shared machine's load hits both alike.
Also reports the largest difference between the two outputs.

Needs the ``export`` extra (``pip install -e '.[export]'``); without it, says so and exits 0.

Run: ``python bench/export_speed.py [--variants full tpsmm] [--batch 1 16] [--iters 5]``.
Writes ``bench/results/export_speed.json``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

from pgmm.export import export_extra_problem
from pgmm.models.config import PGMMConfig
from pgmm.models.pgmm import PGMM

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, ROOT, interleaved, write_report  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", default=["full", "tpsmm"])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args()
    problem = export_extra_problem()
    if problem:
        print(f"skipped: {problem}")
        return 0
    import onnxruntime

    from pgmm.export import OnnxRenderer, example_inputs, export_onnx

    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_export_") as tmp:
        for variant in args.variants:
            cfg = PGMMConfig.from_yaml(ROOT / "configs" / "pgmm" / f"{variant}-small.yaml")
            torch.manual_seed(0)
            model = PGMM(cfg).eval()
            start = time.perf_counter()
            path, _ = export_onnx(model, Path(tmp) / f"{variant}.onnx")
            export_s = time.perf_counter() - start
            ort = OnnxRenderer(path, threads=1)
            for batch in args.batch:
                source, source_maps, driving = example_inputs(model, batch)
                state = model.encode_source(source, source_maps)
                ort_state = ort.encode_source(source.numpy(), source_maps.numpy())
                torch_call = partial(model.animate, state, driving)
                ort_call = partial(ort.animate, ort_state, driving.numpy())
                diff = np.abs(ort_call() - torch_call().numpy()).max()
                seconds = interleaved([torch_call, ort_call], args.warmup, args.iters)
                row = {
                    "variant": f"{variant}-small",
                    "size": cfg.image_size,
                    "batch": batch,
                    "torch_fps": round(batch / seconds[0], 2),
                    "onnxruntime_fps": round(batch / seconds[1], 2),
                    "speedup_ort_over_torch": round(seconds[0] / seconds[1], 3),
                    "max_abs_diff": float(f"{diff:.3g}"),
                    "export_s": round(export_s, 1),
                }
                rows.append(row)
                print(
                    f"{row['variant']:<12}{row['size']:>4}px batch {batch:<3} torch "
                    f"{row['torch_fps']:>7.2f} fps | onnxruntime {row['onnxruntime_fps']:>7.2f} "
                    f"fps | ORT speed-up {row['speedup_ort_over_torch']:.2f} | max diff {diff:.1e}",
                    flush=True,
                )
    report = {
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "threads": 1,
        "iters": args.iters,
        "rows": rows,
    }
    write_report(RESULTS / "export_speed.json", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
