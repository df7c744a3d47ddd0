"""The TPSMM motion branch E_M: ResNet-18, keypoints, background motion, TPS, dense motion."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from pgmm.models.bg_motion import BackgroundMotion
from pgmm.models.cmm import blend_deformations, resize_grid
from pgmm.models.dense_motion import DenseMotion
from pgmm.models.hourglass import DownBlock2d, Hourglass, InstanceNorm2d, ResBlock2d, UpBlock2d
from pgmm.models.keypoint_detector import KeypointDetector
from pgmm.models.resnet import ResNet18, load_pretrained_backbone
from pgmm.models.tps import TPS, apply_affine, make_coordinate_grid, random_tps

NUM_TPS, POINTS = 4, 5
SMALL = {"block_expansion": 8, "max_features": 64, "num_blocks": 3}


def _dense_motion(**kwargs: object) -> DenseMotion:
    return DenseMotion(num_tps=NUM_TPS, points_per_tps=POINTS, **{**SMALL, **kwargs})


def _keypoints(batch: int, count: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, count, 2, generator=g) * 1.6 - 0.8


def _affine(batch: int, seed: int) -> torch.Tensor:
    """Random ``(B, 3, 3)`` near-identity affine maps."""
    g = torch.Generator().manual_seed(seed)
    params = torch.eye(2, 3) + 0.2 * torch.randn(batch, 2, 3, generator=g)
    return torch.cat([params, torch.tensor([[[0.0, 0.0, 1.0]]]).expand(batch, 1, 3)], dim=1)


# ----------------------------------------------------------------------------- grids, affine


def test_coordinate_grid_convention() -> None:
    grid = make_coordinate_grid(4, 8)
    assert grid.shape == (4, 8, 2)
    assert grid[0, 0].tolist() == pytest.approx([-7 / 8, -3 / 4])
    assert grid[3, 7].tolist() == pytest.approx([7 / 8, 3 / 4])
    image = torch.randn(2, 3, 4, 8)
    sampled = F.grid_sample(image, grid[None].expand(2, -1, -1, -1), align_corners=False)
    torch.testing.assert_close(sampled, image)


def test_apply_affine_matches_matrix_product() -> None:
    matrix = _affine(3, seed=1)
    grid = make_coordinate_grid(5, 6)
    out = apply_affine(grid[None], matrix)
    assert out.shape == (3, 5, 6, 2)
    homogeneous = torch.cat([grid, torch.ones(5, 6, 1)], dim=-1)
    expected = torch.einsum("bij,hwj->bhwi", matrix, homogeneous)[..., :2]
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(apply_affine(grid[None], matrix[:, :2]), out)


# ----------------------------------------------------------------------------- TPS


def test_tps_identity_leaves_grid_unchanged() -> None:
    kp = _keypoints(2, NUM_TPS * POINTS, seed=0).view(2, NUM_TPS, POINTS, 2)
    warped = TPS.fit(kp, kp.clone()).warp_grid(16, 24)
    assert warped.shape == (2, NUM_TPS, 16, 24, 2)
    identity = make_coordinate_grid(16, 24).expand_as(warped)
    assert (warped - identity).abs().max().item() < 1e-5


def test_tps_interpolates_control_points() -> None:
    kp_driving = _keypoints(3, NUM_TPS * POINTS, seed=1).view(3, NUM_TPS, POINTS, 2)
    kp_source = _keypoints(3, NUM_TPS * POINTS, seed=2).view(3, NUM_TPS, POINTS, 2)
    tps = TPS.fit(kp_driving, kp_source)
    assert (tps.warp_points(kp_driving) - kp_source).abs().max().item() < 1e-4
    # Points shared across the batch and transforms broadcast.
    assert tps.warp_points(torch.zeros(1, 1, 7, 2)).shape == (3, NUM_TPS, 7, 2)


def test_tps_reproduces_affine_maps_everywhere() -> None:
    matrix = _affine(2, seed=3)
    kp_driving = _keypoints(2, NUM_TPS * POINTS, seed=4).view(2, NUM_TPS, POINTS, 2)
    kp_source = apply_affine(kp_driving, matrix)
    warped = TPS.fit(kp_driving, kp_source).warp_grid(12, 12)
    expected = apply_affine(make_coordinate_grid(12, 12)[None, None], matrix)
    assert (warped - expected).abs().max().item() < 1e-5


def test_tps_gradients_are_finite_at_control_points() -> None:
    kp_driving = _keypoints(1, POINTS, seed=5).view(1, 1, POINTS, 2).requires_grad_()
    kp_source = _keypoints(1, POINTS, seed=6).view(1, 1, POINTS, 2).requires_grad_()
    tps = TPS.fit(kp_driving, kp_source)
    (tps.warp_points(kp_driving).sum() + tps.warp_grid(8, 8).square().sum()).backward()
    for grad in (kp_driving.grad, kp_source.grad):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_tps_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="must both be"):
        TPS.fit(torch.zeros(1, 1, 5, 2), torch.zeros(1, 1, 4, 2))
    with pytest.raises(ValueError, match="at least 3"):
        TPS.fit(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2))


def test_random_tps() -> None:
    g = torch.Generator().manual_seed(0)
    image = torch.rand(2, 3, 16, 16)
    # Zero noise is the identity: the image and points come back unchanged.
    still = random_tps(2, sigma_affine=0.0, sigma_tps=0.0, points_tps=5)
    torch.testing.assert_close(still.warp_image(image)[:, 0], image)
    kp = _keypoints(2, 10, seed=7)
    torch.testing.assert_close(still.warp_points(kp[:, None])[:, 0], kp)
    # Non-zero noise: a mild deformation, different per sample.
    moved = random_tps(2, sigma_affine=0.05, sigma_tps=0.005, points_tps=5, generator=g)
    assert moved.control_points.shape == (2, 1, 25, 2)
    warped = moved.warp_points(kp[:, None])[:, 0]
    assert warped.shape == kp.shape
    shift = (warped - kp).abs().max().item()
    assert 1e-3 < shift < 0.5
    out = moved.warp_image(image)
    assert out.shape == (2, 1, 3, 16, 16) and not torch.allclose(out[0], out[1])


# ----------------------------------------------------------------------------- ResNet-18


def test_resnet18_matches_torchvision_layout() -> None:
    model = ResNet18(num_outputs=1000)
    # torchvision's resnet18 has exactly 11,689,512 parameters.
    assert sum(p.numel() for p in model.parameters()) == 11_689_512
    state = model.state_dict()
    assert state["conv1.weight"].shape == (64, 3, 7, 7)
    assert state["layer2.0.downsample.0.weight"].shape == (128, 64, 1, 1)
    assert state["layer4.1.bn2.running_var"].shape == (512,)
    assert "layer1.0.downsample.0.weight" not in state
    assert state["fc.weight"].shape == (1000, 512)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_pretrained_backbone_roundtrip(tmp_path: Path, suffix: str) -> None:
    torch.manual_seed(0)
    saved = ResNet18(num_outputs=1000)
    for name, buffer in saved.named_buffers():  # make the BN statistics non-trivial
        if name.endswith(("running_mean", "running_var")):
            buffer.uniform_(0.5, 1.5)
    path = tmp_path / f"resnet18{suffix}"
    if suffix == ".safetensors":
        save_file(saved.state_dict(), str(path))
    else:
        torch.save(saved.state_dict(), path)

    same = ResNet18(num_outputs=1000)
    assert load_pretrained_backbone(same, path) == []
    for key, value in saved.state_dict().items():
        assert torch.equal(same.state_dict()[key], value), key

    # A different head size (the keypoint detector's) keeps its own fc, loads the rest.
    detector = KeypointDetector(num_tps=NUM_TPS, points_per_tps=POINTS)
    fc_before = detector.backbone.fc.weight.clone()
    assert load_pretrained_backbone(detector.backbone, path) == ["fc.bias", "fc.weight"]
    assert torch.equal(detector.backbone.fc.weight, fc_before)
    assert torch.equal(detector.backbone.layer3[1].conv2.weight, saved.layer3[1].conv2.weight)


def test_pretrained_backbone_errors_are_explicit(tmp_path: Path) -> None:
    path = tmp_path / "half.pth"
    torch.save(ResNet18(num_outputs=1000, width=0.5).state_dict(), path)
    with pytest.raises(ValueError, match=r"shape mismatch: conv1\.weight: file \(32, 3, 7, 7\)"):
        load_pretrained_backbone(ResNet18(num_outputs=1000), path)

    state = ResNet18(num_outputs=10).state_dict()
    state["extra.weight"] = state.pop("layer1.0.conv1.weight")
    path = tmp_path / "renamed.safetensors"
    save_file(state, str(path))
    with pytest.raises(ValueError) as info:
        load_pretrained_backbone(ResNet18(num_outputs=10), path)
    assert "missing key: layer1.0.conv1.weight" in str(info.value)
    assert "unexpected key: extra.weight" in str(info.value)


# ----------------------------------------------------------------------------- regressors


def test_keypoint_detector_output() -> None:
    detector = KeypointDetector(num_tps=NUM_TPS, points_per_tps=POINTS, width=0.25)
    kp = detector(torch.rand(2, 3, 64, 64))
    assert kp.shape == (2, NUM_TPS * POINTS, 2)
    assert kp.abs().max().item() < 1.0


def test_background_motion_starts_as_identity() -> None:
    model = BackgroundMotion(width=0.25)
    matrix = model(torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64))
    assert matrix.shape == (2, 3, 3)
    torch.testing.assert_close(matrix, torch.eye(3).expand(2, 3, 3))
    with torch.no_grad():
        model.backbone.fc.weight.normal_(0.0, 0.1)
    matrix = model(torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64))
    assert matrix[:, 2].tolist() == [[0.0, 0.0, 1.0]] * 2
    assert not torch.allclose(matrix, torch.eye(3).expand(2, 3, 3))


# ----------------------------------------------------------------------------- hourglass


def test_blocks_and_hourglass_shapes() -> None:
    x = torch.randn(2, 5, 16, 16)
    assert DownBlock2d(5, 7)(x).shape == (2, 7, 8, 8)
    assert UpBlock2d(5, 7, mode="bilinear")(x).shape == (2, 7, 32, 32)
    assert UpBlock2d(5, 7, norm="batch")(x).shape == (2, 7, 32, 32)
    assert ResBlock2d(5)(x).shape == x.shape

    hourglass = Hourglass(5, block_expansion=8, num_blocks=3, max_features=16)
    outputs = hourglass(x)
    assert [o.shape[-1] for o in outputs] == [4, 8, 16]
    assert [o.shape[1] for o in outputs] == hourglass.out_channels == [32, 32, 13]
    with pytest.raises(ValueError, match="divisible by 8"):
        hourglass(torch.randn(1, 5, 12, 12))
    with pytest.raises(ValueError, match="norm must be"):
        DownBlock2d(5, 7, norm="group")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- dense motion


@pytest.mark.parametrize("size", [128, 256])
def test_dense_motion_shapes(size: int) -> None:
    model = _dense_motion()
    batch, n, h = 2, NUM_TPS + 2, size // 4
    out = model(
        torch.rand(batch, 3, size, size),
        _keypoints(batch, NUM_TPS * POINTS, seed=1),
        _keypoints(batch, NUM_TPS * POINTS, seed=2),
        bg_param=_affine(batch, seed=3),
    )
    assert out.deformations.shape == (batch, n, h, h, 2)
    assert out.contribution.shape == (batch, n, h, h)
    assert out.optical_flow.shape == (batch, h, h, 2)
    assert out.features.shape == (batch, model.feature_channels, h, h)
    assert out.deformed_source.shape == (batch, n, 3, h, h)
    # Decoder levels are at 1/16, 1/8, 1/4 of the input: masks above 1/4 are interpolated.
    assert model.occlusion_levels == [1, 2, 2, 2]
    assert [tuple(o.shape) for o in out.occlusion] == [
        (batch, 1, size // 8, size // 8),
        (batch, 1, size // 4, size // 4),
        (batch, 1, size // 2, size // 2),
        (batch, 1, size, size),
    ]
    for mask in out.occlusion:
        assert mask.min().item() >= 0.0 and mask.max().item() <= 1.0
    torch.testing.assert_close(out.contribution.sum(1), torch.ones(batch, h, h))
    expected_flow = (out.contribution[..., None] * out.deformations).sum(1)
    torch.testing.assert_close(out.optical_flow, expected_flow)
    # The background slot is the affine map, the identity slot the plain grid.
    grid = make_coordinate_grid(h, h)
    torch.testing.assert_close(out.deformations[:, 0], grid.expand(batch, h, h, 2))
    torch.testing.assert_close(
        out.deformations[:, 1], apply_affine(grid[None], _affine(batch, seed=3))
    )


@pytest.mark.parametrize("bg_param", [None, torch.eye(3).expand(2, 3, 3)])
def test_dense_motion_identity_without_motion(bg_param: torch.Tensor | None) -> None:
    model = _dense_motion()
    kp = _keypoints(2, NUM_TPS * POINTS, seed=4)
    source = torch.rand(2, 3, 128, 128)
    out = model(source, kp, kp.clone(), bg_param=bg_param)
    identity = make_coordinate_grid(32, 32)
    assert (out.deformations - identity).abs().max().item() < 1e-5
    assert (out.optical_flow - identity).abs().max().item() < 1e-5
    # Every deformed source is the (antialiased) downscaled source itself.
    small = F.interpolate(source, size=(32, 32), mode="bilinear", antialias=True)
    torch.testing.assert_close(out.deformed_source, small[:, None].expand_as(out.deformed_source))


def test_dense_motion_without_occlusion_masks() -> None:
    """PGMM's CMM predicts its own masks, so the motion branch may be asked for none."""
    model = _dense_motion(occlusion_scales=())
    kp = _keypoints(1, NUM_TPS * POINTS, seed=8)
    assert model(torch.rand(1, 3, 64, 64), kp, kp).occlusion == []
    assert len(model.occlusion_heads) == 0


def test_gradients_reach_every_parameter() -> None:
    torch.manual_seed(0)
    detector = KeypointDetector(num_tps=NUM_TPS, points_per_tps=POINTS, width=0.25)
    background = BackgroundMotion(width=0.25)
    with torch.no_grad():  # at zero head weight the backbone's gradient is exactly zero
        background.backbone.fc.weight.normal_(0.0, 0.01)
    dense = _dense_motion()
    source, driving = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    out = dense(source, detector(driving), detector(source), bg_param=background(source, driving))
    warped = F.grid_sample(
        source,
        F.interpolate(out.optical_flow.permute(0, 3, 1, 2), size=(64, 64)).permute(0, 2, 3, 1),
        align_corners=False,
    )
    loss = (warped * out.occlusion[-1] - driving).abs().mean()
    loss = loss + sum(mask.mean() for mask in out.occlusion) + out.features.mean()
    loss.backward()
    for model in (detector, background, dense):
        for name, param in model.named_parameters():
            assert param.grad is not None, name
            assert torch.isfinite(param.grad).all(), name
            assert param.grad.abs().sum() > 0, name


def test_tps_dropout_only_drops_tps_in_training() -> None:
    torch.manual_seed(0)
    model = _dense_motion()
    batch = 8
    inputs = (
        torch.rand(batch, 3, 64, 64),
        _keypoints(batch, NUM_TPS * POINTS, seed=5),
        _keypoints(batch, NUM_TPS * POINTS, seed=6),
    )
    model.train()
    full = model(*inputs).contribution
    dropped = model(*inputs, dropout_p=0.5).contribution
    torch.testing.assert_close(dropped.sum(1), torch.ones_like(dropped[:, 0]))
    zeroed = dropped.flatten(2).amax(-1) == 0  # (B, N): whole maps switched off
    assert not zeroed[:, :2].any(), "identity and background are never dropped"
    assert zeroed[:, 2:].any() and not zeroed[:, 2:].all()
    # Survivors keep their relative weights: dropout renormalises, nothing else.
    kept = (~zeroed)[:, :, None, None]
    renormalised = full * kept / (full * kept).sum(1, keepdim=True)
    torch.testing.assert_close(dropped, renormalised)
    # In eval mode the same call is deterministic and drops nothing.
    model.eval()
    torch.testing.assert_close(
        model(*inputs, dropout_p=0.5).contribution, model(*inputs).contribution
    )


def test_tps_survives_collinear_and_coincident_points() -> None:
    # A freshly initialised detector can put all points of a transform on a line or on top
    # of each other; the solve must stay finite instead of raising.
    line = torch.zeros(1, 1, 5, 2)
    line[..., 0] = torch.linspace(-0.5, 0.5, 5)
    grid = TPS.fit(line, line + 0.1).warp_grid(6, 6)
    assert torch.isfinite(grid).all()
    same = torch.zeros(1, 1, 5, 2)
    assert torch.isfinite(TPS.fit(same, same).warp_grid(6, 6)).all()


def test_instance_norm_is_torchs_instance_norm_with_the_same_weights() -> None:
    # The group-norm kernel must compute the same thing as nn.InstanceNorm2d(affine=True),
    # forward and backward, and load its state dict: shipped checkpoints hold the latter's keys.
    torch.manual_seed(0)
    reference = torch.nn.InstanceNorm2d(6, affine=True)
    torch.nn.init.normal_(reference.weight)
    torch.nn.init.normal_(reference.bias)
    ours = InstanceNorm2d(6)
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = (torch.randn(3, 6, 9, 7) * 4 + 2).requires_grad_()
    x2 = x.detach().clone().requires_grad_()
    expected, got = reference(x), ours(x2)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    expected.square().sum().backward()
    got.square().sum().backward()
    assert x.grad is not None and x2.grad is not None and ours.weight.grad is not None
    torch.testing.assert_close(x2.grad, x.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours.weight.grad, reference.weight.grad, rtol=1e-4, atol=1e-4)
    # A sample's statistics are its own: the batch does not leak into it (unlike batch norm).
    torch.testing.assert_close(ours(x2[:1]), got[:1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size", [(16, 16), (32, 32), (64, 64), (128, 96)])
@pytest.mark.parametrize("chunk", [1, 3, 8, 30])
def test_blend_deformations_is_the_weighted_sum_of_resized_grids(
    size: tuple[int, int], chunk: int
) -> None:
    # The reference is what CMM computed before: resize every grid, weight, sum.
    torch.manual_seed(1)
    grids = (torch.rand(2, 5, 32, 32, 2) * 2 - 1).requires_grad_()
    logits = torch.randn(2, 5, *size, requires_grad=True)
    weights = torch.softmax(logits, dim=1)
    expected = (weights.unsqueeze(-1) * resize_grid(grids, size)).sum(dim=1)
    got = blend_deformations(weights, grids, chunk=chunk)
    assert got.shape == (2, *size, 2)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    direction = torch.randn_like(expected)
    grad_expected = torch.autograd.grad(
        (expected * direction).sum(), (grids, logits), retain_graph=True
    )
    grad_got = torch.autograd.grad((got * direction).sum(), (grids, logits))
    for a, b in zip(grad_got, grad_expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
