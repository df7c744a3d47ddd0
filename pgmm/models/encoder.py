"""Image encoder E_I: a 7x7 conv at full resolution, then down blocks.

The 7x7 conv has stride 1 (as TPSMM's first "same" block), so with 3 down blocks the pyramid
is 1, 1/2, 1/4, 1/8 of the input: 128, 64, 32, 16 at 128^2 and 256, 128, 64, 32 at 256^2.
Every level is returned, because CMM warps the source features at every generator scale.
"""

from __future__ import annotations

import torch
from torch import nn

from pgmm.models.hourglass import DownBlock2d, InstanceNorm2d


def pyramid_channels(block_expansion: int, max_features: int, num_down_blocks: int) -> list[int]:
    """Channels of the encoder levels, finest first."""
    return [min(max_features, block_expansion * 2**i) for i in range(num_down_blocks + 1)]


class ImageEncoder(nn.Module):
    def __init__(
        self,
        block_expansion: int = 64,
        max_features: int = 512,
        num_down_blocks: int = 3,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        self.channels = pyramid_channels(block_expansion, max_features, num_down_blocks)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, self.channels[0], 7, padding=3),
            InstanceNorm2d(self.channels[0]),
            nn.ReLU(inplace=True),
        )
        self.down = nn.ModuleList(
            DownBlock2d(self.channels[i], self.channels[i + 1]) for i in range(num_down_blocks)
        )

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        """Features finest-first: ``[1, 1/2, 1/4, 1/8]`` of the input resolution."""
        feats = [self.stem(image)]
        for block in self.down:
            feats.append(block(feats[-1]))
        return feats
