"""PGMM's losses: each term against a case with a known answer, then PGMMLoss on a tiny PGMM."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tiny import TINY_PGMM
from torch import nn

from pgmm.losses import (
    ImagePyramid,
    PGMMLoss,
    Vgg19Features,
    align_loss,
    background_loss,
    driving_keypoint_loss,
    equivariance_loss,
    hand_detail_loss,
    hand_mask,
    perceptual_loss,
    pose_distance_loss,
    warp_loss,
)
from pgmm.losses.perceptual import TPSMM_LAYERS, VGG19_RELU_INDEX
from pgmm.models.config import PGMMConfig
from pgmm.models.pgmm import PGMM
from pgmm.models.pose_estimator import PoseEstimator
from pgmm.models.tps import make_coordinate_grid
from pgmm.pose.heatmaps import render_heatmaps

# The TINY PGMM of tests/test_pgmm.py.
TINY = TINY_PGMM


@pytest.fixture(scope="module")
def vgg() -> Vgg19Features:
    return Vgg19Features()


# --------------------------------------------------------------------------- perceptual
def test_vgg_layer_names_follow_torchvision_indices() -> None:
    # TPSMM's Vgg19 slices torchvision's features at 2, 7, 12, 21, 30.
    assert [VGG19_RELU_INDEX[n] for n in TPSMM_LAYERS] == [1, 6, 11, 20, 29]
    last_of_each_block = ("relu1_2", "relu2_2", "relu3_4", "relu4_4", "relu5_4")
    assert [VGG19_RELU_INDEX[n] for n in last_of_each_block] == [3, 8, 17, 26, 35]
    deep = Vgg19Features(layers=last_of_each_block)
    convs = [n for n, m in deep.features.named_children() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 16 and convs[-1] == "34"
    with pytest.raises(ValueError, match="relu6_1"):
        Vgg19Features(layers=("relu6_1",))


def test_pyramid_shapes_and_antialiasing() -> None:
    x = torch.rand(2, 3, 64, 48)
    levels = ImagePyramid()(x)
    assert [t.shape[-2:] for t in levels] == [(64, 48), (32, 24), (16, 12), (8, 6)]
    assert levels[0] is x
    # A one-pixel checkerboard has no content at half resolution: it must average out to grey
    # instead of aliasing into stripes.
    checker = ((torch.arange(16)[:, None] + torch.arange(16)) % 2).float().expand(1, 3, 16, 16)
    half = ImagePyramid((0.5,))(checker)[0]
    assert torch.allclose(half[..., 1:-1, 1:-1], torch.full_like(half[..., 1:-1, 1:-1], 0.5))
    with pytest.raises(ValueError, match="scales"):
        ImagePyramid((1.0, 2.0))


def test_perceptual_loss_zero_iff_identical_and_grad_reaches_pred_only(vgg) -> None:
    g = torch.Generator().manual_seed(0)
    target = torch.rand(1, 3, 32, 32, generator=g)
    scales = (1.0, 0.5)
    assert perceptual_loss(target.clone(), target, vgg, scales).item() == 0.0

    pred = torch.rand(1, 3, 32, 32, generator=g).requires_grad_()
    loss = perceptual_loss(pred, target, vgg, scales)
    assert loss.item() > 0
    loss.backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in vgg.parameters())
    assert not vgg.train().training  # frozen: a parent's .train() does not switch it


def test_perceptual_loss_checks_sizes(vgg) -> None:
    img = torch.rand(1, 3, 32, 32)
    with pytest.raises(ValueError, match="at least 16 px"):
        perceptual_loss(img, img, vgg, scales=(1.0, 0.25))
    with pytest.raises(ValueError, match="layer weights"):
        perceptual_loss(img, img, vgg, scales=(1.0,), layer_weights=(1.0, 1.0))


def test_random_vgg_is_seeded_and_leaves_global_rng_alone(vgg) -> None:
    state = torch.get_rng_state()
    same, other = Vgg19Features(seed=0), Vgg19Features(seed=1)
    assert torch.equal(torch.get_rng_state(), state)
    w = "features.28.weight"
    assert torch.equal(same.state_dict()[w], vgg.state_dict()[w])
    assert not torch.equal(other.state_dict()[w], vgg.state_dict()[w])


def test_vgg_state_dict_reloads_from_file(tmp_path: Path, vgg) -> None:
    other = Vgg19Features(seed=3)
    state = other.state_dict()
    assert all(k.startswith("features.") for k in state)
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "vgg.safetensors"))
    # A full torchvision state dict has deeper convs and the classifier: they are ignored.
    torchvision_like = {
        **state,
        "features.34.weight": torch.zeros(512, 512, 3, 3),
        "classifier.0.weight": torch.zeros(4, 4),
    }
    torch.save(torchvision_like, tmp_path / "vgg19.pth")
    x = torch.rand(1, 3, 16, 16)
    expected = other(x)
    for name in ("vgg.safetensors", "vgg19.pth"):
        loaded = Vgg19Features(tmp_path / name)
        assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
        for a, b in zip(loaded(x), expected, strict=True):
            assert torch.equal(a, b)


def test_vgg_bad_weights_fail_clearly(tmp_path: Path, vgg) -> None:
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        Vgg19Features(tmp_path / "missing.pth")
    partial = {k: v for k, v in vgg.state_dict().items() if k != "features.28.weight"}
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match=r"missing \['features\.28\.weight'\]"):
        Vgg19Features(tmp_path / "partial.pth")
    wrong = {**vgg.state_dict(), "features.0.weight": torch.zeros(64, 1, 3, 3)}
    torch.save(wrong, tmp_path / "wrong.pth")
    with pytest.raises(ValueError, match="features.0.weight"):
        Vgg19Features(tmp_path / "wrong.pth")
    (tmp_path / "junk.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(ValueError, match="not a readable"):
        Vgg19Features(tmp_path / "junk.safetensors")


# --------------------------------------------------------------------------- motion
def _blob_image(centres: torch.Tensor, size: int = 64, sigma: float = 0.08) -> torch.Tensor:
    """``(B, 3, 2)`` centres -> ``(B, 3, size, size)``: one Gaussian blob per channel."""
    grid = make_coordinate_grid(size, size)
    sq = (grid[None, None] - centres[:, :, None, None, :]).square().sum(-1)
    return torch.exp(-sq / (2 * sigma**2))


def _centroid_detector(image: torch.Tensor) -> torch.Tensor:
    """Intensity centroid per channel: moves with the image under any affine warp."""
    h, w = image.shape[-2:]
    grid = make_coordinate_grid(h, w).reshape(-1, 2)
    mass = image.flatten(2)
    return (mass @ grid) / mass.sum(-1, keepdim=True)


def test_equivariance_loss_small_for_equivariant_detector_large_for_constant() -> None:
    centres = torch.tensor([[[-0.3, -0.2], [0.25, 0.1], [0.0, 0.35]]]).repeat(2, 1, 1)
    driving = _blob_image(centres)
    kp = _centroid_detector(driving)

    def run(detector, **kw) -> float:
        g = torch.Generator().manual_seed(0)
        return equivariance_loss(detector, driving, kp, generator=g, **kw).item()

    constant = run(lambda image: kp)
    assert constant > 0.02  # the random warp moves content by ~sigma_affine
    # Exactly equivariant up to pixel discretisation for an affine warp; the TPS part bends
    # the blobs slightly (non-uniform area change), which shifts their centroids a little.
    assert run(_centroid_detector, sigma_tps=0.0) < 1e-3
    assert run(_centroid_detector) < 0.1 * constant


def test_equivariance_loss_reaches_the_detector() -> None:
    detector = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 4), nn.Unflatten(1, (2, 2)))
    driving = torch.rand(2, 3, 16, 16)
    loss = equivariance_loss(detector, driving, detector(driving))
    loss.backward()
    assert detector[1].weight.grad.abs().sum() > 0


def _shift(dx: torch.Tensor) -> torch.Tensor:
    """``(B,)`` x-shifts -> ``(B, 3, 3)`` translations."""
    m = torch.eye(3).repeat(dx.shape[0], 1, 1)
    m[:, 0, 2] = dx
    return m


def test_background_loss() -> None:
    source, driving = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)

    def relative(s: torch.Tensor, d: torch.Tensor) -> torch.Tensor:  # an exact inverse pair
        return _shift(d.mean((1, 2, 3)) - s.mean((1, 2, 3)))

    def identity(s: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        return torch.eye(3).expand(s.shape[0], 3, 3)

    def same_both_ways(s: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        return _shift(torch.full((s.shape[0],), 0.3))

    for bg, expected in ((identity, 0.0), (relative, 0.0)):
        loss = background_loss(bg, source, driving, bg(source, driving))
        assert loss.item() == pytest.approx(expected, abs=1e-7)
    # shift 0.3 twice = 0.6 where the identity has 0: one entry of nine.
    loss = background_loss(same_both_ways, source, driving, same_both_ways(source, driving))
    assert loss.item() == pytest.approx(0.6 / 9)


def test_warp_loss() -> None:
    g = torch.Generator().manual_seed(0)
    feats = [torch.rand(2, c, s, s, generator=g) for c, s in ((4, 32), (8, 16), (8, 8))]
    identity = make_coordinate_grid(32, 32).expand(2, 32, 32, 2)
    assert warp_loss(feats, feats, identity).item() == pytest.approx(0.0, abs=1e-6)

    source = [f.clone().requires_grad_() for f in feats]
    flow = (identity + 0.1).requires_grad_()
    loss = warp_loss(feats, source, flow)
    assert loss.item() > 0.05
    loss.backward()
    assert flow.grad.abs().sum() > 0  # trains the flow ...
    assert all(f.grad is None for f in source)  # ... never the encoder
    hidden = [torch.zeros(2, 1, 32, 32)] * 3  # masks resized to each level
    assert warp_loss(feats, source, flow, hidden).item() == 0.0
    with pytest.raises(ValueError, match="feature levels"):
        warp_loss(feats, feats[:2], identity)


# --------------------------------------------------------------------------- pose
class PooledEstimator(PoseEstimator):
    """Stand-in P_e: a 1x1 conv then 4x4 average pooling (stride-4 maps, has parameters)."""

    def __init__(self, num_keypoints: int = 36) -> None:
        super().__init__()
        self.num_keypoints = num_keypoints
        self.mix = nn.Conv2d(3, num_keypoints, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.check_images(images)
        return F.avg_pool2d(self.mix(images), self.heatmap_stride)


def _pixel_estimator() -> PooledEstimator:
    """P_e whose map k is channel k of the image, pooled: images can carry exact heatmaps."""
    est = PooledEstimator(num_keypoints=3)
    with torch.no_grad():
        est.mix.weight.copy_(torch.eye(3)[:, :, None, None])
        est.mix.bias.zero_()
    return est.freeze()


def test_pose_distance_loss_hand_checked_with_visibility() -> None:
    est = _pixel_estimator()
    p = torch.tensor([[[0.40, 0.45], [0.60, 0.35], [0.50, 0.60]]])
    q = p + torch.tensor([0.05, -0.03])
    maps = render_heatmaps(p, 16)
    generated = F.interpolate(maps, scale_factor=4, mode="nearest").requires_grad_()
    driving = render_heatmaps(q, 16) * torch.tensor([1.0, 0.5, 0.0])[:, None, None]
    loss = pose_distance_loss(est, generated, driving)
    # Weights: peaks 1, 0.5 and 0 (absent); every keypoint is off by (0.05, 0.03).
    assert loss.item() == pytest.approx(0.04, abs=1e-3)
    loss.backward()
    assert generated.grad.abs().sum() > 0
    assert all(p.grad is None for p in est.parameters())

    # Zero when P_e finds exactly H in the generated frame.
    zero = pose_distance_loss(est, generated, est(generated).detach())
    assert zero.item() == 0.0
    # Nothing visible: nothing to match.
    assert pose_distance_loss(est, generated, torch.zeros_like(driving)).item() == 0.0


def test_pose_distance_loss_needs_a_frozen_estimator() -> None:
    est = PooledEstimator()
    images = torch.rand(1, 3, 32, 32)
    with pytest.raises(ValueError, match="freeze"):
        pose_distance_loss(est, images, torch.rand(1, 36, 8, 8))
    with pytest.raises(ValueError, match="driving heatmaps"):
        pose_distance_loss(est.freeze(), images, torch.rand(1, 35, 8, 8))


def test_align_loss_hand_checked_and_target_detached() -> None:
    y_s = [torch.zeros(1, 2, 2, 2, requires_grad=True), torch.ones(1, 1, 4, 4, requires_grad=True)]
    y_d = [torch.full((1, 2, 2, 2), 0.5, requires_grad=True), torch.zeros(1, 1, 4, 4)]
    y_d[1][..., 0, 0] = 3.0
    # level 0: |0 - 0.5| = 0.5; level 1: fifteen |1 - 0| and one |1 - 3| -> 17/16.
    loss = align_loss(y_s, y_d)
    assert loss.item() == pytest.approx((0.5 + 17 / 16) / 2)
    loss.backward()
    assert y_s[0].grad is not None and y_d[0].grad is None
    with pytest.raises(ValueError, match="levels"):
        align_loss(y_s, y_d[:1])


def test_driving_keypoint_loss_distils_towards_detached_targets() -> None:
    kp_pred = torch.zeros(1, 2, 2, requires_grad=True)
    kp = torch.tensor([[[0.1, -0.1], [0.3, 0.0]]], requires_grad=True)
    bg = torch.eye(3)[None].clone().requires_grad_()
    bg_pred = torch.eye(3)[None].clone()
    bg_pred[0, 0, 2] = 0.6
    bg_pred.requires_grad_()
    loss = driving_keypoint_loss(kp_pred, bg_pred, kp, bg)
    assert loss.item() == pytest.approx(0.5 / 4 + 0.6 / 6)
    loss.backward()
    assert kp_pred.grad is not None and bg_pred.grad is not None
    assert kp.grad is None and bg.grad is None


# --------------------------------------------------------------------------- L_hands
def test_hand_mask_covers_hand_points_only() -> None:
    maps = torch.zeros(2, 36, 16, 16)
    maps[0, 0, 2, 2] = 1.0  # the nose: not a hand channel
    maps[0, 20, 8, 12] = 1.0  # a left-hand point
    maps[1, 35, 4, 4] = 0.05  # a right-hand point below the threshold (an absent hand)
    mask = hand_mask(maps, 64)
    assert mask.shape == (2, 1, 64, 64)
    assert mask[0, 0, 32:36, 48:52].eq(1).all() and mask[0].sum() == 16  # one 4x4 cell
    assert mask[0, 0, 8:12, 8:12].eq(0).all() and mask[1].sum() == 0
    with pytest.raises(ValueError, match="PGMM36"):
        hand_mask(torch.zeros(1, 18, 16, 16), 64)


def test_hand_detail_loss_hand_checked() -> None:
    target = torch.zeros(1, 3, 8, 8)
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 2:6, 2:6] = 1  # 16 pixels; 12 horizontal and 12 vertical neighbour pairs inside
    prediction = target.clone()
    prediction[..., 0, 0] = 1.0  # outside the mask: costs nothing
    assert hand_detail_loss(prediction, target, mask).item() == 0.0
    prediction[..., 3, 3] = 0.5  # one pixel inside: its own error + 2 edges each way
    prediction.requires_grad_(True)
    loss = hand_detail_loss(prediction, target, mask, eps=0.0)
    assert loss.item() == pytest.approx((0.5 + 4 * 0.5) / (3 * 16))
    loss.backward()
    assert prediction.grad is not None and prediction.grad[..., 0, 0].eq(0).all()
    # A uniform brightness offset inside the mask costs its pixel L1 only (edges unchanged).
    shifted = target + 0.2 * mask
    assert hand_detail_loss(shifted, target, mask, eps=0.0).item() == pytest.approx(
        (0.2 * 16 + 0.2 * 0) / (3 * 16)
    )
    with pytest.raises(ValueError, match="equal"):
        hand_detail_loss(prediction, target[:, :, :4], mask)


# --------------------------------------------------------------------------- PGMMLoss
def _tiny_step(variant: str, size: int = 64, **loss_weights: float):
    torch.manual_seed(0)
    config = PGMMConfig(variant=variant, image_size=size, loss_weights=loss_weights, **TINY)
    model = PGMM(config).train()
    g = torch.Generator().manual_seed(1)
    batch = {
        "source": torch.rand(1, 3, size, size, generator=g),
        "driving": torch.rand(1, 3, size, size, generator=g),
        "driving_heatmaps": torch.rand(1, 36, size // 4, size // 4, generator=g),
        "source_heatmaps": torch.rand(1, 36, size // 4, size // 4, generator=g),
    }
    out = model(
        batch["source"],
        batch["driving"],
        batch["driving_heatmaps"],
        batch["source_heatmaps"],
        with_align=config.loss_weights["align"] > 0,
    )
    return config, model, batch, out


@pytest.mark.parametrize("variant", ["tpsmm", "full"])
def test_pgmm_loss_on_tiny_model(variant: str) -> None:
    config, model, batch, out = _tiny_step(variant)
    # 64 px keeps the test fast; TPSMM's 1/8 level would be 8 px, too small for relu5_1.
    with pytest.raises(ValueError, match="coarsest pyramid scale"):
        PGMMLoss(config, estimator=PooledEstimator())
    criterion = PGMMLoss(config, estimator=PooledEstimator(), pyramid_scales=(1, 0.5, 0.25))
    terms = criterion(model, batch, out)
    expected = {name for name, w in config.loss_weights.items() if w > 0} | {"total"}
    assert set(terms) == expected
    if variant == "tpsmm":
        assert "pose_distance" not in terms and "align" not in terms
    else:
        assert {"pose_distance", "align"} <= set(terms)
    assert all(t.ndim == 0 and math.isfinite(t.item()) for t in terms.values())
    total = sum(v for k, v in terms.items() if k != "total")
    assert terms["total"].item() == pytest.approx(total.item(), rel=1e-6)
    terms["total"].backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert all(p.grad is None for p in criterion.parameters())  # VGG and P_e stay frozen


@pytest.mark.parametrize("variant", ["tpsmm", "full"])
def test_warp_loss_reuses_the_forward_pass_features_exactly(variant: str) -> None:
    config, model, batch, out = _tiny_step(variant)
    assert (out.driving_features is not None) == (variant == "full")  # from L_align's pass
    criterion = PGMMLoss(config, estimator=PooledEstimator(), pyramid_scales=(1, 0.5, 0.25))
    calls: list[int] = []
    model.encoder.register_forward_hook(lambda *_: calls.append(1))
    shared = criterion(model, batch, out)["warp"]
    assert len(calls) == (1 if variant == "tpsmm" else 0)  # only the missing driving pyramid
    encoded = dataclasses.replace(out, driving_features=None)
    assert torch.equal(shared, criterion(model, batch, encoded)["warp"])


# Which parts of the full model each term must train (and no others). Exceptions, by design:
# with CMM the generator computes its own flow, so the dense-motion contribution head that
# mixes TPSMM's optical flow is trained only by the warp loss; Y_s are the generator's
# intermediates, before its final output layer.
_IMAGE_PATH = {"kp_detector", "bg_motion", "dense_motion", "encoder", "posenet", "generator"}
TERM_REACH: dict[str, tuple[set[str], tuple[str, ...]]] = {
    "perceptual": (_IMAGE_PATH, ("dense_motion.contribution_head.",)),
    "hands": (_IMAGE_PATH, ("dense_motion.contribution_head.",)),
    "pose_distance": (_IMAGE_PATH, ("dense_motion.contribution_head.",)),
    "align": (_IMAGE_PATH, ("dense_motion.contribution_head.", "generator.final.")),
    "equivariance": ({"kp_detector"}, ()),
    "warp": ({"kp_detector", "bg_motion", "dense_motion"}, ()),
    "background": ({"bg_motion"}, ()),
    "driving_keypoints": ({"driving_head"}, ()),  # its targets and kp_source input: detached
}


def test_each_loss_term_trains_exactly_the_parts_it_must() -> None:
    config, model, batch, _ = _tiny_step("full", hands=1.0)
    with torch.no_grad():  # zero-initialised heads (identity background) block gradients at init
        for p in model.parameters():
            p.add_(1e-3 * torch.randn_like(p))
    out = model(
        batch["source"], batch["driving"], batch["driving_heatmaps"], batch["source_heatmaps"],
        with_align=True,
    )  # fmt: skip
    criterion = PGMMLoss(config, estimator=PooledEstimator(), pyramid_scales=(1, 0.5, 0.25))
    terms = criterion(model, batch, out)
    assert set(TERM_REACH) == set(terms) - {"total"}
    names, params = zip(*model.named_parameters(), strict=True)
    for term, (modules, exceptions) in TERM_REACH.items():
        grads = torch.autograd.grad(terms[term], params, retain_graph=True, allow_unused=True)
        reached = {n for n, g in zip(names, grads, strict=True) if g is not None and g.any()}
        must = {n for n in names if n.split(".")[0] in modules and not n.startswith(exceptions)}
        assert not must - reached, (term, sorted(must - reached))
        assert not reached - must, (term, sorted(reached - must))


def test_pgmm_loss_skips_zero_weights_and_checks_its_inputs() -> None:
    config, model, batch, out = _tiny_step(
        "full", perceptual=0.0, warp=0.0, equivariance=0.0, background=0.0
    )
    criterion = PGMMLoss(config, estimator=PooledEstimator())
    assert criterion.vgg is None  # not even built
    assert set(criterion(model, batch, out)) == {
        "driving_keypoints",
        "pose_distance",
        "align",
        "total",
    }
    with pytest.raises(ValueError, match="no estimator"):
        PGMMLoss(config)
    with pytest.raises(ValueError, match="with_align"):
        criterion(model, batch, dataclasses.replace(out, Y_d=None))
    with pytest.raises(ValueError, match="pose-driven head"):
        criterion(model, batch, dataclasses.replace(out, kp_driving_from_pose=None))
    bad = PGMMConfig(variant="tpsmm", image_size=64, loss_weights={"perceptul": 1.0}, **TINY)
    with pytest.raises(ValueError, match="perceptul"):
        PGMMLoss(bad)
