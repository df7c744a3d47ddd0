"""PGMM's training losses, one small function per term, combined by :class:`PGMMLoss`."""

from pgmm.losses.hands import hand_detail_loss, hand_mask
from pgmm.losses.motion import background_loss, equivariance_loss, warp_loss
from pgmm.losses.perceptual import ImagePyramid, Vgg19Features, perceptual_loss
from pgmm.losses.pose import align_loss, driving_keypoint_loss, pose_distance_loss
from pgmm.losses.total import PGMMLoss

__all__ = [
    "ImagePyramid",
    "PGMMLoss",
    "Vgg19Features",
    "align_loss",
    "background_loss",
    "driving_keypoint_loss",
    "equivariance_loss",
    "hand_detail_loss",
    "hand_mask",
    "perceptual_loss",
    "pose_distance_loss",
    "warp_loss",
]
