"""The pose estimator P_e: HRNetLite, its persistence and freezing, and the mmpose adapter."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from pgmm.data.synth.dataset import RenderedSynthSigner
from pgmm.models.mmpose_adapter import (
    INSTALL_HINT,
    MMPoseWholeBody,
    PixelAffine,
    full_frame_affines,
    resample,
    wholebody_heatmaps_to_pgmm36,
)
from pgmm.models.pose_estimator import (
    HRNETLITE_PRESETS,
    HRNetLite,
    HRNetLiteConfig,
    heatmap_loss,
    target_heatmaps,
)
from pgmm.pose.heatmaps import argmax_decode, render_heatmaps
from pgmm.pose.layout import NUM_PGMM, NUM_WHOLEBODY, PGMM36_FROM_WHOLEBODY

TINY = HRNetLiteConfig(widths=(8, 16), stem_width=8)
HAS_MMPOSE = importlib.util.find_spec("mmpose") is not None


def _tiny_model(seed: int = 0, config: HRNetLiteConfig = TINY) -> HRNetLite:
    torch.manual_seed(seed)
    return HRNetLite(config)


def _points(n: int, k: int, seed: int, margin: float = 0.1) -> torch.Tensor:
    """``(n, k, 3)`` confident normalised points away from the border."""
    g = torch.Generator().manual_seed(seed)
    xy = margin + (1 - 2 * margin) * torch.rand(n, k, 2, generator=g)
    return torch.cat([xy, torch.ones(n, k, 1)], dim=-1)


# --------------------------------------------------------------------------- HRNetLite
@pytest.mark.parametrize("preset", sorted(HRNETLITE_PRESETS))
@pytest.mark.parametrize("hw", [(128, 128), (256, 256), (96, 128)])
def test_output_shapes(preset: str, hw: tuple[int, int]) -> None:
    model = HRNetLite(HRNETLITE_PRESETS[preset]).eval()
    batch = 2 if preset == "cpu" else 1  # keeps the GPU-size preset quick on CPU
    images = torch.rand(batch, 3, *hw)
    with torch.no_grad():
        maps = model(images)
    assert maps.shape == (batch, NUM_PGMM, hw[0] // 4, hw[1] // 4)
    kp = model.keypoints(images)
    assert kp.shape == (batch, NUM_PGMM, 3)
    assert torch.isfinite(kp).all() and kp.min() >= 0 and kp.max() <= 1
    assert model.num_keypoints == NUM_PGMM and model.heatmap_stride == 4


@pytest.mark.parametrize("shape", [(1, 3, 30, 32), (1, 1, 32, 32), (3, 32, 32)])
def test_rejects_bad_images(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="images must be|not a multiple"):
        _tiny_model()(torch.rand(*shape))


@pytest.mark.parametrize(
    "kwargs",
    [{"widths": (16,)}, {"widths": (8, 16, 32, 64, 128)}, {"blocks_per_stage": 0}],
)
def test_config_validation(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="HRNetLite"):
        HRNetLiteConfig(**kwargs)


def test_target_heatmaps_and_loss() -> None:
    points = _points(2, NUM_PGMM, seed=1)
    points[0, 3, 2] = 0.0  # an occluded point
    target = target_heatmaps(points, (24, 32), sigma=2.0)
    assert target.shape == (2, NUM_PGMM, 24, 32)
    assert target[0, 3].abs().max() == 0  # occluded -> empty target
    decoded = argmax_decode(target)
    visible = points[..., 2] > 0
    assert torch.allclose(decoded[..., :2][visible], points[..., :2][visible], atol=1e-4)

    weight = points[..., 2]
    assert heatmap_loss(target, target, weight).item() == 0.0
    pred = target.clone()
    pred[0, 3] += 1.0  # error only where the weight is 0: ignored
    assert heatmap_loss(pred, target, weight).item() == 0.0
    pred[1, 0] += 1.0  # one weighted channel off by 1 everywhere
    assert heatmap_loss(pred, target, weight).item() == pytest.approx(1 / (2 * NUM_PGMM))
    with pytest.raises(ValueError, match="weight"):
        heatmap_loss(pred, target, weight[:, :5])


def test_overfits_synth_frames(shared_data: Path) -> None:
    """A small HRNetLite memorises 4 SynthSigner frames: the architecture, targets, loss and
    decoding fit together (a geometry slip of half a map pixel would show in the error)."""
    size, steps = 128, 150
    ds = RenderedSynthSigner("dev", size=size, max_videos=1, data_dir=shared_data)
    frames = ds.load_frames(0)
    poses = ds.load_poses(0).to_layout("pgmm36").data
    pick = np.linspace(0, len(frames) - 1, 4).round().astype(int)
    images = torch.from_numpy(frames[pick]).permute(0, 3, 1, 2).float() / 255
    points = torch.from_numpy(poses[pick])
    hm = size // 4
    target = target_heatmaps(points, hm, sigma=2.0)
    weight = points[..., 2]
    visible = weight > 0
    assert visible.sum() > 80  # most points are labelled visible

    def pixel_error(model: HRNetLite) -> float:
        kp = model.eval().keypoints(images)
        return ((kp[..., :2] - points[..., :2]) * hm).norm(dim=-1)[visible].mean().item()

    model = _tiny_model(seed=0, config=HRNETLITE_PRESETS["cpu"])
    untrained_error = pixel_error(model)
    model.train()
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(steps):
        loss = heatmap_loss(model(images), target, weight)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    error = pixel_error(model)
    drop = losses[0] / float(np.mean(losses[-10:]))
    confidence = model.keypoints(images)[..., 2][visible].mean().item()
    # Observed (150 steps, 3 s on 2 idle CPU cores): drop ~150x, error ~0.17 map px,
    # confidence ~0.94; untrained error ~10 map px.
    assert untrained_error > 3.0
    assert drop > 30, f"training loss fell only {drop:.1f}x"
    assert error < 0.5, f"mean keypoint error {error:.2f} heatmap px on the training frames"
    assert confidence > 0.7


def test_save_load_round_trip(tmp_path: Path) -> None:
    model = _tiny_model(seed=3)
    model.train()
    with torch.no_grad():  # move the BatchNorm running statistics off their defaults
        for _ in range(3):
            model(torch.rand(2, 3, 64, 64))
    model.eval()
    directory = model.save_pretrained(tmp_path / "pe")
    assert sorted(p.name for p in directory.iterdir()) == ["config.json", "model.safetensors"]
    loaded = HRNetLite.from_pretrained(directory)
    assert loaded.config == model.config and not loaded.training
    images = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(loaded(images), model(images))


def test_from_pretrained_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        HRNetLite.from_pretrained(tmp_path / "nowhere")

    good = _tiny_model().save_pretrained(tmp_path / "good")
    config = json.loads((good / "config.json").read_text())

    def variant(name: str, **changes) -> Path:
        directory = _tiny_model().save_pretrained(tmp_path / name)
        (directory / "config.json").write_text(json.dumps({**config, **changes}))
        return directory

    mismatch = variant("mismatch", widths=[8, 24])
    with pytest.raises(ValueError, match=r"mismatch.*does not match.*shape"):
        HRNetLite.from_pretrained(mismatch)
    more_branches = variant("more", widths=[8, 16, 32])
    with pytest.raises(ValueError, match=r"more.*missing"):
        HRNetLite.from_pretrained(more_branches)
    with pytest.raises(ValueError, match=r"unknown.*depth"):
        HRNetLite.from_pretrained(variant("unknown", depth=3))
    with pytest.raises(ValueError, match="model_type"):
        HRNetLite.from_pretrained(variant("type", model_type="ResNet"))
    (variant("json") / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"json.*not valid JSON"):
        HRNetLite.from_pretrained(tmp_path / "json")

    no_weights = variant("noweights")
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"noweights.*model.safetensors"):
        HRNetLite.from_pretrained(no_weights)


def test_freeze_keeps_gradient_to_the_image() -> None:
    """Frozen = no parameter updates, yet L_pd still reaches the generated image."""
    model = _tiny_model().freeze()
    assert model.frozen and not model.training
    model.train()  # e.g. the parent generator switching to training mode
    assert not model.training and not any(m.training for m in model.modules())
    running = [b.clone() for b in model.buffers()]

    image = torch.rand(2, 3, 64, 64, requires_grad=True)
    maps = model(image)
    assert maps.requires_grad  # forward is not wrapped in no_grad
    maps.square().sum().backward()
    assert image.grad is not None and image.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(running, model.buffers(), strict=True))


# --------------------------------------------------------------------------- mmpose adapter
def _wholebody_points(n: int, seed: int) -> torch.Tensor:
    return _points(n, NUM_WHOLEBODY, seed, margin=0.15)


def test_wholebody_to_pgmm36_selects_channels() -> None:
    points = _wholebody_points(2, seed=4)
    maps133 = render_heatmaps(points, (64, 48), sigma=2.0)
    same = wholebody_heatmaps_to_pgmm36(maps133, (64, 48))
    expected = render_heatmaps(points[:, PGMM36_FROM_WHOLEBODY], (64, 48), sigma=2.0)
    assert same.shape == (2, NUM_PGMM, 64, 48)
    assert torch.equal(same, expected)

    resized = wholebody_heatmaps_to_pgmm36(maps133, (32, 40))
    assert resized.shape == (2, NUM_PGMM, 32, 40)
    decoded = argmax_decode(resized)[..., :2]
    scale = torch.tensor([40.0, 32.0])
    error = ((decoded - points[:, PGMM36_FROM_WHOLEBODY, :2]) * scale).abs().max().item()
    assert error < 0.15  # target pixels: a plain resize keeps every peak in place

    with pytest.raises(ValueError, match="133"):
        wholebody_heatmaps_to_pgmm36(maps133[:, :100], (32, 32))


def test_resample_stretch_matches_interpolate() -> None:
    maps = torch.rand(2, 5, 16, 12)
    ours = resample(maps, (8, 6), PixelAffine.stretch((16, 12), (8, 6)))
    reference = torch.nn.functional.interpolate(
        maps, size=(8, 6), mode="bilinear", align_corners=False
    )
    assert torch.allclose(ours, reference, atol=1e-6)


def _mmpose_index_coords(points: torch.Tensor, frame_hw, input_wh, padding=1.25):
    """Where mmpose's top-down warp puts frame points, in *input pixel-index* coordinates,
    written the way mmpose states it: box centre/scale from ``[0, 0, W, H]``, aspect fixed."""
    h, w = frame_hw
    w_in, h_in = input_wh
    centre = np.array([w / 2, h / 2])
    scale = np.array([w, h], dtype=float) * padding
    aspect = w_in / h_in
    if scale[0] > scale[1] * aspect:
        scale[1] = scale[0] / aspect
    else:
        scale[0] = scale[1] * aspect
    frame_index = points[..., :2].double().numpy() * np.array([w, h]) - 0.5
    return (frame_index - centre) * (w_in / scale[0]) + np.array([w_in / 2, h_in / 2])


@pytest.mark.parametrize("frame_hw", [(256, 256), (240, 320), (320, 200)])
def test_full_frame_geometry_round_trip(frame_hw: tuple[int, int]) -> None:
    """Heatmaps laid out as mmpose's network would draw them map back onto the frame."""
    input_wh, heatmap_hw = (192, 256), (64, 48)
    out_hw = (frame_hw[0] // 4, frame_hw[1] // 4)
    points = _wholebody_points(2, seed=5)
    index = torch.from_numpy(_mmpose_index_coords(points, frame_hw, input_wh))
    # MSRAHeatmap: heatmap index = input index / stride; our map coordinate = index + 0.5.
    stride = input_wh[0] / heatmap_hw[1]
    hm_xy = (index / stride + 0.5) / torch.tensor([heatmap_hw[1], heatmap_hw[0]])
    maps133 = render_heatmaps(torch.cat([hm_xy.float(), points[..., 2:]], -1), heatmap_hw, 1.5)

    from_input, from_output = full_frame_affines(frame_hw, input_wh, heatmap_hw, out_hw)
    maps = wholebody_heatmaps_to_pgmm36(maps133, out_hw, from_output)
    assert maps.shape == (2, NUM_PGMM, *out_hw)
    decoded = argmax_decode(maps)[..., :2]
    scale = torch.tensor([out_hw[1], out_hw[0]], dtype=torch.float32)
    error = (decoded - points[:, PGMM36_FROM_WHOLEBODY, :2]) * scale  # output px
    # No systematic shift (half a frame pixel would be 0.125 output px) ...
    assert error.mean(dim=(0, 1)).abs().max().item() < 0.06, error.mean(dim=(0, 1))
    # ... and per point only the scatter of decoding a bilinearly upsampled Gaussian.
    assert error.abs().max().item() < 0.6

    # The input warp: a blob drawn in the frame lands where mmpose's warp puts it.
    blob = render_heatmaps(points[:1, :3], frame_hw, sigma=4.0)  # (1, 3, H, W) as an image
    warped = resample(blob, (input_wh[1], input_wh[0]), from_input)
    found = argmax_decode(warped)[0, :, :2].double() * torch.tensor(input_wh).double()
    expected = index[0, :3] + 0.5
    assert (found - expected).abs().max().item() < 0.1


def test_mmpose_adapter_checks_paths(tmp_path: Path) -> None:
    config = tmp_path / "hrnet.py"
    with pytest.raises(FileNotFoundError, match="config not found"):
        MMPoseWholeBody(config, tmp_path / "w.pth")
    config.write_text("")
    with pytest.raises(FileNotFoundError, match=r"checkpoint not found.*w\.pth"):
        MMPoseWholeBody(config, tmp_path / "w.pth")


@pytest.mark.skipif(HAS_MMPOSE, reason="mmpose is installed")
def test_mmpose_adapter_without_mmpose(tmp_path: Path) -> None:
    config, checkpoint = tmp_path / "hrnet.py", tmp_path / "w.pth"
    config.write_text("")
    checkpoint.write_bytes(b"")
    with pytest.raises(ImportError, match=INSTALL_HINT):
        MMPoseWholeBody(config, checkpoint)


def test_mmpose_real_model(shared_data: Path) -> None:
    """The real HRNet-W32 WholeBody model (after scripts/install_mmpose.sh and the files)."""
    pytest.importorskip("mmpose")
    folder = Path(os.environ.get("SLP_MMPOSE_DIR", "outputs/models/mmpose"))
    config = Path(os.environ.get("SLP_MMPOSE_CONFIG", folder / "hrnet_w32_wholebody_256x192.py"))
    checkpoint = Path(
        os.environ.get(
            "SLP_MMPOSE_CHECKPOINT",
            folder / "hrnet_w32_coco_wholebody_256x192-853765cd_20200918.pth",
        )
    )
    if not (config.is_file() and checkpoint.is_file()):
        pytest.skip(f"mmpose config/checkpoint not found ({config}, {checkpoint})")
    from mmpose.apis import inference_topdown

    estimator = MMPoseWholeBody(config, checkpoint)
    ds = RenderedSynthSigner("dev", size=256, max_videos=1, data_dir=shared_data)
    frame = ds.load_frames(0)[10]
    image = (torch.from_numpy(frame).permute(2, 0, 1).float() / 255)[None].requires_grad_(True)
    maps = estimator(image)
    assert maps.shape == (1, NUM_PGMM, 64, 64)
    maps.square().sum().backward()
    assert image.grad is not None and image.grad.abs().sum() > 0

    # Same points as mmpose's own pipeline (no flip test), up to our map's resolution.
    estimator.model.test_cfg["flip_test"] = False
    result = inference_topdown(estimator.model, np.ascontiguousarray(frame[..., ::-1]))[0]
    theirs = torch.from_numpy(result.pred_instances.keypoints[0]).float()  # pixel indices
    scores = torch.from_numpy(result.pred_instances.keypoint_scores[0]).float()
    ours = estimator.keypoints(image.detach())[0, :, :2] * 256 - 0.5
    index = torch.as_tensor(PGMM36_FROM_WHOLEBODY)
    confident = scores[index] > 0.5
    if confident.any():
        error = (ours - theirs[index]).norm(dim=-1)[confident]
        assert error.median().item() < 3.0  # frame pixels; one map pixel is 4
