"""``slp export onnx``: the PGMM renderer as ONNX graphs (see :mod:`pgmm.export`).

Writes ``OUT`` (the per-frame animate graph) and ``OUT``'s ``.source.onnx`` sibling (the
per-signer encoder), then -- where ONNX Runtime is installed -- runs both on random inputs and
prints the largest difference from PyTorch, so a broken export is caught here rather than in
whatever consumes the file.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

#: Frames compared against PyTorch after the export.
CHECK_FRAMES = 2
#: Largest acceptable difference (frames are in [0, 1]).
TOLERANCE = 1e-3


def register(sub: argparse._SubParsersAction) -> None:
    export = sub.add_parser("export", help="export models for other runtimes")
    formats = export.add_subparsers(dest="format", required=True)
    onnx = formats.add_parser(
        "onnx",
        help="the PGMM renderer as ONNX (animate graph + source-encoder graph)",
        description="Export a PGMM checkpoint's renderer (source encoder + per-frame animate "
        "path) to ONNX and check it against PyTorch with ONNX Runtime.",
    )
    onnx.add_argument("--checkpoint", type=Path, required=True, help="PGMM checkpoint folder")
    onnx.add_argument("--out", type=Path, required=True, help="animate graph, e.g. renderer.onnx")
    onnx.add_argument("--opset", type=int, default=18, help="ONNX opset (>= 18)")
    onnx.add_argument(
        "--batch", type=int, help="fixed frames per call (default: a dynamic frame axis)"
    )
    onnx.set_defaults(func=run_export_onnx)


def run_export_onnx(args: argparse.Namespace) -> int:
    missing = [m for m in ("onnx", "onnxscript") if importlib.util.find_spec(m) is None]
    if missing:  # an ImportError is the CLI's one-line error, exit code 2
        raise ImportError(f"ONNX export needs {' and '.join(missing)}: pip install -e '.[export]'")
    from pgmm.export import OnnxRenderer, export_onnx, max_difference
    from pgmm.models.pgmm import PGMM

    model = PGMM.from_pretrained(args.checkpoint)
    graph, source_graph = export_onnx(model, args.out, args.batch, args.opset)
    print(f"wrote {graph} (animate) and {source_graph} (source encoder)")
    if importlib.util.find_spec("onnxruntime") is None:
        print("onnxruntime is not installed: the export was not checked against PyTorch")
        return 0
    diff = max_difference(model, OnnxRenderer(graph), args.batch or CHECK_FRAMES)
    print(f"ONNX Runtime vs PyTorch: max |difference| {diff:.2e} (tolerance {TOLERANCE:g})")
    if diff > TOLERANCE:
        print("slp: error: the exported graph does not match the model", file=sys.stderr)
        return 1
    return 0
