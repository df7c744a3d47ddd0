"""PGMM: shapes per variant, gradients, CMM/PFM against hand-computed references, checkpoints."""

from __future__ import annotations

import json
import math
import platform
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tiny import TINY_PGMM

from pgmm.allocator import keep_freed_memory
from pgmm.checkpoint import INT8_SCALE_SUFFIX, dequantize_int8, quantize_int8
from pgmm.losses import align_loss
from pgmm.models.cmm import CMM
from pgmm.models.config import VARIANTS, PGMMConfig
from pgmm.models.pfm import PFM
from pgmm.models.pgmm import PGMM, CheckpointError
from pgmm.models.pose_estimator import HRNetLite, HRNetLiteConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "pgmm"
SHIPPED = Path(__file__).resolve().parents[1] / "models" / "pgmm"
TINY = TINY_PGMM


def tiny(variant: str, size: int = 128, **kw) -> PGMM:
    torch.manual_seed(0)
    return PGMM(PGMMConfig(variant=variant, image_size=size, **{**TINY, **kw}))


def inputs(size: int, batch: int = 2):
    g = torch.Generator().manual_seed(1)
    src = torch.rand(batch, 3, size, size, generator=g)
    drv = torch.rand(batch, 3, size, size, generator=g)
    heat = torch.rand(batch, 36, size // 4, size // 4, generator=g)
    return src, drv, heat


@pytest.mark.parametrize("size", [128, 256])
@pytest.mark.parametrize("variant", VARIANTS)
def test_output_shapes_per_variant(variant: str, size: int) -> None:
    model = tiny(variant, size).eval()
    src, drv, heat = inputs(size)
    with torch.no_grad():
        out = model(src, drv, heat, heat, with_align=True)
    pred = out.prediction
    assert pred.shape == (2, 3, size, size)
    assert pred.min() >= 0 and pred.max() <= 1
    assert [y.shape[-1] for y in out.Y_s] == [size // 8, size // 4, size // 2, size]
    assert out.Y_d is not None and [y.shape for y in out.Y_d] == [y.shape for y in out.Y_s]
    assert out.kp_driving_from_pose is not None and out.kp_driving_from_pose.shape == (2, 20, 2)
    frames = model.animate(model.encode_source(src[:1], heat[:1]), heat)
    assert frames.shape == (2, 3, size, size)


@pytest.mark.parametrize("variant", ["tpsmm", "pose_sum", "full"])
def test_gradients_reach_every_parameter(variant: str) -> None:
    model = tiny(variant).train()
    with torch.no_grad():  # zero-initialised heads (identity background) block gradients at init
        for p in model.parameters():
            p.add_(1e-3 * torch.randn_like(p))
    src, drv, heat = inputs(128)
    out = model(src, drv, heat, heat, dropout_p=0.0, with_align=True)
    # The outputs the training losses read: reconstruction, L_align (on Y_s; Y_d is its
    # detached target), the dense-motion flow (TPSMM's warp loss), background and keypoint-head
    # distillation. Which term must reach which part: tests/test_losses.py.
    assert out.Y_d is not None and out.kp_driving_from_pose is not None
    assert out.bg_from_pose is not None
    loss = (
        out.prediction.mean()
        + align_loss(out.Y_s, out.Y_d)
        + out.motion.optical_flow.mean()
        + out.kp_driving_from_pose.mean()
        + out.bg_from_pose.mean()
    )
    loss.backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead, dead


def test_cmm_matches_hand_computed_reference() -> None:
    torch.manual_seed(0)
    b, c, h, w = 1, 2, 4, 5
    x = torch.randn(b, c, h, w)
    cmm = CMM(motion_channels=3, num_deformations=2)
    with torch.no_grad():
        cmm.conv_flow.weight.zero_()
        cmm.conv_flow.bias.copy_(torch.tensor([0.0, 50.0]))  # softmax picks deformation 1
        cmm.conv_mask.weight.zero_()
        cmm.conv_mask.bias.fill_(math.log(0.25 / 0.75))  # O = 0.25 everywhere
    # Deformation 0: identity; deformation 1: sample one pixel to the right.
    ys = (2 * torch.arange(h) + 1) / h - 1
    xs = (2 * torch.arange(w) + 1) / w - 1
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)  # (h, w, 2)
    shifted = grid.clone()
    shifted[..., 0] += 2 / w
    deformations = torch.stack([grid, shifted])[None]  # (1, 2, h, w, 2)
    out, flow, occ = cmm(x, torch.randn(b, 3, h, w), deformations)
    # By hand: output pixel (i, j) takes x[i, j + 1]; the last column repeats (border).
    warped = torch.cat([x[..., 1:], x[..., -1:]], dim=-1)
    expected = torch.cat([x, 0.75 * warped], dim=1)
    assert torch.allclose(occ, torch.full_like(occ, 0.25))
    assert torch.allclose(out, expected, atol=1e-4)
    same, no_flow, no_occ = cmm(x, None, None)
    assert torch.equal(same, torch.cat([x, x], 1)) and no_flow is None and no_occ is None


def _conv_in_relu_reference(x: torch.Tensor, weights: dict[str, torch.Tensor]) -> torch.Tensor:
    """The paper's PFM convolution module from plain ops: 3x3 conv (stride 1), instance norm
    (per sample and channel over H, W; biased variance, eps 1e-5, affine), ReLU."""
    y = F.conv2d(x, weights["0.weight"], weights["0.bias"], stride=1, padding=1)
    mean = y.mean(dim=(2, 3), keepdim=True)
    var = ((y - mean) ** 2).mean(dim=(2, 3), keepdim=True)
    y = (y - mean) / torch.sqrt(var + 1e-5)
    y = y * weights["1.weight"][:, None, None] + weights["1.bias"][:, None, None]
    return torch.where(y > 0, y, torch.zeros_like(y))


def test_pfm_matches_an_independent_reference_of_eq_6() -> None:
    torch.manual_seed(0)
    c, cp, h, w = 4, 3, 3, 5  # h != w: a transposed token order would show
    pfm = PFM(channels=c, pose_channels=cp).eval()
    with torch.no_grad():  # non-trivial norm affines, so their wiring matters too
        for p in pfm.parameters():
            p.copy_(torch.randn_like(p))
    x, pose = torch.randn(2, c, h, w), torch.randn(2, cp, h, w)
    weights = {
        name: {k: v.detach().clone() for k, v in getattr(pfm, name).state_dict().items()}
        for name in ("query", "key", "value")
    }
    q = _conv_in_relu_reference(pose, weights["query"])  # Q(X_p), (B, C, h, w)
    k = _conv_in_relu_reference(x, weights["key"])  # K(X_in)
    v = _conv_in_relu_reference(x, weights["value"])  # V(X_in)
    expected = torch.empty_like(x)
    for b in range(x.shape[0]):
        # Tokens are pixels: row i of Q is pixel i = (r, col) in row-major order.
        qb, kb, vb = (t[b].reshape(c, h * w).T for t in (q, k, v))  # (hw, C) each
        scores = qb @ kb.T / math.sqrt(c)  # Eq. 6: / sqrt(C_in)
        attn = torch.exp(scores - scores.max(dim=1, keepdim=True).values)
        attn = attn / attn.sum(dim=1, keepdim=True)  # softmax over the keys
        expected[b] = x[b] + (attn @ vb).T.reshape(c, h, w)  # X_out = X_in + X'_in (Eq. 4)
    assert torch.allclose(pfm(x, pose), expected, atol=1e-5)


def test_save_load_round_trip_is_bit_exact(tmp_path: Path) -> None:
    model = tiny("full").eval()
    src, drv, heat = inputs(128, batch=1)
    model.save_pretrained(tmp_path / "ckpt")
    loaded = PGMM.from_pretrained(tmp_path / "ckpt", variant="full", image_size=128).eval()
    for (na, a), (nb, b) in zip(
        model.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert na == nb and torch.equal(a, b)
    with torch.no_grad():
        assert torch.equal(model.reconstruct(src, drv, heat), loaded.reconstruct(src, drv, heat))
    assert not list((tmp_path / "ckpt").glob(".*"))


def test_int8_folder_loads_within_half_a_step_per_channel(tmp_path: Path) -> None:
    """What ``scripts/ship_models.py --int8`` writes: every conv/linear weight within half a
    quantisation step of its output channel, vectors untouched, and a renderer that draws
    (nearly) the same frame."""
    torch.manual_seed(0)
    model = tiny("full").eval()
    folder = model.save_pretrained(tmp_path / "int8")
    state = load_file(str(folder / "model.safetensors"))
    quantized = quantize_int8(state)
    save_file(quantized, str(folder / "model.safetensors"))
    matrices = [k for k, v in state.items() if v.dim() >= 2 and v.is_floating_point()]
    assert matrices and all(quantized[k].dtype == torch.int8 for k in matrices)
    assert all(k + INT8_SCALE_SUFFIX in quantized for k in matrices)
    loaded = PGMM.from_pretrained(folder).eval()
    for key, value in loaded.state_dict().items():
        original = state[key]
        if key in matrices:
            step = original.flatten(1).abs().amax(1).clamp(min=1e-12) / 127
            shape = (-1,) + (1,) * (original.dim() - 1)
            assert ((value - original).abs() <= step.view(shape) / 2 + 1e-7).all(), key
        else:
            assert torch.equal(value, original), key
    src, drv, heat = inputs(128, batch=1)
    with torch.no_grad():
        a, b = model.reconstruct(src, drv, heat), loaded.reconstruct(src, drv, heat)
    assert (a - b).abs().mean() < 0.01


def test_int8_can_be_limited_to_some_modules() -> None:
    """``--int8-modules`` (the shipped full-small: motion estimation int8, image path float)."""
    state = tiny("full").state_dict()
    motion = ("dense_motion", "kp_detector", "bg_motion")
    quantized = quantize_int8(state, motion)
    for key, value in state.items():
        packed = value.dim() >= 2 and value.is_floating_point() and key.split(".")[0] in motion
        assert (quantized[key].dtype == torch.int8) == packed, key
        if not packed:
            assert torch.equal(quantized[key], value), key
    assert any(k.startswith("generator.") and v.dim() >= 2 for k, v in state.items())


def test_wrong_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    tiny("tpsmm").save_pretrained(tmp_path / "tpsmm")
    with pytest.raises(CheckpointError, match="'tpsmm'.*'full'"):
        PGMM.from_pretrained(tmp_path / "tpsmm", variant="full")
    with pytest.raises(CheckpointError, match="128x128.*256x256"):
        PGMM.from_pretrained(tmp_path / "tpsmm", image_size=256)
    # Weights of another variant under this config: names the mismatch.
    tiny("full").save_pretrained(tmp_path / "full")
    (tmp_path / "tpsmm" / "model.safetensors").replace(tmp_path / "full" / "model.safetensors")
    with pytest.raises(CheckpointError, match="does not match config.json"):
        PGMM.from_pretrained(tmp_path / "full")
    (tmp_path / "full" / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="cannot read model.safetensors"):
        PGMM.from_pretrained(tmp_path / "full")
    with pytest.raises(FileNotFoundError, match="PGMM directory not found"):
        PGMM.from_pretrained(tmp_path / "nowhere")
    (tmp_path / "tpsmm" / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="missing config.json"):
        PGMM.from_pretrained(tmp_path / "tpsmm")
    HRNetLite(HRNetLiteConfig(widths=(8, 16))).save_pretrained(tmp_path / "pe")
    with pytest.raises(CheckpointError, match="model_type is 'HRNetLite', expected PGMM"):
        PGMM.from_pretrained(tmp_path / "pe")


@pytest.mark.parametrize("folder", sorted(SHIPPED.iterdir()), ids=lambda p: p.name)
def test_shipped_checkpoints_load_bit_identically(folder: Path, tmp_path: Path) -> None:
    """The shipped folders load as they are, every tensor equal to the file's (stored in
    float16: widened exactly), also as folders written before ``model_type`` existed (issue 18),
    and round-trip."""
    config = json.loads((folder / "config.json").read_text())
    config.pop("model_type", None)
    old = tmp_path / "old"
    old.mkdir()
    (old / "config.json").write_text(json.dumps(config))
    (old / "model.safetensors").symlink_to(folder / "model.safetensors")
    assert PGMM.from_pretrained(folder).config == PGMM.from_pretrained(old).config
    model = PGMM.from_pretrained(old)
    stored = dequantize_int8(load_file(str(folder / "model.safetensors")))  # tpsmm-small: int8
    state = model.state_dict()
    assert state.keys() == stored.keys()
    assert all(torch.equal(state[k], stored[k].to(state[k].dtype)) for k in stored)
    model.save_pretrained(tmp_path / "again")
    assert json.loads((tmp_path / "again" / "config.json").read_text())["model_type"] == "PGMM"
    with safe_open(str(tmp_path / "again" / "model.safetensors"), "pt") as f:
        assert f.metadata() == {"format": "pt", "variant": model.config.variant}
    again = PGMM.from_pretrained(tmp_path / "again").state_dict()
    assert all(torch.equal(again[k], v) for k, v in state.items())


def test_input_validation() -> None:
    model = tiny("full").eval()
    src, drv, heat = inputs(128, batch=1)
    with pytest.raises(ValueError, match=r"\(B, 3, 128, 128\)"):
        model(F.interpolate(src, size=64), drv, heat)
    with pytest.raises(ValueError, match="needs driving heatmaps"):
        model(src, drv)
    with pytest.raises(ValueError, match="source pose"):
        model.animate(src, heat)
    with pytest.raises(ValueError, match="unknown PGMM variant"):
        PGMMConfig(variant="nope")
    with pytest.raises(ValueError, match="divisible"):
        PGMMConfig(image_size=100)


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_configs_parse(path: Path) -> None:
    cfg = PGMMConfig.from_yaml(path)
    assert path.stem.split("-")[0] == cfg.variant
    assert (cfg.fusion == "none") == (cfg.variant == "tpsmm")
    assert (cfg.loss_weights["align"] > 0) == (cfg.variant == "full")
    assert (cfg.loss_weights["pose_distance"] > 0) == (cfg.variant in ("pfm_pd", "full"))


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="mallopt is glibc's; elsewhere keep_freed_memory is a no-op",
)
def test_keep_freed_memory_sets_glibc_thresholds_once() -> None:
    # Its effect (page faults per animate call) is measured by bench/render_cpu.py; here: it
    # reaches glibc's mallopt and accepts both values, and a second call is a no-op.
    assert keep_freed_memory() is True
    assert keep_freed_memory() is True
