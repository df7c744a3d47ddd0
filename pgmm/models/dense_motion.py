"""Dense-motion network: from sparse keypoint motion to a per-pixel flow and occlusion masks.

The keypoints give ``num_tps`` thin-plate spline warps, each right for some body part and wrong
elsewhere (a TPS fitted to the right hand says nothing about the face). Together with the
identity (static regions) and the background affine transform (camera motion) that makes
``N = num_tps + 2`` candidate deformations. A network looks at what each candidate produces --
the source warped by it -- and at where keypoints moved, and predicts per pixel a softmax over
the candidates; the optical flow is the resulting weighted sum. It also predicts occlusion
masks: where the driving frame shows something the source cannot provide (a hand uncovering
the chest), the generator must inpaint instead of copying warped features.

All of it runs at ``scale_factor`` of the input resolution (64x64 for 256x256 frames): flows are
smooth, so the saving is large and the loss of precision small.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pgmm.models.hourglass import Hourglass, NormKind
from pgmm.models.tps import TPS, apply_affine, exact_coordinates, make_coordinate_grid

__all__ = ["DenseMotion", "MotionOutput"]


@dataclass
class MotionOutput:
    """What the motion branch hands to the generator (and to PGMM's CMM).

    ``h, w`` is the dense-motion resolution (``scale_factor`` times the input); ``N = num_tps
    + 2`` deformations are ordered ``[identity, background affine, tps_1 .. tps_num_tps]``.
    Grids follow ``F.grid_sample(align_corners=False)``.
    """

    deformations: torch.Tensor  # (B, N, h, w, 2) sampling grids
    contribution: torch.Tensor  # (B, N, h, w) softmax weights (after TPS dropout)
    optical_flow: torch.Tensor  # (B, h, w, 2) contribution-weighted sum of the deformations
    occlusion: list[torch.Tensor]  # (B, 1, H*s, W*s) per occlusion scale s; 1 = visible
    features: torch.Tensor  # (B, C_m, h, w) hourglass output X_m
    deformed_source: torch.Tensor  # (B, N, C, h, w) downscaled source warped by each deformation


def _gaussians(keypoints: torch.Tensor, grid: torch.Tensor, variance: float) -> torch.Tensor:
    """``(B, K, 2)`` keypoints on an ``(h, w, 2)`` grid -> ``(B, K, h, w)`` unnormalised
    Gaussians ``exp(-|p - kp|^2 / (2 variance))`` (peak 1)."""
    offsets = grid[None, None] - keypoints[:, :, None, None, :]
    return torch.exp(-0.5 * offsets.square().sum(-1) / variance)


class DenseMotion(nn.Module):
    """TPSMM's dense-motion network (PGMM's ``E_M`` trunk).

    Args:
        num_tps: number of TPS transforms.
        points_per_tps: keypoints per transform.
        num_channels: channels of the source image.
        block_expansion, num_blocks, max_features: hourglass size (see
            :class:`~pgmm.models.hourglass.Hourglass`). The dense-motion input must be
            divisible by ``2^num_blocks``.
        scale_factor: dense-motion resolution relative to the input.
        kp_variance: variance of the keypoint Gaussians, in normalised coordinates.
        occlusion_scales: resolutions, relative to the input, of the occlusion masks (one per
            generator level that consumes one).
        norm: normalisation of the hourglass blocks.

    Attributes:
        num_deformations: ``N = num_tps + 2``.
        feature_channels: ``C_m``, the channels of :attr:`MotionOutput.features`.
    """

    def __init__(
        self,
        num_tps: int = 20,
        points_per_tps: int = 5,
        num_channels: int = 3,
        block_expansion: int = 64,
        num_blocks: int = 5,
        max_features: int = 1024,
        scale_factor: float = 0.25,
        kp_variance: float = 0.01,
        occlusion_scales: Sequence[float] = (0.125, 0.25, 0.5, 1.0),
        norm: NormKind = "instance",
    ) -> None:
        super().__init__()
        self.num_tps = num_tps
        self.points_per_tps = points_per_tps
        self.num_deformations = num_tps + 2
        self.scale_factor = scale_factor
        self.kp_variance = kp_variance
        self.occlusion_scales = tuple(occlusion_scales)
        # Input: one heatmap difference per keypoint plus two all-zero maps standing for the
        # identity and background deformations (TPSMM's layout: the background slot of its
        # heatmap stack is a zero map), then the source warped by every deformation.
        heatmap_channels = num_tps * points_per_tps + 2
        in_features = heatmap_channels + num_channels * self.num_deformations
        self.hourglass = Hourglass(in_features, block_expansion, num_blocks, max_features, norm)
        self.feature_channels = self.hourglass.out_channels[-1]
        self.contribution_head = nn.Conv2d(
            self.feature_channels, self.num_deformations, 7, padding=3
        )
        # Decoder level i (coarsest first) is at scale_factor / 2^(num_blocks - 1 - i) of the
        # input. Each mask comes from the level nearest in log-scale (the finer one on a tie)
        # and is interpolated to its exact size when no level matches -- e.g. full resolution,
        # above the dense-motion resolution.
        level_scales = [scale_factor / 2 ** (num_blocks - 1 - i) for i in range(num_blocks)]

        def nearest_level(scale: float) -> int:
            distance = [abs(math.log2(level / scale)) for level in level_scales]
            return min(range(num_blocks), key=lambda i: (distance[i], -i))

        self.occlusion_levels = [nearest_level(s) for s in self.occlusion_scales]
        self.occlusion_heads = nn.ModuleList(
            nn.Conv2d(self.hourglass.out_channels[i], 1, 7, padding=3)
            for i in self.occlusion_levels
        )

    def forward(
        self,
        source: torch.Tensor,
        kp_driving: torch.Tensor,
        kp_source: torch.Tensor,
        bg_param: torch.Tensor | None = None,
        dropout_p: float = 0.0,
    ) -> MotionOutput:
        """Predict the motion that turns ``source`` into the driving frame.

        Args:
            source: ``(B, C, H, W)`` source frame.
            kp_driving, kp_source: ``(B, num_tps * points_per_tps, 2)`` keypoints from
                :class:`~pgmm.models.keypoint_detector.KeypointDetector`.
            bg_param: ``(B, 3, 3)`` from :class:`~pgmm.models.bg_motion.BackgroundMotion`;
                ``None`` makes the background deformation the identity.
            dropout_p: TPS dropout probability, applied only in training mode: each TPS
                transform's contribution is zeroed with this probability per sample and the
                rest renormalised, so that in early training every transform must be useful on
                its own instead of a few dominating (TPSMM). Identity and background are never
                dropped.
        """
        batch, _, height, width = source.shape
        expected = (batch, self.num_tps * self.points_per_tps, 2)
        if kp_driving.shape != expected or kp_source.shape != expected:
            raise ValueError(
                f"keypoints must be {expected}, got {tuple(kp_driving.shape)} and "
                f"{tuple(kp_source.shape)}"
            )
        if not 0.0 <= dropout_p <= 1.0:
            raise ValueError(f"dropout_p must be in [0, 1], got {dropout_p}")
        h, w = round(height * self.scale_factor), round(width * self.scale_factor)
        small = source
        if (h, w) != (height, width):
            small = F.interpolate(
                source, size=(h, w), mode="bilinear", align_corners=False, antialias=True
            )

        # Coordinates stay float32 even in a half-precision model (see ``_deformations``).
        exact = torch.promote_types(source.dtype, torch.float32)
        grid = make_coordinate_grid(h, w, source.device, exact)
        deformations = self._deformations(grid, kp_driving, kp_source, bg_param)

        n = self.num_deformations
        repeated = small[:, None].expand(-1, n, -1, -1, -1).reshape(batch * n, -1, h, w)
        deformed = F.grid_sample(
            repeated, deformations.reshape(batch * n, h, w, 2).to(small.dtype), align_corners=False
        ).view(batch, n, -1, h, w)

        heatmaps = _gaussians(kp_driving, grid, self.kp_variance) - _gaussians(
            kp_source, grid, self.kp_variance
        )
        heatmaps = F.pad(heatmaps, (0, 0, 0, 0, 2, 0))  # zero maps: identity, background
        levels = self.hourglass(torch.cat([heatmaps, deformed.flatten(1, 2)], dim=1))

        logits = self.contribution_head(levels[-1])
        if self.training and dropout_p > 0:
            keep = torch.rand(batch, self.num_tps, device=source.device) >= dropout_p
            keep = torch.cat([keep.new_ones(batch, 2), keep], dim=1)
            logits = logits.masked_fill(~keep[:, :, None, None], float("-inf"))
        contribution = torch.softmax(logits, dim=1)
        with exact_coordinates(source.device):
            optical_flow = torch.einsum(
                "bnhw,bnhwc->bhwc", contribution.to(deformations.dtype), deformations
            )

        occlusion = []
        for scale, level, head in zip(
            self.occlusion_scales, self.occlusion_levels, self.occlusion_heads, strict=True
        ):
            mask = head(levels[level])
            size = (round(height * scale), round(width * scale))
            if mask.shape[-2:] != size:
                mask = F.interpolate(mask, size=size, mode="bilinear", align_corners=False)
            occlusion.append(torch.sigmoid(mask))

        return MotionOutput(
            deformations=deformations,
            contribution=contribution,
            optical_flow=optical_flow,
            occlusion=occlusion,
            features=levels[-1],
            deformed_source=deformed,
        )

    def _deformations(
        self,
        grid: torch.Tensor,
        kp_driving: torch.Tensor,
        kp_source: torch.Tensor,
        bg_param: torch.Tensor | None,
    ) -> torch.Tensor:
        """``(B, N, h, w, 2)`` sampling grids ``[identity, background, tps_1 ..]``, in
        ``grid``'s dtype (float32 at least) even under autocast (see
        :func:`~pgmm.models.tps.exact_coordinates`)."""
        batch = kp_driving.shape[0]
        h, w = grid.shape[:2]
        with exact_coordinates(grid.device):
            identity = grid.expand(batch, 1, h, w, 2)
            background = (
                identity
                if bg_param is None
                else apply_affine(grid[None, None], bg_param.to(grid.dtype))
            )
            shape = (batch, self.num_tps, self.points_per_tps, 2)
            kp_driving, kp_source = (k.to(grid.dtype).view(shape) for k in (kp_driving, kp_source))
            tps = TPS.fit(kp_driving, kp_source).warp_grid(h, w)
            return torch.cat([identity, background, tps], dim=1)
