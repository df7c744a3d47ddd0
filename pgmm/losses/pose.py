"""PGMM's pose losses: L_pd, L_align, and the distillation of the pose-driven keypoint head.

* ``L_pd`` (pose distance) -- the frozen pose estimator P_e must find the driving pose in the
  *generated* frame. Reconstruction losses weigh a misplaced finger by its few pixels; L_pd
  weighs it like any other keypoint, which is the paper's lever on fine-grained hands.
* ``L_align`` -- the generator's intermediate features on the motion path, Y_s, must match
  those of a pass on the driving image itself without CMM, Y_d.
* driving-keypoint distillation (ours) -- our text-driven pipeline has no driving image, so a
  head predicts the keypoint detector's output from pose heatmaps; it learns from the detector.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from pgmm.models.pose_estimator import PoseEstimator
from pgmm.pose.heatmaps import soft_argmax

__all__ = ["align_loss", "driving_keypoint_loss", "pose_distance_loss"]


def pose_distance_loss(
    estimator: PoseEstimator,
    generated: torch.Tensor,
    driving_heatmaps: torch.Tensor,
    beta: float | None = None,
    window: int | None = 5,
    visibility_threshold: float = 0.1,
) -> torch.Tensor:
    """L_pd: visibility-weighted mean L1 between the keypoints of ``P_e(generated)`` and of H.

    The paper decodes both heatmap sets with argmax. An argmax is piecewise constant, so its
    gradient is zero almost everywhere and L_pd would train nothing; the generated side is
    decoded with :func:`~pgmm.pose.heatmaps.soft_argmax` instead. The driving side uses the
    *same* decoder (without gradient): decoder biases -- a truncated window, a blob cut by the
    border -- then cancel, and the loss is exactly 0 when P_e's maps equal H.

    L1 rather than L2: early in training a blurry hand puts some predicted keypoints far off,
    and L1 keeps their pull bounded instead of letting them dominate the batch. Distances are
    in normalised image coordinates ([0, 1] across the frame), independent of resolution.

    Each keypoint is weighted by its visibility, the peak of its driving heatmap clamped to
    [0, 1]; keypoints whose peak is at most ``visibility_threshold`` (absent or occluded) get
    weight 0, so the generator is never pushed to draw a point the pose does not have. The
    result is the weighted mean over keypoints and both coordinates (0 if nothing is visible).

    The estimator must be frozen (:meth:`~pgmm.models.pose_estimator.PoseEstimator.freeze`):
    the gradient goes through it into ``generated`` but never into its parameters.

    Args:
        estimator: P_e, ``(B, 3, H, W) -> (B, K, h, w)`` Gaussian-regression heatmaps.
        generated: ``(B, 3, H, W)`` generated frames in [0, 1].
        driving_heatmaps: ``(B, K, h', w')`` the driving pose H (any map size).
        beta, window: the soft-argmax decoding (see :func:`~pgmm.pose.heatmaps.soft_argmax`):
            ``beta=None`` suits P_e's non-negative regression maps, and the window (in map
            pixels around the peak; 5 is 2.5 sigma of P_e's 2-px training Gaussians) keeps
            low background noise from dragging the estimate towards the map centre.
        visibility_threshold: driving peaks at or below this count as not visible.
    """
    if estimator.training or any(p.requires_grad for p in estimator.parameters()):
        raise ValueError(
            "L_pd needs a frozen pose estimator (eval mode, no trainable parameters): "
            "call estimator.freeze() first"
        )
    predicted_maps = estimator(generated).float()  # bf16 under autocast: decode in float32
    if predicted_maps.shape[:2] != driving_heatmaps.shape[:2]:
        raise ValueError(
            f"P_e gives {tuple(predicted_maps.shape[:2])} (B, K) maps, driving heatmaps are "
            f"{tuple(driving_heatmaps.shape[:2])}"
        )
    predicted = soft_argmax(predicted_maps, beta=beta, window=window)
    with torch.no_grad():
        target = soft_argmax(driving_heatmaps, beta=beta, window=window)
        peak = driving_heatmaps.flatten(2).amax(-1).clamp(0.0, 1.0).to(predicted.dtype)
        weight = torch.where(peak > visibility_threshold, peak, torch.zeros_like(peak))
    error = (predicted - target).abs().sum(-1)  # (B, K): |dx| + |dy|
    return (weight * error).sum() / (2 * weight.sum()).clamp_min(torch.finfo(weight.dtype).eps)


def align_loss(Y_s: Sequence[torch.Tensor], Y_d: Sequence[torch.Tensor]) -> torch.Tensor:
    """L_align: mean over generator levels of ``mean |Y_s - Y_d|``.

    ``Y_d`` (the pass on the driving image's own features, no CMM) is detached: it is the
    target that says where the motion path's features should be. With gradient on both sides
    the shared encoder/generator weights could shrink the gap by making both passes' features
    small or input-independent -- the collapse a stop-gradient on the target prevents -- so
    L_align only moves the motion path (CMM flow and occlusion, fusion, merges) towards it.
    The paper writes ``|Y_s - Y_d|`` without saying; this is our choice.

    Args:
        Y_s, Y_d: generator intermediates (coarsest first), level by level the same shapes.
    """
    if len(Y_s) != len(Y_d) or not Y_s:
        raise ValueError(f"L_align needs matching non-empty levels, got {len(Y_s)} and {len(Y_d)}")
    levels = []
    for level, (ys, yd) in enumerate(zip(Y_s, Y_d, strict=True)):
        if ys.shape != yd.shape:
            raise ValueError(f"level {level}: Y_s {tuple(ys.shape)} != Y_d {tuple(yd.shape)}")
        levels.append((ys.float() - yd.detach().float()).abs().mean())
    return torch.stack(levels).mean()


def driving_keypoint_loss(
    kp_from_pose: torch.Tensor,
    bg_from_pose: torch.Tensor,
    kp_driving: torch.Tensor,
    bg_param: torch.Tensor,
) -> torch.Tensor:
    """Distil the pose-driven head into the image-based motion estimates (L1).

    ``mean |kp_from_pose - kp_driving| + mean |bg_from_pose - bg_param|`` over the 2x3 affine
    part (the fixed last row carries no information). The targets -- keypoint detector and
    background predictor on the driving *image* -- are detached: they are the teachers,
    trained by the reconstruction losses, and must not drift towards the head's guesses.

    Args:
        kp_from_pose, kp_driving: ``(B, K, 2)``.
        bg_from_pose, bg_param: ``(B, 3, 3)``.
    """
    if kp_from_pose.shape != kp_driving.shape or bg_from_pose.shape != bg_param.shape:
        raise ValueError(
            f"head predictions {tuple(kp_from_pose.shape)}, {tuple(bg_from_pose.shape)} do not "
            f"match targets {tuple(kp_driving.shape)}, {tuple(bg_param.shape)}"
        )
    keypoints = (kp_from_pose - kp_driving.detach()).abs().mean()
    background = (bg_from_pose[:, :2] - bg_param[:, :2].detach()).abs().mean()
    return keypoints + background
