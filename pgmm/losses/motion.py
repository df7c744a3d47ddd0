"""TPSMM's losses on the motion branch E_M: equivariance, background and warp.

The keypoints, the background transform and the dense flow are unsupervised: nothing labels
them, only the reconstruction trains them. These three losses add the structure that the
reconstruction alone does not enforce:

* equivariance -- keypoints must move with the image, so they mark image content rather than
  arbitrary codes that only the dense-motion network can read;
* background -- the transform predicted for (source, driving) and for (driving, source) must be
  inverse to each other, so it describes a geometric camera motion;
* warp -- the source features warped by the dense flow must look like the driving frame's
  features, a direct signal for the flow that does not pass through the generator.

Coordinates and warps follow :mod:`pgmm.models.tps` (``grid_sample``, ``align_corners=False``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from pgmm.models.cmm import resize_grid, warp
from pgmm.models.tps import exact_coordinates, random_tps

__all__ = ["background_loss", "equivariance_loss", "warp_loss"]


def equivariance_loss(
    kp_detector: Callable[[torch.Tensor], torch.Tensor],
    driving: torch.Tensor,
    kp_driving: torch.Tensor,
    sigma_affine: float = 0.05,
    sigma_tps: float = 0.005,
    points_tps: int = 5,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``mean |kp_driving - T(kp_detector(driving o T))|`` for a random smooth warp ``T``.

    ``driving o T`` is the frame backward-warped by ``T`` (pixel ``p`` shows the driving frame
    at ``T(p)``), so content at ``q`` moves to ``T^-1(q)``. An equivariant detector finds
    ``T^-1(kp)`` there, and mapping those points through ``T`` must give back ``kp_driving``.
    Neither side is detached (as in TPSMM): both detections are pulled towards agreement.

    Args:
        kp_detector: ``(B, 3, H, W) -> (B, K, 2)``.
        driving: ``(B, 3, H, W)``.
        kp_driving: ``(B, K, 2)``, the detector's output on ``driving``.
        sigma_affine, sigma_tps, points_tps: the random warp (see
            :func:`~pgmm.models.tps.random_tps`); TPSMM's values by default.
        generator: for a reproducible warp; must live on ``driving``'s device.
    """
    transform = random_tps(
        driving.shape[0],
        sigma_affine,
        sigma_tps,
        points_tps,
        device=driving.device,
        dtype=driving.dtype,
        generator=generator,
    )
    transformed = transform.warp_image(driving)[:, 0]
    kp_transformed = kp_detector(transformed)
    kp_back = transform.warp_points(kp_transformed[:, None])[:, 0]
    return (kp_driving - kp_back).abs().mean()


def background_loss(
    bg_motion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    source: torch.Tensor,
    driving: torch.Tensor,
    bg_param: torch.Tensor,
) -> torch.Tensor:
    """``mean |bg(s, d) @ bg(d, s) - I|`` over the ``3 x 3`` homogeneous matrices (TPSMM).

    ``bg(s, d) = bg_param`` maps driving coordinates to source ones and ``bg(d, s)`` the
    reverse, so their product must be the identity. The product form (TPSMM's) rather than a
    distance to an explicit inverse has no matrix inversion, so a (near-)singular prediction
    early in training gives a finite loss and gradient instead of inf/NaN, and both directions
    are trained. No degenerate prediction reaches zero: with the last rows fixed to
    ``(0, 0, 1)``, the product is ``I`` only if the 2x2 parts are inverse matrices and the
    shifts cancel -- a genuine inverse pair, the identity ("static camera") being one.

    Args:
        bg_motion: ``(source, driving) -> (B, 3, 3)``, e.g.
            :class:`~pgmm.models.bg_motion.BackgroundMotion`.
        bg_param: ``bg_motion(source, driving)`` from the forward pass.
    """
    reverse = bg_motion(driving, source)
    eye = torch.eye(3, device=bg_param.device, dtype=torch.float32)
    with exact_coordinates(bg_param.device):  # a coordinate transform: no half-precision matmul
        return (bg_param.float() @ reverse.float() - eye).abs().mean()


def warp_loss(
    driving_features: Sequence[torch.Tensor],
    source_features: Sequence[torch.Tensor],
    optical_flow: torch.Tensor,
    visibility: Sequence[torch.Tensor] | None = None,
) -> torch.Tensor:
    """``sum_levels mean |E(driving) - warp(E(source), flow)|`` (TPSMM's warp loss).

    At every encoder level the flow is resized to the level (:func:`~pgmm.models.cmm.
    resize_grid`, as the generator does) and the source features are warped with the
    generator's :func:`~pgmm.models.cmm.warp`.

    Both feature pyramids are detached, as in TPSMM: the loss trains the *flow* only. With
    gradient into the encoder it could be minimised without any motion, by the encoder
    shrinking its features towards a constant. For the same reason ``visibility`` (masks of
    the baseline's dense-motion network, 1 = visible in the source) is detached: it only
    excludes regions that no flow can explain, and must not learn to hide the error.

    Args:
        driving_features, source_features: the image encoder's pyramids of the driving and
            the source frame, finest first, level by level the same shapes.
        optical_flow: ``(B, h, w, 2)`` sampling grid from the dense-motion network.
        visibility: optional ``(B, 1, h_l, w_l)`` masks, one per level (finest first); each is
            resized to its level when the sizes differ.
    """
    if len(driving_features) != len(source_features):
        raise ValueError(
            f"{len(driving_features)} driving and {len(source_features)} source feature levels"
        )
    if visibility is not None and len(visibility) != len(driving_features):
        raise ValueError(
            f"{len(visibility)} visibility masks for {len(driving_features)} feature levels"
        )
    total = optical_flow.new_zeros(())
    for level, (target, source) in enumerate(zip(driving_features, source_features, strict=True)):
        if target.shape != source.shape:
            raise ValueError(
                f"level {level}: driving {tuple(target.shape)} != source {tuple(source.shape)}"
            )
        size = tuple(target.shape[-2:])
        # Float32 features (bf16 under autocast), so the flow keeps float32 coordinates.
        warped = warp(source.detach().float(), resize_grid(optical_flow, size))
        target = target.detach().float()
        if visibility is not None:
            mask = visibility[level].detach()
            if tuple(mask.shape[-2:]) != size:
                mask = F.interpolate(mask, size=size, mode="bilinear", align_corners=False)
            warped, target = warped * mask, target * mask
        total = total + (target - warped).abs().mean()
    return total
