"""Coarse Motion Module (CMM): move source features with an optical flow, keep appearance.

At each generator scale, Conv-Flow (7x7 conv + softmax over the motion branch's N
deformations) predicts a *per-scale* optical flow from the motion features X_m; the input
features are warped with it, Conv-Mask (3x3 conv + sigmoid) predicts the occlusion O, and

    X_out = [X_in, (1 - O) * warp(X_in)]

Keeping X_in next to the warped copy lets the generator fall back to unwarped appearance where
the flow is unreliable. The "no CMM" pass of L_align (Y_d = G(X_d, -, X_p)) is the same module
with identity flow and no occlusion: X_out = [X_in, X_in].

Conv-Mask departs from the paper's text on purpose: the paper writes "3x3 conv + softmax", but
the mask has a single channel (O is H x W), and a softmax over one channel is 1 everywhere --
O would be constant and (1 - O) would erase the warped half of X_out. A per-pixel sigmoid gives
a mask in (0, 1), as TPSMM's occlusion maps do. (Conv-Flow's softmax is kept: it runs over the
N deformations, where it is a real choice between them.)

``TPSMMWarp`` is the baseline's warping (TPSMM): one global flow and occlusion maps from the
dense-motion network, X_out = occlusion * warp(X_in).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pgmm.models.tps import exact_coordinates


def resize_grid(grid: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Resize sampling grids ``(..., h, w, 2)`` to ``size`` ``(h', w')`` (values are
    resolution-free)."""
    lead, (h, w) = grid.shape[:-3], grid.shape[-3:-1]
    out_h, out_w = size
    if (h, w) == (out_h, out_w):
        return grid
    flat = grid.reshape(-1, h, w, 2).permute(0, 3, 1, 2)
    flat = F.interpolate(flat, size=(out_h, out_w), mode="bilinear", align_corners=False)
    return flat.permute(0, 2, 3, 1).reshape(*lead, out_h, out_w, 2)


def blend_deformations(
    weights: torch.Tensor, deformations: torch.Tensor, chunk: int = 8
) -> torch.Tensor:
    """The flow ``sum_n weights_n * deformations_n``, the deformations resized to the weights'.

    Args:
        weights: ``(B, N, H, W)`` per-pixel weights of the ``N`` deformations (a softmax).
        deformations: ``(B, N, h, w, 2)`` sampling grids at the motion resolution.

    Returns the ``(B, H, W, 2)`` sampling grid. Equal to resizing every grid with
    :func:`resize_grid` and summing their weighted product, up to float rounding (< 1e-7), but
    about 6x cheaper at 128^2 on a CPU: the grids are resized as ``2N`` contiguous planes
    (interpolating ``(B*N, 2, h, w)`` views of the ``(..., 2)`` layout is slow), ``chunk``
    deformations at a time (so no intermediate outgrows glibc's 32 MiB mmap threshold and
    faults in fresh pages on every call), and accumulated in place instead of materialising
    the ``(B, N, H, W, 2)`` product.
    """
    batch, n, h, w, _ = deformations.shape
    size = tuple(weights.shape[-2:])
    planes = deformations.permute(0, 1, 4, 2, 3).reshape(batch, 2 * n, h, w)
    flow: torch.Tensor | None = None
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        part = planes[:, 2 * start : 2 * stop]
        if (h, w) != size:
            part = F.interpolate(part, size=size, mode="bilinear", align_corners=False)
        part = part.reshape(batch, stop - start, 2, *size)
        for j in range(stop - start):
            weight = weights[:, start + j : start + j + 1]
            flow = part[:, j] * weight if flow is None else flow.addcmul_(part[:, j], weight)
    assert flow is not None, "no deformations to blend"
    return flow.permute(0, 2, 3, 1)


def warp(features: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Backward warp: output pixel p takes ``features`` at ``grid[p]`` (grid_sample convention).

    The grid is never rounded to the features' dtype (bf16 under autocast would put a sample up
    to half a pixel off at 128x128): half-precision features are sampled in the grid's float32
    and the result handed back in their dtype, so the layers after the warp still run in half.
    """
    dtype = torch.promote_types(features.dtype, grid.dtype)
    with exact_coordinates(features.device):
        warped = F.grid_sample(
            features.to(dtype),
            grid.to(dtype),
            mode="bilinear",
            padding_mode="border",
            align_corners=False,
        )
    return warped.to(features.dtype)


class CMM(nn.Module):
    """X_out = [X_in, (1 - O) * warp(X_in, sum_n softmax(ConvFlow(X_m))_n * T_n)]."""

    def __init__(self, motion_channels: int, num_deformations: int) -> None:
        super().__init__()
        self.conv_flow = nn.Conv2d(motion_channels, num_deformations, 7, padding=3)
        self.conv_mask = nn.Conv2d(motion_channels, 1, 3, padding=1)

    def forward(
        self,
        x: torch.Tensor,
        motion_features: torch.Tensor | None,
        deformations: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Return (X_out, flow, occlusion); ``motion_features is None`` -> the no-CMM pass."""
        if motion_features is None or deformations is None:
            return torch.cat([x, x], dim=1), None, None
        size = tuple(x.shape[-2:])
        # Scales finer than the motion features (1/4) gain nothing from convolving upsampled
        # features: run the convs at the motion resolution and upsample their outputs, which
        # keeps the full-resolution CMM as cheap as the coarse ones.
        work = min(size, tuple(motion_features.shape[-2:]))
        m = motion_features
        if tuple(m.shape[-2:]) != work:
            m = F.interpolate(m, size=work, mode="bilinear", align_corners=False)
        mask = self.conv_mask(m)
        if work != size:
            mask = F.interpolate(mask, size=size, mode="bilinear", align_corners=False)
        # The flow is a sampling grid: Conv-Flow's logits, their softmax and the weighted sum of
        # the deformations stay in float32 under autocast (in bf16 the flow was ~0.2 px off at
        # 128x128). Conv-Flow has only N output channels at the motion resolution: cheap.
        with exact_coordinates(x.device):
            logits = self.conv_flow(m.to(self.conv_flow.weight.dtype))
            if work != size:
                logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
            weights = torch.softmax(logits, dim=1)  # (B, N, h, w)
            flow = blend_deformations(weights, deformations.to(weights.dtype))
        occlusion = torch.sigmoid(mask)
        return torch.cat([x, (1 - occlusion) * warp(x, flow)], dim=1), flow, occlusion


class TPSMMWarp(nn.Module):
    """The baseline: X_out = occlusion * warp(X_in, dense-motion flow); no parameters."""

    def forward(
        self, x: torch.Tensor, flow: torch.Tensor | None, occlusion: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        if flow is None or occlusion is None:
            return x, None, None
        size = x.shape[-2:]
        flow = resize_grid(flow, size)
        if occlusion.shape[-2:] != size:
            occlusion = F.interpolate(occlusion, size=size, mode="bilinear", align_corners=False)
        return occlusion * warp(x, flow), flow, occlusion
