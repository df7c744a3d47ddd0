"""PoseNet P_d: the 36 pose heatmaps -> pose features at every generator scale.

The heatmaps (stride 4 from P_e, or rendered from a pose sequence) are interpolated to the
coarsest generator scale (1/8), projected by a 3x3 conv, and brought back up by 3 up blocks
[3x3 transposed conv stride 2, InstanceNorm, ReLU]; the feature of every scale is emitted, so
the pose reaches each generator stage at its own resolution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PoseNet(nn.Module):
    def __init__(self, num_keypoints: int = 36, channels: list[int] | None = None) -> None:
        """``channels``: pose feature channels finest-first (one per generator scale)."""
        super().__init__()
        self.channels = channels or [32, 64, 128, 256]
        coarse = self.channels[-1]
        self.stem = nn.Sequential(
            nn.Conv2d(num_keypoints, coarse, 3, padding=1),
            nn.InstanceNorm2d(coarse, affine=True),
            nn.ReLU(inplace=True),
        )
        ups = []
        for cin, cout in zip(self.channels[:0:-1], self.channels[-2::-1], strict=True):
            ups.append(
                nn.Sequential(
                    nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1),
                    nn.InstanceNorm2d(cout, affine=True),
                    nn.ReLU(inplace=True),
                )
            )
        self.up = nn.ModuleList(ups)

    def forward(self, heatmaps: torch.Tensor, coarse_size: tuple[int, int]) -> list[torch.Tensor]:
        """Pose features finest-first, the coarsest at ``coarse_size``."""
        x = F.interpolate(heatmaps, size=coarse_size, mode="bilinear", align_corners=False)
        feats = [self.stem(x)]
        for block in self.up:
            feats.append(block(feats[-1]))
        return feats[::-1]
