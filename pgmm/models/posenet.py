"""PoseNet P_d: the 36 pose heatmaps -> pose features at every generator scale.

The heatmaps (stride 4 from P_e, or rendered from a pose sequence) are interpolated to the
coarsest generator scale (1/8), projected by a 3x3 conv, and brought back up by 3 up blocks
[2x up-sampling conv, InstanceNorm, ReLU]; the feature of every scale is emitted, so the pose
reaches each generator stage at its own resolution.

The up-sampling conv is a 3x3 stride-2 transposed conv (``upsample="transposed"``, every
checkpoint trained before issue 16) or a bilinear 2x resize followed by a 3x3 conv
(``"bilinear"``). A 3x3 kernel at stride 2 overlaps unevenly -- odd output pixels get one tap
row, even ones two -- so the transposed conv writes a 2-pixel checkerboard into the pose
features (in the shipped renderer ~20 % of their power sits at the 2-pixel period), and the
generator adds the finest of them to its full-resolution stage: the coloured dots over the face
and hands. Resizing first gives every output pixel the same taps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pgmm.models.hourglass import InstanceNorm2d

UPSAMPLING = ("transposed", "bilinear")


class ResizeConv2d(nn.Conv2d):
    """Bilinear 2x up-sampling, then a 3x3 conv: no checkerboard (see the module docstring).

    A ``Conv2d`` subclass, so its parameters are ``weight``/``bias`` under the same names as the
    transposed conv it replaces (see :func:`resize_conv_from_transposed`).
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        return super().forward(x)


def resize_conv_from_transposed(weight: torch.Tensor) -> torch.Tensor:
    """A transposed conv's ``(in, out, 3, 3)`` kernel as the equivalent conv's ``(out, in, 3, 3)``.

    A transposed conv is a conv with the kernel flipped and its channel axes swapped, applied
    to the zero-interleaved input; :class:`ResizeConv2d` applies the same kernel to the
    bilinearly interleaved input instead, a smoothed version of the same map (the InstanceNorm
    after it removes the gain). This warm-starts a ``"bilinear"`` P_d from a ``"transposed"``
    checkpoint for fine-tuning.
    """
    return weight.transpose(0, 1).flip(-2, -1).contiguous()


def bilinear_state_from_transposed(
    state: dict[str, torch.Tensor], prefix: str = "posenet."
) -> dict[str, torch.Tensor]:
    """``state`` of a model with a ``"transposed"`` P_d, its up-sampling kernels converted for
    a ``"bilinear"`` one (:func:`resize_conv_from_transposed`); every other tensor as it is."""
    return {
        key: resize_conv_from_transposed(value)
        if key.startswith(f"{prefix}up.") and key.endswith(".0.weight")
        else value
        for key, value in state.items()
    }


class PoseNet(nn.Module):
    def __init__(
        self,
        num_keypoints: int = 36,
        channels: list[int] | None = None,
        upsample: str = "transposed",
    ) -> None:
        """``channels``: pose feature channels finest-first (one per generator scale);
        ``upsample``: one of :data:`UPSAMPLING` (see the module docstring)."""
        super().__init__()
        if upsample not in UPSAMPLING:
            raise ValueError(f"upsample must be one of {UPSAMPLING}, got {upsample!r}")
        self.channels = channels or [32, 64, 128, 256]
        coarse = self.channels[-1]
        self.stem = nn.Sequential(
            nn.Conv2d(num_keypoints, coarse, 3, padding=1),
            InstanceNorm2d(coarse),
            nn.ReLU(inplace=True),
        )
        ups = []
        for cin, cout in zip(self.channels[:0:-1], self.channels[-2::-1], strict=True):
            if upsample == "bilinear":
                up: nn.Module = ResizeConv2d(cin, cout)
            else:
                up = nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1)
            ups.append(
                nn.Sequential(
                    up,
                    InstanceNorm2d(cout),
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
