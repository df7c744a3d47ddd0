"""The CUDA code paths, checked without a GPU (issue 21).

No GPU is lent to CI, so each path a GPU user takes is exercised another way: reduced precision
under CPU autocast against float32 with tolerances (CPU autocast runs matmuls and convolutions
in bf16/fp16 as CUDA's does), device placement on the ``meta`` device or with CUDA reported
absent, and the serve configs checked as they would be on hosts with 0, 1 or 4 GPUs.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import importlib.util
import os
import shutil
import subprocess
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
import yaml
from standins import TINY_PGMM

from pgmm.checkpoint import WEIGHTS_NAME, DeviceError, load_weights
from pgmm.models.cmm import CMM, warp
from pgmm.models.config import PGMMConfig
from pgmm.models.dense_motion import DenseMotion
from pgmm.models.pgmm import PGMM, CheckpointError, SourceState
from pgmm.models.tps import TPS
from pgmm.pose.sequence import PoseSequence
from pgmm.training.common import load_scaler_state
from slp_pipeline.config import check_serve_config, fit_to_host, load_serve_config
from slp_pipeline.stages import PRECISIONS, PGMMRenderer, PGMMState, resolve_precision

REPO = Path(__file__).resolve().parents[1]
HALF = [torch.bfloat16, torch.float16]
SIZE = 128  # frame side the pixel tolerances refer to
PIXEL = SIZE / 2  # grid coordinates span [-1, 1]: one unit is SIZE / 2 pixels


def _keypoints(batch: int, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Driving keypoints and source keypoints a little away from them (a plausible motion)."""
    g = torch.Generator().manual_seed(seed)
    driving = torch.rand(batch, count, 2, generator=g) * 1.6 - 0.8
    return driving, driving + 0.05 * torch.randn(batch, count, 2, generator=g)


def _near_identity(batch: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    params = torch.eye(2, 3) + 0.05 * torch.randn(batch, 2, 3, generator=g)
    return torch.cat([params, torch.tensor([[[0.0, 0.0, 1.0]]]).expand(batch, 1, 3)], dim=1)


# ----------------------------------------------------------------------------- warp grids
@pytest.mark.parametrize("dtype", HALF)
def test_tps_fit_returns_float32_for_half_precision_keypoints(dtype: torch.dtype) -> None:
    """Keypoints made under autocast arrive in bf16/fp16; the float64 solution must not be
    rounded to their 8/11-bit mantissa on the way out."""
    driving, source = _keypoints(2, 10, seed=0)
    tps = TPS.fit(driving.view(2, 2, 5, 2).to(dtype), source.view(2, 2, 5, 2).to(dtype))
    assert tps.weights.dtype == tps.affine.dtype == tps.control_points.dtype == torch.float32


@pytest.mark.parametrize("dtype", HALF)
def test_dense_motion_grids_are_exact_under_autocast(dtype: torch.dtype) -> None:
    """The deformation grids (identity, background affine, TPS) under autocast stay within
    0.05 px of float32 at 128x128 (in bf16 they were up to ~0.5 px off)."""
    model = DenseMotion(num_tps=4, points_per_tps=5, block_expansion=8, max_features=32,
                        num_blocks=3).eval()  # fmt: skip
    driving, source = _keypoints(2, 20, seed=1)
    args = (torch.rand(2, 3, SIZE, SIZE), driving, source, _near_identity(2, seed=2))
    with torch.no_grad():
        exact = model(*args)
        with torch.autocast("cpu", dtype=dtype):
            half = model(*args)
    assert half.deformations.dtype == torch.float32
    assert half.optical_flow.dtype == torch.float32
    error = (half.deformations - exact.deformations).abs().max().item() * PIXEL
    assert error <= 0.05, f"warp grids {error:.3f} px off float32"


def _animate_fp32_and_half(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, list]:
    """A tiny PGMM's ``animate`` in float32 and under CPU autocast, from the same float32 source
    encoding (the renderer caches it that way): ``(frames, half frames, [grids, half grids])``
    with grids ``(B, N, h, w, 2)`` ordered ``[identity, background, tps_1 ..]``."""
    torch.manual_seed(0)
    model = PGMM(PGMMConfig(variant="full", image_size=SIZE, **TINY_PGMM)).eval()
    grids: list[torch.Tensor] = []
    model.dense_motion.register_forward_hook(lambda m, i, out: grids.append(out.deformations))
    maps = SIZE // model.config.heatmap_stride
    source_maps, driving_maps = torch.rand(1, 36, maps, maps), torch.rand(3, 36, maps, maps)
    state = model.encode_source(torch.rand(1, 3, SIZE, SIZE), source_maps)
    # Untrained, the detector saturates its tanh (every point in a corner, every TPS degenerate)
    # and the zero-initialised driving head predicts no motion: give both something to do.
    state = dataclasses.replace(state, kp_source=_keypoints(1, 20, seed=3)[0])
    torch.nn.init.normal_(model.driving_head.mlp[-1].weight, std=0.01)
    exact = model.animate(state, driving_maps)
    with torch.autocast("cpu", dtype=dtype):
        half = model.animate(state, driving_maps)
    return exact, half, grids


@pytest.mark.parametrize("dtype", HALF)
def test_pgmm_animate_under_autocast_keeps_its_tps_grids(dtype: torch.dtype) -> None:
    """The serving path under autocast: TPS grids within 0.05 px of float32 at 128x128 (0.3 px
    in bf16 before), frames close to float32."""
    exact, half, grids = _animate_fp32_and_half(dtype)
    error = (grids[1][:, 2:] - grids[0][:, 2:]).abs().max().item() * PIXEL
    assert error <= 0.05, f"TPS grids {error:.3f} px off float32"
    assert (half.float() - exact).abs().mean().item() < 0.02


def test_pgmm_background_grid_under_bf16_autocast() -> None:
    """The driving head's background affine stays float32 under autocast (bf16 rounding of the
    MLP output was ~0.16 px at 128x128)."""
    _, _, grids = _animate_fp32_and_half(torch.bfloat16)
    error = (grids[1][:, 1] - grids[0][:, 1]).abs().max().item() * PIXEL
    assert error <= 0.05, f"background grid {error:.3f} px off float32"


def test_cmm_flow_is_exact_under_bf16_autocast() -> None:
    """CMM's per-scale flow (Conv-Flow softmax over the deformations) under autocast stays
    within 0.05 px of float32 at 128x128 (bf16 logits and weights put it ~0.2 px off)."""
    torch.manual_seed(0)
    cmm = CMM(motion_channels=16, num_deformations=6).eval()
    torch.nn.init.normal_(cmm.conv_flow.weight, std=0.1)  # weights that actually mix the grids
    g = torch.Generator().manual_seed(4)
    axis = torch.linspace(-1, 1, 32)
    identity = torch.stack(torch.meshgrid(axis, axis, indexing="xy"), dim=-1)
    deformations = identity + 0.1 * torch.randn(2, 6, 32, 32, 2, generator=g)
    x, motion = torch.rand(2, 8, SIZE, SIZE, generator=g), torch.rand(2, 16, 32, 32, generator=g)
    with torch.no_grad():
        _, exact, _ = cmm(x, motion, deformations)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            _, half, _ = cmm(x, motion, deformations)
    assert half.dtype == torch.float32
    error = (half - exact).abs().max().item() * PIXEL
    assert error <= 0.05, f"CMM flow {error:.3f} px off float32"


def test_warp_samples_half_features_at_the_float32_grid() -> None:
    """bf16 features are sampled where the float32 grid points, not at its bf16 rounding, and
    come back in bf16."""
    g = torch.Generator().manual_seed(5)
    features = torch.rand(1, 4, SIZE, SIZE, generator=g).to(torch.bfloat16)
    grid = torch.rand(1, SIZE, SIZE, 2, generator=g) * 1.8 - 0.9
    warped = warp(features, grid)
    assert warped.dtype == torch.bfloat16
    assert torch.equal(warped, warp(features.float(), grid).to(torch.bfloat16))


# ----------------------------------------------------------------------------- checkpoints
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = PGMM(PGMMConfig(variant="full", image_size=SIZE, **TINY_PGMM))
    return model.save_pretrained(tmp_path_factory.mktemp("ckpt") / "full")


def test_from_pretrained_places_the_model_on_the_requested_device(checkpoint: Path) -> None:
    """``meta`` stands in for a GPU: the weights are read on the CPU and the model moved."""
    model = PGMM.from_pretrained(checkpoint, map_location="meta")
    assert {p.device.type for p in model.parameters()} == {"meta"}


def test_a_missing_gpu_is_a_device_error_not_a_corrupt_checkpoint(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match="no usable CUDA device") as info:
        PGMM.from_pretrained(checkpoint, map_location="cuda")
    assert not isinstance(info.value, CheckpointError)
    with pytest.raises(DeviceError, match="unknown device"):
        PGMM.from_pretrained(checkpoint, map_location="gpu")


def test_bad_bytes_are_still_an_unreadable_checkpoint(checkpoint: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(checkpoint, broken)
    (broken / WEIGHTS_NAME).write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match=f"cannot read {WEIGHTS_NAME}"):
        PGMM.from_pretrained(broken)
    with pytest.raises(CheckpointError, match=f"cannot read {WEIGHTS_NAME}"):
        load_weights(PGMM(PGMMConfig(variant="full", image_size=SIZE, **TINY_PGMM)), broken)


# ----------------------------------------------------------------------------- resume
def test_scaler_state_resumes_across_devices() -> None:
    """A CPU run (AMP off) resumed with AMP on, and back. CPU GradScalers stand in for CUDA's:
    an enabled one refuses ``{}`` the same way."""
    cpu_run = torch.amp.GradScaler("cuda", enabled=False).state_dict()
    assert cpu_run == {}
    gpu_run = torch.amp.GradScaler("cpu", enabled=True)
    load_scaler_state(gpu_run, cpu_run)  # a fresh scale, not "state dict is empty"
    assert gpu_run.get_scale() == torch.amp.GradScaler("cpu").get_scale()
    amp_run = torch.amp.GradScaler("cpu", init_scale=1024.0).state_dict()
    load_scaler_state(torch.amp.GradScaler("cuda", enabled=False), amp_run)  # back to a CPU
    again = torch.amp.GradScaler("cpu", enabled=True)
    load_scaler_state(again, amp_run)
    assert again.get_scale() == 1024.0


# ----------------------------------------------------------------------------- serving
def _serve_config(name: str) -> dict:
    return yaml.safe_load((REPO / "configs" / "serve" / name).read_text(encoding="utf-8"))


def _renderer(data: dict) -> dict:
    return next(d for d in data["applications"][0]["deployments"] if d["name"] == "Renderer")


@pytest.mark.parametrize("name", ["cpu.yaml", "gpu.yaml"])
@pytest.mark.parametrize("gpus", [0, 1, 4])
def test_shipped_serve_configs_pass_the_config_check(name: str, gpus: int) -> None:
    """Both configs name shipped model folders and fit hosts with 0, 1 and 4 GPUs."""
    config = check_serve_config(_serve_config(name), REPO, gpus=gpus)
    assert config.device == "auto"


def test_gpu_yaml_scales_renderer_replicas_with_the_gpus() -> None:
    data = _serve_config("gpu.yaml")
    for gpus, replicas in ((1, 2), (4, 8)):
        renderer = _renderer(fit_to_host(data, gpus))
        assert renderer["ray_actor_options"]["num_gpus"] == 0.5
        assert renderer["autoscaling_config"]["max_replicas"] == replicas
    cpu_host = _renderer(fit_to_host(data, 0))  # device auto: the CPU, and no GPU reserved
    assert cpu_host["ray_actor_options"]["num_gpus"] == 0
    fitted = fit_to_host(data, 1)
    assert fit_to_host(fitted, 1) == fitted  # idempotent
    assert _renderer(data)["autoscaling_config"]["max_replicas"] == 8  # the input is untouched


def test_cpu_yaml_shares_a_gpu_that_is_there() -> None:
    """cpu.yaml names no num_gpus: with device auto its replicas share the host's GPU."""
    renderer = _renderer(fit_to_host(_serve_config("cpu.yaml"), 1))
    assert renderer["ray_actor_options"]["num_gpus"] == 0.5  # 2 replicas on one GPU


def _with(data: dict, args: dict | None = None, renderer: dict | None = None) -> dict:
    data = copy.deepcopy(data)
    data["applications"][0]["args"].update(args or {})
    _renderer(data)["ray_actor_options"].update(renderer or {})
    return data


def test_config_check_refuses_settings_that_cannot_work() -> None:
    gpu = _serve_config("gpu.yaml")
    no_share = _with(gpu, {"device": "cuda"})
    del _renderer(no_share)["ray_actor_options"]["num_gpus"]
    with pytest.raises(ValueError, match="reserves no GPU"):
        fit_to_host(no_share, gpus=1)
    with pytest.raises(ValueError, match="no CUDA GPU"):
        fit_to_host(_with(gpu, {"device": "cuda"}), gpus=0)
    with pytest.raises(ValueError, match="would sit idle"):
        fit_to_host(_with(gpu, {"device": "cpu"}), gpus=1)
    with pytest.raises(ValueError, match="torch_threads 4 is more than"):
        fit_to_host(_with(gpu, {"torch_threads": 4}), gpus=1)
    with pytest.raises(ValueError, match="reserves 2 GPUs"):
        fit_to_host(_with(gpu, renderer={"num_gpus": 2}), gpus=1)
    for bad in ({"device": "gpu"}, {"precision": "fp8"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            fit_to_host(_with(gpu, bad), gpus=1)


def test_config_check_names_missing_model_folders() -> None:
    data = _serve_config("gpu.yaml")
    data["applications"][0]["args"]["renderers"]["full"] = "models/pgmm/full"  # not shipped
    with pytest.raises(FileNotFoundError, match="renderer 'full'"):
        check_serve_config(data, REPO, gpus=1)


def test_load_serve_config_fits_and_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(_serve_config("gpu.yaml")))
    assert _renderer(load_serve_config(path, gpus=1))["autoscaling_config"]["max_replicas"] == 2
    path.write_text(yaml.safe_dump(_with(_serve_config("gpu.yaml"), {"device": "cuda"})))
    with pytest.raises(ValueError, match=f"{path}: device cuda, but this host has no CUDA"):
        load_serve_config(path, gpus=0)


@pytest.mark.parametrize(
    ("precision", "device", "capability", "dtype"),
    [
        ("auto", "cpu", None, torch.float32),
        ("auto", "cuda", (9, 0), torch.bfloat16),  # H100/H200
        ("auto", "cuda", (8, 0), torch.bfloat16),  # A100
        ("auto", "cuda", (7, 5), torch.float16),  # T4
        ("auto", "cuda", (7, 0), torch.float16),  # V100
        ("bf16", "cuda", (7, 5), torch.bfloat16),  # asked for: given
        ("fp32", "cuda", (9, 0), torch.float32),
        ("fp16", "cpu", None, torch.float16),
    ],
)
def test_precision_follows_the_device(
    precision: str, device: str, capability: tuple[int, int] | None, dtype: torch.dtype
) -> None:
    assert resolve_precision(precision, torch.device(device), capability) == dtype


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_pgmm_renderer_renders_in_reduced_precision(precision: str) -> None:
    """The renderer's autocast path, on the CPU: frames within a grey level of float32 on
    average (measured: bf16 0.74, fp16 0.09)."""
    torch.manual_seed(0)
    model = PGMM(PGMMConfig(variant="full", image_size=64, **TINY_PGMM))
    exact, half = (PGMMRenderer("r", model, "cpu", precision=p) for p in ("fp32", precision))
    assert (exact.dtype, half.dtype) == (torch.float32, PRECISIONS[precision])
    source = model.encode_source(torch.rand(1, 3, 64, 64), torch.rand(1, 36, 16, 16))
    state = PGMMState(model, source)
    points = np.random.default_rng(0).uniform(0.2, 0.8, (2, 133, 3)).astype(np.float32)
    pose = PoseSequence(points, 25.0, "wholebody133", 64, 64)
    diff = exact.render([state], [pose])[0].astype(float) - half.render([state], [pose])[0]
    assert 0 < abs(diff).mean() < 1  # 0 would mean autocast never ran


# ----------------------------------------------------------------------------- benchmark
def _render_speed(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """bench/render_speed.py with tiny models (its logic, not its numbers, is under test)."""
    spec = importlib.util.spec_from_file_location("render_speed", REPO / "bench/render_speed.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    def tiny(variant: str, config_set: str, size: int, device: str) -> PGMM:
        return PGMM(PGMMConfig(variant=variant, image_size=size, **TINY_PGMM)).eval()

    monkeypatch.setattr(bench, "build", tiny)
    return bench


def _bench_args(**kw: object) -> argparse.Namespace:
    args = dict(device="cpu", variants=["full", "tpsmm"], sets=["small"], size=[64], batch=[1],
                dtype=["fp32"], compile=False, cuda_graphs=False, iters=1, warmup=0,
                no_skip=False)  # fmt: skip
    return argparse.Namespace(**{**args, **kw})


def _fake_probe(variant: str, config_set: str, size: int, batches: tuple[int, ...]) -> dict:
    """Stands in for the fresh-process memory probe (seconds per model)."""
    return {str(b): {"peak_MiB": 1, "over_model_MiB": 0} for b in batches}


def test_bench_records_an_out_of_memory_setting_and_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A memory measurement that runs out of memory is that setting's error, not the run's."""
    bench = _render_speed(monkeypatch)

    def memory(variant: str, config_set: str, size: int, batches: tuple[int, ...]) -> dict:
        if size == 64:
            raise torch.OutOfMemoryError("out of memory (simulated)")
        return _fake_probe(variant, config_set, size, batches)

    monkeypatch.setattr(bench, "cpu_memory", memory)
    rows = bench.run(_bench_args(size=[64, 128], batch=[1, 2]))["rows"]
    assert [(r["size"], r["batch"], "error" in r) for r in rows] == [
        (64, 1, True), (64, 2, True), (128, 1, False), (128, 2, False),
    ]  # fmt: skip
    assert "OutOfMemoryError" in rows[0]["error"]
    assert rows[2]["full"]["memory"] == {"peak_MiB": 1, "over_model_MiB": 0}


def test_bench_compiles_each_model_and_batch_afresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.compile caches on ``PGMM.animate`` for every model and batch together: shared
    across rows it would pass the recompile limit and run eager unnoticed. With the limit at 2
    and made an error, every compiled row must still be compiled."""
    bench = _render_speed(monkeypatch)

    def animate(self: PGMM, state: SourceState, heatmaps: torch.Tensor) -> torch.Tensor:
        # What dynamo guards on in the real one: the model's config and the batch shape.
        scale = 2.0 if self.config.variant == "full" else 1.0
        return heatmaps[:, :3] * scale + state.image.mean()  # PGMM itself: ~10 s a model

    monkeypatch.setattr(PGMM, "animate", animate)
    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", 2)
    monkeypatch.setattr(torch._dynamo.config, "fail_on_recompile_limit_hit", True)
    monkeypatch.setattr(bench, "cpu_memory", _fake_probe)
    rows = bench.run(_bench_args(size=[64, 128], batch=[1, 2], compile=True))["rows"]
    compiled = [r for r in rows if r["compiled"]]
    assert len(compiled) == 4 and not [r["error"] for r in rows if "error" in r]
    assert all(r["full"]["memory"] is None for r in compiled)  # the probe runs eager only


def test_gpu_smoke_script_says_no_cuda_and_exits_0(tmp_path: Path) -> None:
    """Without a GPU the smoke check (make gpu-check) is a no-op, not a failure."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # also on a GPU host: the no-GPU path
    done = subprocess.run(
        ["bash", str(REPO / "scripts/gpu_smoke.sh"), str(tmp_path / "out")],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "no CUDA device" in done.stdout and not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- text2pose
class _CharTokenizer:
    """Just enough of a tokenizer for :class:`TextToGloss` to build and encode a batch."""

    def __len__(self) -> int:
        return 40

    def encode(self, text: str) -> list[int]:
        return [4 + ord(c) % 36 for c in text]


def test_t2g_batches_are_made_on_the_model_device() -> None:
    """``translate`` on a GPU fed ``generate`` host tensors; ``meta`` stands in for the GPU."""
    from text2pose.t2g import T2GConfig, TextToGloss

    config = T2GConfig(d_model=16, layers=1, heads=2, ffn_dim=32, text_vocab_size=40)
    model = TextToGloss(config, _CharTokenizer(), _CharTokenizer()).to("meta")
    batch = model.encode_text(["guten morgen", "regen"])
    assert {v.device.type for v in batch.values()} == {"meta"}
    assert batch["input_ids"].shape == (2, 12)
