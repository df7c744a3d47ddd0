"""Convolutional building blocks and the U-Net-style hourglass of the dense-motion network.

The hourglass has to see the whole frame at once -- a hand may move a quarter of the image
between source and driving -- yet output per-pixel decisions (which deformation to use where,
what is occluded). An encoder of strided pooling stages gives the large receptive field; the
decoder climbs back up, concatenating the encoder features of each resolution (skip
connections) so fine detail is not lost. It returns the decoder features at *every* resolution
because the occlusion masks are needed at several scales.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "DownBlock2d",
    "Hourglass",
    "InstanceNorm2d",
    "NormKind",
    "ResBlock2d",
    "UpBlock2d",
    "norm_layer",
]

NormKind = Literal["instance", "batch"]


class InstanceNorm2d(nn.InstanceNorm2d):
    """``nn.InstanceNorm2d(channels, affine=True)``, computed by the group-norm kernel.

    Group norm with one group per channel takes the same per-sample, per-channel statistics
    and gives the same result up to float rounding (< 1e-6), with the same parameters and
    state-dict keys, so checkpoints load either way. PyTorch runs instance norm as a batch norm
    over a ``(1, B*C, H, W)`` view, about 5x slower on a CPU than its group-norm kernel (9.3 vs
    1.8 ms for a 16x16x128x128 input, one thread): at 128^2 the norms were a tenth of a frame.
    """

    def __init__(self, channels: int) -> None:
        super().__init__(channels, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.onnx.is_in_onnx_export():  # ONNX has InstanceNormalization: export it as such
            return super().forward(x)
        return F.group_norm(x, self.num_features, self.weight, self.bias, self.eps)


def norm_layer(kind: NormKind, channels: int) -> nn.Module:
    """Per-sample instance norm (TPSMM's choice: statistics independent of the batch, so a
    batch of 1 at inference behaves like training) or batch norm."""
    if kind == "instance":
        return InstanceNorm2d(channels)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    raise ValueError(f"norm must be 'instance' or 'batch', got {kind!r}")


class DownBlock2d(nn.Module):
    """3x3 conv -> norm -> ReLU -> 2x2 average pool: halves the resolution.

    Normalising *before* pooling means the norm always sees at least 2x2 values, so instance
    norm works down to a 1x1 output.
    """

    def __init__(self, in_features: int, out_features: int, norm: NormKind = "instance") -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, 3, padding=1)
        self.norm = norm_layer(norm, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(F.relu(self.norm(self.conv(x))), 2)


class UpBlock2d(nn.Module):
    """2x interpolation -> 3x3 conv -> norm -> ReLU: doubles the resolution.

    Interpolating before the convolution (instead of a transposed convolution) avoids
    checkerboard artefacts in the flows and masks.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        norm: NormKind = "instance",
        mode: Literal["nearest", "bilinear"] = "nearest",
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, 3, padding=1)
        self.norm = norm_layer(norm, out_features)
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode=self.mode)
        return F.relu(self.norm(self.conv(x)))


class ResBlock2d(nn.Module):
    """Pre-activation residual block: ``x + conv(relu(norm(conv(relu(norm(x))))))``.

    Keeps resolution and width; the untouched identity path lets deep stacks of these (the
    generator's bottleneck) train without the signal degrading.
    """

    def __init__(self, features: int, norm: NormKind = "instance") -> None:
        super().__init__()
        self.norm1 = norm_layer(norm, features)
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.norm2 = norm_layer(norm, features)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.norm1(x)))
        return x + self.conv2(F.relu(self.norm2(out)))


class Hourglass(nn.Module):
    """Encoder-decoder with skip concatenation.

    Encoder stage ``k = 1..num_blocks`` halves the resolution and has
    ``min(max_features, block_expansion * 2^k)`` channels. The decoder mirrors it: at every
    resolution it upsamples, then concatenates the encoder features of that resolution (the
    input itself at full resolution), so its last output has
    ``block_expansion + in_features`` channels and still contains the raw input.

    Args:
        in_features: input channels.
        block_expansion: channels of the first stage; doubled per stage.
        num_blocks: number of down (and up) stages; inputs must be divisible by
            ``2^num_blocks``.
        max_features: cap on the channels of any stage.
        norm: normalisation of every block.

    Attributes:
        out_channels: channels of each returned decoder level, coarsest first.
    """

    def __init__(
        self,
        in_features: int,
        block_expansion: int,
        num_blocks: int = 3,
        max_features: int = 256,
        norm: NormKind = "instance",
    ) -> None:
        super().__init__()
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
        self.num_blocks = num_blocks
        # Channels of the encoder output at stride 2^k (k = 0 is the input).
        widths = [in_features] + [
            min(max_features, block_expansion * 2**k) for k in range(1, num_blocks + 1)
        ]
        self.down_blocks = nn.ModuleList(
            DownBlock2d(widths[k], widths[k + 1], norm) for k in range(num_blocks)
        )
        up_blocks = []
        self.out_channels: list[int] = []
        channels = widths[-1]
        for k in range(num_blocks, 0, -1):  # the up block leading to stride 2^(k-1)
            up_width = min(max_features, block_expansion * 2 ** (k - 1))
            up_blocks.append(UpBlock2d(channels, up_width, norm))
            channels = up_width + widths[k - 1]
            self.out_channels.append(channels)
        self.up_blocks = nn.ModuleList(up_blocks)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``(B, in_features, H, W)`` -> decoder features at strides ``2^(num_blocks-1) .. 1``.

        The list runs coarsest to finest; the last entry is at the input resolution.
        """
        factor = 2**self.num_blocks
        if x.shape[-2] % factor or x.shape[-1] % factor:
            raise ValueError(
                f"hourglass input {tuple(x.shape[-2:])} must be divisible by {factor} "
                f"(2^num_blocks)"
            )
        skips = [x]
        for block in self.down_blocks:
            skips.append(block(skips[-1]))
        out = skips.pop()
        outputs = []
        for block in self.up_blocks:
            out = torch.cat([block(out), skips.pop()], dim=1)
            outputs.append(out)
        return outputs
