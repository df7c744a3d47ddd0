"""Heatmap rendering and decoding (pgmm.pose.heatmaps)."""

from __future__ import annotations

import pytest
import torch

from pgmm.pose.heatmaps import argmax_decode, render_heatmaps, soft_argmax

SIZES = [(64, 64), (32, 48)]  # (height, width); the second is non-square on purpose


def _random_points(
    lead: tuple[int, ...], h: int, w: int, sigma: float, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Confident sub-pixel points at least 3 sigma from the border.

    Returns normalised ``(..., 3)`` points and their ``(..., 2)`` continuous pixel coordinates.
    """
    g = torch.Generator().manual_seed(seed)
    margin = 3 * sigma
    u = margin + torch.rand(lead, generator=g) * (w - 2 * margin)
    v = margin + torch.rand(lead, generator=g) * (h - 2 * margin)
    points = torch.stack([u / w, v / h, torch.ones_like(u)], dim=-1)
    return points, torch.stack([u, v], dim=-1)


def _pixel_error(xy: torch.Tensor, pixels: torch.Tensor, h: int, w: int) -> float:
    """Largest per-axis error in pixels of the map."""
    scale = torch.tensor([w, h], dtype=xy.dtype)
    return (xy[..., :2].double() * scale - pixels.double()).abs().max().item()


@pytest.mark.parametrize("h,w", SIZES)
def test_render_shape_and_peak(h: int, w: int) -> None:
    points, _ = _random_points((2, 3, 5), h, w, 1.5)
    maps = render_heatmaps(points, (h, w))
    assert maps.shape == (2, 3, 5, h, w)
    assert maps.dtype == torch.float32
    assert maps.min().item() >= 0.0 and maps.max().item() <= 1.0
    # A point on a pixel centre peaks at exactly 1 on that pixel.
    centre = torch.tensor([[(7 + 0.5) / w, (5 + 0.5) / h]])
    single = render_heatmaps(centre, (h, w))[0]
    assert single[5, 7].item() == pytest.approx(1.0)
    assert single.flatten().argmax().item() == 5 * w + 7


def test_render_is_separable_gaussian() -> None:
    """Matches the closed form at every pixel, and an int size means a square map."""
    sigma = 2.0
    point = torch.tensor([[0.37, 0.61]], dtype=torch.float64)
    maps = render_heatmaps(point, 16, sigma=sigma)[0]
    assert maps.dtype == torch.float64
    grid = torch.arange(16, dtype=torch.float64)
    i, j = torch.meshgrid(grid, grid, indexing="ij")
    squared = (j + 0.5 - 0.37 * 16) ** 2 + (i + 0.5 - 0.61 * 16) ** 2
    torch.testing.assert_close(maps, torch.exp(-squared / (2 * sigma**2)))


@pytest.mark.parametrize("h,w", SIZES)
def test_round_trip_argmax_decode(h: int, w: int) -> None:
    points, pixels = _random_points((4, 6, 36), h, w, 1.5)
    decoded = argmax_decode(render_heatmaps(points, (h, w), sigma=1.5))
    assert decoded.shape == (4, 6, 36, 3)
    assert _pixel_error(decoded, pixels, h, w) < 0.1
    assert (decoded[..., 2] > 0.5).all()  # peak value is the confidence


@pytest.mark.parametrize("h,w", SIZES)
@pytest.mark.parametrize("window", [None, 4])
def test_round_trip_soft_argmax(h: int, w: int, window: int | None) -> None:
    points, pixels = _random_points((4, 6, 36), h, w, 1.5, seed=1)
    decoded = soft_argmax(render_heatmaps(points, (h, w), sigma=1.5), window=window)
    assert decoded.shape == (4, 6, 36, 2)
    assert _pixel_error(decoded, pixels, h, w) < 0.1


def test_round_trip_float16() -> None:
    h, w = SIZES[1]
    points, pixels = _random_points((2, 36), h, w, 1.5, seed=2)
    maps = render_heatmaps(points.half(), (h, w))
    assert maps.dtype == torch.float32
    assert _pixel_error(argmax_decode(maps.half()), pixels, h, w) < 0.1
    assert _pixel_error(soft_argmax(maps.half()), pixels, h, w) < 0.1


def test_xy_only_points_are_all_present() -> None:
    points, _ = _random_points((3,), 32, 32, 1.5)
    with_conf = render_heatmaps(points, 32)
    torch.testing.assert_close(render_heatmaps(points[..., :2], 32), with_conf)


def test_missing_points_give_zero_maps() -> None:
    points, _ = _random_points((2, 4), 32, 32, 1.5)
    points[0, 1, 2] = 0.0  # confidence 0
    points[1, 2, 0] = float("nan")  # undetected
    points[1, 3, 2] = 0.3  # below the threshold below
    maps = render_heatmaps(points, 32, confidence_threshold=0.5)
    for b, p in [(0, 1), (1, 2), (1, 3)]:
        assert maps[b, p].abs().sum().item() == 0.0
    assert maps[0, 0].max().item() > 0.5
    assert torch.isfinite(maps).all()
    decoded = argmax_decode(maps)
    assert decoded[0, 1, 2].item() == 0.0 and decoded[1, 2, 2].item() == 0.0
    assert torch.isfinite(decoded).all()
    # A map without weight decodes to the map centre rather than NaN.
    torch.testing.assert_close(soft_argmax(maps)[0, 1], torch.tensor([0.5, 0.5]))


def test_argmax_decode_border_and_flat_maps_stay_finite() -> None:
    outside = torch.tensor([[1.2, -0.3, 1.0], [0.0, 0.5, 1.0]])  # off-map / on the left edge
    decoded = argmax_decode(render_heatmaps(outside, 16))
    assert torch.isfinite(decoded).all()
    assert ((decoded[:, :2] > 0) & (decoded[:, :2] < 1)).all()
    flat = argmax_decode(torch.full((1, 8, 8), 0.25))
    assert torch.isfinite(flat).all() and flat[0, 2].item() == 0.25


def test_soft_argmax_window_removes_background_bias() -> None:
    """A raised floor (typical of network outputs) pulls the full-map mean to the centre."""
    h, w = 64, 64
    point = torch.tensor([[10.3 / w, 50.8 / h, 1.0]])
    maps = render_heatmaps(point, (h, w)) + 0.01
    pixels = torch.tensor([[10.3, 50.8]])
    assert _pixel_error(soft_argmax(maps), pixels, h, w) > 1.0
    assert _pixel_error(soft_argmax(maps, window=4), pixels, h, w) < 0.1


def test_soft_argmax_gradcheck() -> None:
    g = torch.Generator().manual_seed(3)
    maps = torch.rand(1, 2, 5, 6, generator=g, dtype=torch.float64) + 0.1
    maps[0, 0, 2, 3] = 3.0  # a clear peak, so the window cannot move under perturbation
    maps[0, 1, 1, 4] = 3.0
    maps.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda m: soft_argmax(m), (maps,))
    assert torch.autograd.gradcheck(lambda m: soft_argmax(m, beta=2.0), (maps,))
    assert torch.autograd.gradcheck(lambda m: soft_argmax(m, beta=2.0, window=1), (maps,))


def test_soft_argmax_trains_towards_target() -> None:
    """L_pd's use: a loss on soft-argmax coordinates has a gradient on the network output."""
    logits = torch.zeros(1, 1, 16, 16, requires_grad=True)
    target = torch.tensor([[[0.8, 0.2]]])
    loss = (soft_argmax(logits, beta=5.0) - target).pow(2).sum()
    loss.backward()
    assert logits.grad is not None and logits.grad.abs().sum().item() > 0
    # Descending the gradient raises the logits near the target corner.
    assert logits.grad[0, 0, 3, 12].item() < 0 < logits.grad[0, 0, 12, 3].item()


def test_render_gradient_and_validation() -> None:
    # A NaN (undetected) point must not poison the gradient of the others.
    points = torch.tensor([[0.4, 0.6, 1.0], [float("nan"), 0.5, 1.0]], requires_grad=True)
    render_heatmaps(points, 16).sum().backward()
    assert torch.isfinite(points.grad).all() and points.grad[0, :2].abs().sum() > 0
    with pytest.raises(ValueError):
        render_heatmaps(torch.zeros(3, 4), 16)
    with pytest.raises(ValueError):
        render_heatmaps(torch.zeros(3, 2), 16, sigma=0.0)
    with pytest.raises(ValueError):
        argmax_decode(torch.zeros(8, 8))
