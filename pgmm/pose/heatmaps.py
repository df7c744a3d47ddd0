"""Keypoint <-> heatmap conversion for PGMM's pose branch.

PGMM conditions its generator on one Gaussian heatmap per keypoint (the 36 channels of
:data:`pgmm.pose.layout.PGMM36`) and trains with a pose-distance loss ``L_pd`` that compares
keypoints *decoded* from heatmaps. Three operations cover that:

* :func:`render_heatmaps` -- points to Gaussian maps (the conditioning input and targets);
* :func:`argmax_decode` -- maps to points for evaluation and previews (accurate, no gradient);
* :func:`soft_argmax` -- maps to points *with* gradient, because ``L_pd`` must back-propagate
  into the network that produced the maps and a hard argmax has zero gradient almost everywhere.

Coordinate convention (shared with :class:`pgmm.pose.sequence.PoseSequence`): a normalised x in
[0, 1] is the continuous pixel coordinate ``u = x * w``; pixel ``j`` covers ``[j, j + 1)`` and its
centre is ``j + 0.5``. Keeping this convention exact (no half-pixel drift) matters because the
fine-grained hand points sit only a few map pixels apart at PGMM's heatmap resolution.
"""

from __future__ import annotations

import torch

from pgmm.pose.layout import NUM_WHOLEBODY, PGMM36_FROM_WHOLEBODY

__all__ = ["argmax_decode", "pose_heatmaps", "render_heatmaps", "soft_argmax", "to_pgmm36"]


def _map_size(size: int | tuple[int, int]) -> tuple[int, int]:
    """``size`` as ``(height, width)``: an int means a square map."""
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if h <= 0 or w <= 0:
        raise ValueError(f"heatmap size must be positive, got {size}")
    return h, w


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """At least float32: half precision loses ~0.03 px of position at 64 px and underflows
    Gaussian tails, while float64 is kept for ``gradcheck``-style numerical tests."""
    return torch.promote_types(dtype, torch.float32) if dtype.is_floating_point else torch.float32


def _pixel_centres(n: int, like: torch.Tensor) -> torch.Tensor:
    return torch.arange(n, device=like.device, dtype=like.dtype) + 0.5


def render_heatmaps(
    points: torch.Tensor,
    size: int | tuple[int, int],
    sigma: float = 1.5,
    confidence_threshold: float = 0.0,
) -> torch.Tensor:
    """Render one Gaussian heatmap per point.

    Args:
        points: ``(..., P, 2)`` normalised xy, or ``(..., P, 3)`` with the confidence last.
            Any leading dims (batch, time, ...), device and floating dtype.
        size: map size; an int for a square map or ``(height, width)`` (the order of the
            output's last two dims).
        sigma: standard deviation in pixels *of the output map*, so the blob covers the same
            number of map pixels at every resolution.
        confidence_threshold: points with confidence ``<=`` this -- and points with NaN
            coordinates -- get all-zero maps, so a missing keypoint never pulls the generator
            towards a meaningless location.

    Returns:
        ``(..., P, h, w)`` maps, ``exp(-((j + .5 - u)^2 + (i + .5 - v)^2) / (2 sigma^2))`` with
        ``u = x * w`` and ``v = y * h``: the continuous peak is 1 at the sub-pixel location.
        float32 (float64 if ``points`` is float64), on the device of ``points``.

    The 2-D Gaussian is the outer product of two 1-D Gaussians, so apart from the output only
    ``(..., P, h + w)`` values are computed and no ``(..., P, h, w, 2)`` grid is materialised.
    Differentiable with respect to the coordinates.
    """
    if points.ndim < 2 or points.shape[-1] not in (2, 3):
        raise ValueError(f"points must be (..., P, 2) or (..., P, 3), got {tuple(points.shape)}")
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    h, w = _map_size(size)
    pts = points.to(_compute_dtype(points.dtype))
    x, y = pts[..., 0], pts[..., 1]
    valid = ~(torch.isnan(x) | torch.isnan(y))
    if pts.shape[-1] == 3:
        valid &= pts[..., 2] > confidence_threshold
    # Zero the NaNs *before* the exp: masking afterwards would still back-propagate NaN.
    x = torch.where(valid, x, torch.zeros_like(x))
    y = torch.where(valid, y, torch.zeros_like(y))
    inv = -0.5 / (sigma * sigma)
    gx = torch.exp(inv * (_pixel_centres(w, pts) - (x * w)[..., None]) ** 2)  # (..., P, w)
    gy = torch.exp(inv * (_pixel_centres(h, pts) - (y * h)[..., None]) ** 2)  # (..., P, h)
    gy = gy * valid[..., None].to(gy.dtype)  # fold the mask into the small factor
    return gy[..., :, None] * gx[..., None, :]


def to_pgmm36(points: torch.Tensor) -> torch.Tensor:
    """Points ``(..., 133|36, C)`` -> PGMM's 36: whole-body points are picked, 36 pass through."""
    if points.shape[-2] == NUM_WHOLEBODY:
        return points[..., torch.as_tensor(PGMM36_FROM_WHOLEBODY, device=points.device), :]
    return points


def pose_heatmaps(points: torch.Tensor, image_size: int, stride: int, sigma: float) -> torch.Tensor:
    """Poses ``(..., 133|36, 3)`` -> PGMM's 36 maps at ``1/stride`` of the image: what the
    renderer is trained on and driven by, so training, serving and evaluation share it."""
    return render_heatmaps(to_pgmm36(points), image_size // stride, sigma=sigma)


def _parabola_offset(left: torch.Tensor, centre: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """Vertex of the parabola through ``(-1, left), (0, centre), (1, right)``, where each value
    is a log-heatmap sample; ``nan`` where the parabola is not concave (no maximum)."""
    curvature = left - 2.0 * centre + right
    offset = 0.5 * (left - right) / curvature
    return torch.where(curvature < 0, offset, torch.full_like(offset, float("nan")))


@torch.no_grad()
def argmax_decode(heatmaps: torch.Tensor) -> torch.Tensor:
    """Decode each map to ``(x, y, confidence)`` with sub-pixel accuracy.

    Used for evaluation, previews and turning predicted maps back into a
    :class:`~pgmm.pose.sequence.PoseSequence`; it has no gradient (use :func:`soft_argmax` for
    losses).

    The integer argmax is refined per axis by fitting a parabola to the *log* of the peak and its
    two neighbours: the log of a Gaussian is exactly a parabola, so for rendered maps the
    refinement recovers the true sub-pixel location; for noisy network outputs the offset is
    clamped to +-0.5 px so it never leaves the peak pixel. At the map border or where a neighbour
    is not positive (log undefined) the integer peak is kept for that axis.

    Args:
        heatmaps: ``(..., P, h, w)``.

    Returns:
        ``(..., P, 3)``: normalised x, y and the peak value clamped to [0, 1] as confidence,
        so an all-zero (missing) map decodes with confidence 0.
    """
    if heatmaps.ndim < 3:
        raise ValueError(f"heatmaps must be (..., P, h, w), got {tuple(heatmaps.shape)}")
    h, w = heatmaps.shape[-2:]
    flat = heatmaps.to(_compute_dtype(heatmaps.dtype)).flatten(-2)  # (..., P, h*w)
    peak, index = flat.max(dim=-1)
    iy, ix = index // w, index % w

    def sample(dy: int, dx: int) -> torch.Tensor:
        yy = (iy + dy).clamp(0, h - 1)
        xx = (ix + dx).clamp(0, w - 1)
        return flat.gather(-1, (yy * w + xx)[..., None])[..., 0]

    def refine(minus: torch.Tensor, plus: torch.Tensor, pos: torch.Tensor, n: int) -> torch.Tensor:
        inside = (pos > 0) & (pos < n - 1) & (minus > 0) & (plus > 0) & (peak > 0)
        tiny = torch.finfo(flat.dtype).tiny  # keeps log finite where `inside` is False anyway
        offset = _parabola_offset(
            minus.clamp_min(tiny).log(), peak.clamp_min(tiny).log(), plus.clamp_min(tiny).log()
        )
        ok = inside & torch.isfinite(offset)
        return torch.where(ok, offset.clamp(-0.5, 0.5), torch.zeros_like(offset))

    dx = refine(sample(0, -1), sample(0, 1), ix, w)
    dy = refine(sample(-1, 0), sample(1, 0), iy, h)
    x = (ix.to(flat.dtype) + 0.5 + dx) / w
    y = (iy.to(flat.dtype) + 0.5 + dy) / h
    return torch.stack([x, y, peak.clamp(0.0, 1.0)], dim=-1)


def soft_argmax(
    heatmaps: torch.Tensor, beta: float | None = None, window: int | None = None
) -> torch.Tensor:
    """Differentiable keypoint location: the weighted mean of pixel centres.

    The pose-distance loss ``L_pd`` compares keypoints decoded from the generator's maps with
    the targets; a hard argmax is piecewise constant (zero gradient), so the loss decodes with
    this expectation instead, which is smooth in every heatmap value.

    Args:
        heatmaps: ``(..., P, h, w)``.
        beta: ``None`` -- weights are the heatmap itself clamped at 0; for a rendered Gaussian
            the weighted mean of its samples is its centre (exact up to the tail cut off by the
            border), so targets decode without bias. A float -- weights are
            ``softmax(beta * heatmap)`` over the map, the usual choice for raw network outputs
            that may be negative or flat; larger ``beta`` concentrates on the peak.
        window: if given, only pixels within ``+-window`` px (per axis) of the integer argmax get
            weight. Far background pixels otherwise drag the mean towards the map centre (a
            softmax gives every background pixel weight ``exp(0)``) and a peak near the border
            loses its cut-off tail. The window is chosen without gradient, but the result is
            still differentiable with respect to every heatmap value inside it.

    Returns:
        ``(..., P, 2)`` normalised xy (float32, or float64 for float64 input). A map with no
        positive weight (e.g. an all-zero map with ``beta=None``) decodes to the map centre.
    """
    if heatmaps.ndim < 3:
        raise ValueError(f"heatmaps must be (..., P, h, w), got {tuple(heatmaps.shape)}")
    if window is not None and window < 0:
        raise ValueError(f"window must be non-negative, got {window}")
    h, w = heatmaps.shape[-2:]
    hm = heatmaps.to(_compute_dtype(heatmaps.dtype))
    cx, cy = _pixel_centres(w, hm), _pixel_centres(h, hm)

    inside = None
    if window is not None:
        index = hm.detach().flatten(-2).argmax(dim=-1)
        iy, ix = (index // w)[..., None], (index % w)[..., None]
        near_x = (cx - 0.5 - ix).abs() <= window  # (..., P, w)
        near_y = (cy - 0.5 - iy).abs() <= window  # (..., P, h)
        inside = near_y[..., :, None] & near_x[..., None, :]

    if beta is None:
        weights = hm.clamp_min(0.0)
        if inside is not None:
            weights = weights * inside.to(weights.dtype)
    else:
        logits = beta * hm
        if inside is not None:
            logits = logits.masked_fill(~inside, float("-inf"))
        weights = torch.softmax(logits.flatten(-2), dim=-1).unflatten(-1, (h, w))

    total = weights.sum(dim=(-2, -1))
    has_mass = total > 0
    safe_total = torch.where(has_mass, total, torch.ones_like(total))
    x = (weights.sum(dim=-2) * cx).sum(dim=-1) / safe_total  # marginal over rows
    y = (weights.sum(dim=-1) * cy).sum(dim=-1) / safe_total  # marginal over columns
    x = torch.where(has_mass, x / w, torch.full_like(x, 0.5))
    y = torch.where(has_mass, y / h, torch.full_like(y, 0.5))
    return torch.stack([x, y], dim=-1)
