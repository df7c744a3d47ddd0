"""PGMM hyper-parameters: one dataclass, one YAML file per variant (``configs/pgmm/*.yaml``).

The five variants of the paper's ablation differ only by config -- no code edits:

============  ==========  =========  ==================  ===================================
variant       motion      fusion     extra loss          meaning
============  ==========  =========  ==================  ===================================
tpsmm         tpsmm       none       --                  the baseline (TPSMM warping, no pose)
pose_sum      cmm         sum        --                  CMM + pose features *added*
pfm           cmm         pfm        --                  CMM + Pose Fusion Module (attention)
pfm_pd        cmm         pfm        L_pd                + pose-distance loss
full          cmm         pfm        L_pd + L_align      + feature-alignment loss (the paper)
============  ==========  =========  ==================  ===================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pgmm.checkpoint import DictConfig, yaml_section

VARIANTS = ("tpsmm", "pose_sum", "pfm", "pfm_pd", "full")
_VARIANT_DEFAULTS = {
    "tpsmm": ("tpsmm", "none"),
    "pose_sum": ("cmm", "sum"),
    "pfm": ("cmm", "pfm"),
    "pfm_pd": ("cmm", "pfm"),
    "full": ("cmm", "pfm"),
}


def default_loss_weights(variant: str = "full") -> dict[str, float]:
    """TPSMM's loss weights plus PGMM's L_pd and L_align where the variant uses them.

    The paper's Eq. 7 is ``L = L_r + L_pd + L_align`` with unit weights, L_r being TPSMM's loss,
    which itself weighs each of its terms by 10. Here L_pd and L_align get that same 10, i.e. 10x
    the paper's literal relative weight. No experiment chose this: it was set when this config
    was first written (commit 1758ea8, no stated reason). Measured since (docs/results.md, the
    2,400-step ablation): 1 reconstructs better, 10 transfers hands to a new person better
    (``configs/pgmm/full-small-w1.yaml`` is the unit-weight recipe). Even "unit weight" is not
    a fixed scale: Eq. 8 does not
    give the unit of its argmax coordinates (heatmap pixels would make the paper's L_pd tens of
    times larger per unit of error than ours, which is in [0, 1] frame units). Override per
    variant with ``loss_weights`` in the YAML.
    """
    weights = {
        "perceptual": 10.0,  # per VGG layer, over the image pyramid
        "equivariance": 10.0,
        "warp": 10.0,
        "background": 10.0,
        "driving_keypoints": 10.0,  # distillation of the pose-driven keypoint head
        "pose_distance": 0.0,  # L_pd
        "align": 0.0,  # L_align
        "hands": 0.0,  # L_hands (ours, pgmm/losses/hands.py): opt-in, no shipped recipe uses it
    }
    if variant in ("pfm_pd", "full"):
        weights["pose_distance"] = 10.0
    if variant == "full":
        weights["align"] = 10.0
    return weights


@dataclass
class PGMMConfig(DictConfig):
    """Everything needed to build a :class:`~pgmm.models.pgmm.PGMM` (and check a checkpoint)."""

    variant: str = "full"
    image_size: int = 128
    motion: str = ""  # "cmm" | "tpsmm"; empty = the variant's default
    fusion: str = ""  # "pfm" | "sum" | "none"; empty = the variant's default
    # Motion branch E_M (TPSMM).
    num_tps: int = 20
    points_per_tps: int = 5
    backbone_width: float = 1.0  # ResNet-18 width multiplier (keypoints, background)
    dense_block_expansion: int = 64
    dense_num_blocks: int = 5
    dense_max_features: int = 1024
    dense_scale_factor: float = 0.25
    kp_variance: float = 0.01
    # Image encoder E_I and generator G.
    block_expansion: int = 64
    max_features: int = 512
    num_down_blocks: int = 3
    # Pose branch: PoseNet P_d over the 36 heatmaps of P_e (stride 4), and PFM.
    num_keypoints: int = 36
    heatmap_stride: int = 4
    # Gaussian sigma (heatmap pixels) of the pose maps it was trained on, for serving and
    # evaluation to draw alike; older checkpoints load with 1.5, what all of them were trained with.
    heatmap_sigma: float = 1.5
    pose_block_expansion: int = 32
    # How P_d doubles its resolution: "transposed" (3x3 stride-2 transposed conv, every
    # checkpoint before issue 16) puts a checkerboard into the pose features that the generator
    # adds to its 128^2 output stage (the dot artefact); "bilinear" is upsample-then-conv.
    pose_upsample: str = "transposed"
    pfm_max_tokens: int = 1024  # attention only at scales with at most this many tokens
    # Width of the *random* perceptual VGG19 used when no real VGG19 weights are given
    # (pgmm.losses.perceptual.Vgg19Features); real weights always use the full network.
    perceptual_width: float = 1.0
    # Pose-driven inference head.
    driving_head_channels: int = 64
    loss_weights: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown PGMM variant {self.variant!r}; choose from {VARIANTS}")
        motion, fusion = _VARIANT_DEFAULTS[self.variant]
        self.motion = self.motion or motion
        self.fusion = self.fusion or fusion
        if self.motion not in ("cmm", "tpsmm"):
            raise ValueError(f"motion must be 'cmm' or 'tpsmm', got {self.motion!r}")
        if self.fusion not in ("pfm", "sum", "none"):
            raise ValueError(f"fusion must be 'pfm', 'sum' or 'none', got {self.fusion!r}")
        if self.pose_upsample not in ("transposed", "bilinear"):
            raise ValueError(
                f"pose_upsample must be 'transposed' or 'bilinear', got {self.pose_upsample!r}"
            )
        factor = 2**self.num_down_blocks
        if self.image_size % (factor * self.heatmap_stride) or self.image_size < 32:
            raise ValueError(
                f"image_size {self.image_size} must be >= 32 and divisible by "
                f"{factor * self.heatmap_stride} (2^num_down_blocks x heatmap stride)"
            )
        if self.heatmap_sigma <= 0:
            raise ValueError(f"heatmap_sigma must be positive, got {self.heatmap_sigma}")
        self.loss_weights = {**default_loss_weights(self.variant), **self.loss_weights}

    @property
    def uses_pose(self) -> bool:
        return self.fusion != "none"

    @property
    def num_keypoints_tps(self) -> int:
        return self.num_tps * self.points_per_tps

    @classmethod
    def from_yaml(cls, path: str | Path) -> PGMMConfig:
        """The ``model:`` section of a ``configs/pgmm/*.yaml`` file (or a flat file of keys)."""
        return cls.from_dict(yaml_section(path, "model", "PGMM", whole_if_absent=True))
