"""The training objective of every PGMM variant: TPSMM's losses + L_pd + L_align + distillation.

One module reads the weights from :attr:`PGMMConfig.loss_weights`, so the ablation's variants
differ only by config (``tpsmm`` and ``pfm`` have ``pose_distance = align = 0``, ``pfm_pd`` adds
L_pd, ``full`` adds L_align). A term with weight 0 is not computed at all -- it costs no forward
pass (the perceptual loss's VGG is not even built) and appears in no log.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import cast

import torch
from torch import nn

from pgmm.losses.hands import hand_detail_loss, hand_mask
from pgmm.losses.motion import background_loss, equivariance_loss, warp_loss
from pgmm.losses.perceptual import TPSMM_SCALES, Vgg19Features, perceptual_loss
from pgmm.losses.pose import align_loss, driving_keypoint_loss, pose_distance_loss
from pgmm.models.config import PGMMConfig, default_loss_weights
from pgmm.models.pgmm import PGMM, PGMMOutput
from pgmm.models.pose_estimator import PoseEstimator

__all__ = ["PGMMLoss"]


class PGMMLoss(nn.Module):
    """Weighted loss terms of one PGMM training step.

    Args:
        config: the model's config; its ``loss_weights`` set every term's weight. The
            perceptual weight applies to each VGG layer (TPSMM's convention).
        vgg_weights: local torchvision VGG19 weights for the perceptual loss; ``None`` uses
            the fixed-seed random VGG19 (see :mod:`pgmm.losses.perceptual`).
        estimator: P_e for L_pd, required when ``pose_distance > 0``. It is frozen here
            (:meth:`~pgmm.models.pose_estimator.PoseEstimator.freeze`), so it stays in eval
            mode with no trainable parameters whatever the training loop does to this module.
        pyramid_scales: image pyramid of the perceptual loss (TPSMM's by default). Its coarsest
            level must still be large enough for the deepest VGG layer (16 px for relu5_1,
            i.e. image_size >= 128 with TPSMM's 1/8); checked here rather than mid-training.
    """

    def __init__(
        self,
        config: PGMMConfig,
        vgg_weights: str | Path | None = None,
        estimator: PoseEstimator | None = None,
        pyramid_scales: Sequence[float] = TPSMM_SCALES,
    ) -> None:
        super().__init__()
        weights = {name: float(w) for name, w in config.loss_weights.items()}
        unknown = sorted(set(weights) - set(default_loss_weights()))
        if unknown:
            raise ValueError(
                f"unknown loss weights {unknown}; known: {sorted(default_loss_weights())}"
            )
        negative = sorted(name for name, w in weights.items() if w < 0)
        if negative:
            raise ValueError(f"loss weights must be >= 0, got negative {negative}")
        if not any(weights.values()):
            raise ValueError("every loss weight is 0: there is nothing to train")
        if weights["pose_distance"] > 0 and estimator is None:
            raise ValueError(
                f"the {config.variant!r} config weighs L_pd (pose_distance = "
                f"{weights['pose_distance']}) but no estimator was given; pass P_e or set "
                "loss_weights.pose_distance to 0"
            )
        self.weights = weights
        self.pyramid_scales = tuple(pyramid_scales)
        self.vgg = None
        if weights["perceptual"] > 0:
            width = 1.0 if vgg_weights is not None else config.perceptual_width
            self.vgg = Vgg19Features(vgg_weights, width=width)
        coarsest = round(config.image_size * min(self.pyramid_scales))
        if self.vgg is not None and coarsest < self.vgg.min_size:
            raise ValueError(
                f"pyramid scale {min(self.pyramid_scales)} of {config.image_size} px images is "
                f"{coarsest} px, below the {self.vgg.min_size} px the VGG layers "
                f"{self.vgg.layers} need: drop the coarsest pyramid scale"
            )
        self.estimator = estimator.freeze() if estimator is not None else None

    def forward(
        self, model: PGMM, batch: dict[str, torch.Tensor], out: PGMMOutput
    ) -> dict[str, torch.Tensor]:
        """Every non-zero weighted term, by its ``loss_weights`` name, and their sum ``"total"``.

        Args:
            model: the PGMM that produced ``out`` (its keypoint detector, background predictor
                and encoder are run again by the equivariance, background and warp losses).
            batch: ``"source"``, ``"driving"`` ``(B, 3, H, W)`` in [0, 1],
                ``"driving_heatmaps"`` (for L_pd and L_hands) and ``"source_heatmaps"``.
            out: ``model(source, driving, driving_heatmaps, source_heatmaps, with_align=...)``;
                its ``Y_d`` must be set when L_align is weighted and the pose-driven head's
                predictions when ``driving_keypoints`` is.
        """
        w = self.weights
        source, driving = batch["source"], batch["driving"]
        terms: dict[str, torch.Tensor] = {}
        if self.vgg is not None:
            layer_weights = (w["perceptual"],) * len(self.vgg.layers)
            terms["perceptual"] = perceptual_loss(
                out.prediction, driving, self.vgg, self.pyramid_scales, layer_weights
            )
        if w["equivariance"] > 0:
            terms["equivariance"] = w["equivariance"] * equivariance_loss(
                model.kp_detector, driving, out.kp_driving
            )
        if w["warp"] > 0:
            # The warp loss detaches both pyramids: the forward pass's own E_I features are
            # reused (the source always, the driving frame with L_align's pass); without
            # L_align the driving frame is encoded here, without a graph.
            driving_feats = out.driving_features
            if driving_feats is None:
                with torch.no_grad():
                    driving_feats = model.encoder(driving)
            motion = out.motion
            # The baseline's dense-motion masks come coarsest first; CMM variants have none.
            visibility = motion.occlusion[::-1] if motion.occlusion else None
            terms["warp"] = w["warp"] * warp_loss(
                driving_feats, out.source_features, motion.optical_flow, visibility
            )
        if w["background"] > 0:
            terms["background"] = w["background"] * background_loss(
                model.bg_motion, source, driving, out.bg_param
            )
        if w["driving_keypoints"] > 0:
            if out.kp_driving_from_pose is None or out.bg_from_pose is None:
                raise ValueError(
                    "driving_keypoints is weighted but `out` has no pose-driven head output: "
                    "call the model with both driving_heatmaps and source_heatmaps"
                )
            terms["driving_keypoints"] = w["driving_keypoints"] * driving_keypoint_loss(
                out.kp_driving_from_pose, out.bg_from_pose, out.kp_driving, out.bg_param
            )
        if self.estimator is not None and w["pose_distance"] > 0:
            terms["pose_distance"] = w["pose_distance"] * pose_distance_loss(
                self.estimator, out.prediction, batch["driving_heatmaps"]
            )
        if w["hands"] > 0:
            mask = hand_mask(batch["driving_heatmaps"], out.prediction.shape[-1])
            terms["hands"] = w["hands"] * hand_detail_loss(out.prediction, driving, mask)
        if w["align"] > 0:
            if out.Y_d is None:
                raise ValueError("L_align is weighted but `out` has no Y_d: use with_align=True")
            terms["align"] = w["align"] * align_loss(out.Y_s, out.Y_d)
        terms["total"] = cast(torch.Tensor, sum(terms.values()))  # sum's start, 0, is an int
        return terms
