"""ONNX export of the PGMM renderer (``slp export onnx``) and the solver that makes it possible.

The export tests need the ``export`` extra (onnx, onnxscript, onnxruntime) and are skipped
without it; the solver test always runs, because training never exercises that code path.
"""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
from tiny import TINY_PGMM

from pgmm.export import export_extra_problem
from pgmm.models.config import PGMMConfig
from pgmm.models.pgmm import PGMM
from pgmm.models.tps import TPS, solve_unrolled
from slp_pipeline.cli import export as cli_export

EXPORT_PROBLEM = export_extra_problem()
needs_ort = pytest.mark.skipif(EXPORT_PROBLEM is not None, reason=str(EXPORT_PROBLEM))


def _run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    cli_export.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_unrolled_solve_matches_linalg_solve():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(3, 4, 8, 8, generator=gen, dtype=torch.float64)
    b = torch.randn(3, 4, 8, 2, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(solve_unrolled(a, b), torch.linalg.solve(a, b))


def test_unrolled_solve_on_tps_systems_with_coincident_points(monkeypatch):
    """The TPS systems have a ~1e-6 diagonal (needs pivoting) and collapse when points coincide,
    as an untrained keypoint detector produces."""
    gen = torch.Generator().manual_seed(1)
    driving = torch.rand(2, 5, 5, 2, generator=gen) * 2 - 1
    driving[0, 0, 1] = driving[0, 0, 0]
    source = torch.rand(2, 5, 5, 2, generator=gen) * 2 - 1
    expected = TPS.fit(driving, source)
    monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: True)
    got = TPS.fit(driving, source)
    points = torch.rand(2, 5, 64, 2, generator=gen) * 2 - 1
    torch.testing.assert_close(got.warp_points(points), expected.warp_points(points))


@needs_ort
@pytest.mark.parametrize(
    "variant,batch", [("full", None), pytest.param("tpsmm", 3, marks=pytest.mark.slow)]
)
def test_export_matches_torch(tmp_path, variant, batch):
    from pgmm.export import OnnxRenderer, example_inputs, source_graph_path

    torch.manual_seed(0)
    model = PGMM(PGMMConfig.from_dict({**TINY_PGMM, "variant": variant})).eval()
    checkpoint = model.save_pretrained(tmp_path / "ckpt")
    out = tmp_path / "renderer.onnx"
    argv = ["export", "onnx", "--checkpoint", str(checkpoint), "--out", str(out)]
    assert _run_cli(argv + (["--batch", str(batch)] if batch else [])) == 0
    assert out.is_file() and source_graph_path(out).is_file()

    renderer = OnnxRenderer(out)
    # A dynamic frame axis must accept other lengths than the traced one (2), 1 included.
    for frames in [batch] if batch else [1, 5]:
        source, source_maps, driving = example_inputs(model, frames, seed=7)
        expected = model.animate(model.encode_source(source, source_maps), driving).numpy()
        state = renderer.encode_source(source.numpy(), source_maps.numpy())
        got = renderer.animate(state, driving.numpy())
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() < 1e-3


@needs_ort
def test_export_refuses_opset_below_18(tmp_path):
    model = PGMM(PGMMConfig.from_dict({**TINY_PGMM, "variant": "tpsmm"}))
    checkpoint = model.save_pretrained(tmp_path / "ckpt")
    argv = ["export", "onnx", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "r.onnx")]
    with pytest.raises(ValueError, match="opset 17"):
        _run_cli(argv + ["--opset", "17"])
