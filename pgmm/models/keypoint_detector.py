"""Keypoint detector of the motion branch: image -> unsupervised TPS control points.

TPSMM describes the motion between two frames by ``num_tps`` thin-plate splines, each fixed by
``points_per_tps`` control points detected independently in the source and in the driving frame.
The points are unsupervised: nothing names them, they only have to make the warps, and hence
the reconstruction, good. A global regressor (ResNet-18 -> linear) suffices because each point
is a free coordinate, not a localised landmark that would need a heatmap.
"""

from __future__ import annotations

import torch
from torch import nn

from pgmm.models.resnet import ResNet18

__all__ = ["KeypointDetector"]


class KeypointDetector(nn.Module):
    """ResNet-18 -> ``fc`` -> tanh: ``num_tps * points_per_tps`` points in ``[-1, 1]``.

    Args:
        num_tps: number of thin-plate spline transforms.
        points_per_tps: control points per transform (TPSMM uses 5: with 3 degrees of freedom
            taken by the affine part, 5 leaves 2 for a non-rigid bend).
        width: ResNet-18 width multiplier (1.0 = torchvision's shapes, so
            :func:`~pgmm.models.resnet.load_pretrained_backbone` can load ImageNet weights
            into ``self.backbone``).
    """

    def __init__(self, num_tps: int = 20, points_per_tps: int = 5, width: float = 1.0) -> None:
        super().__init__()
        self.num_tps = num_tps
        self.points_per_tps = points_per_tps
        self.num_keypoints = num_tps * points_per_tps
        self.backbone = ResNet18(num_outputs=2 * self.num_keypoints, width=width)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` -> ``(B, num_tps * points_per_tps, 2)`` as ``(x, y)``.

        The coordinates follow :func:`~pgmm.models.tps.make_coordinate_grid`; tanh keeps them
        inside the image. Points ``[k * points_per_tps, (k + 1) * points_per_tps)`` belong to
        transform ``k``.
        """
        return torch.tanh(self.backbone(image)).view(image.shape[0], self.num_keypoints, 2)
