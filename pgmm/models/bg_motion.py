"""Background motion of the motion branch: a global affine transform between two frames.

Keypoint-driven TPS warps model the moving signer; camera shake, zoom and a slowly panning
background are better explained by one affine map of the whole frame. TPSMM regresses it from
the two frames stacked channel-wise and adds it as one more candidate deformation that the
dense-motion network can select per pixel.
"""

from __future__ import annotations

import torch
from torch import nn

from pgmm.models.resnet import ResNet18

__all__ = ["BackgroundMotion"]


class BackgroundMotion(nn.Module):
    """ResNet-18 over ``[source, driving]`` (6 channels) -> a 2x3 affine map.

    The head starts at zero weight and identity bias, so at initialisation the predicted
    background motion is exactly the identity, whatever the backbone outputs: training starts
    from "the background does not move", the right prior for signing videos with a static
    camera, and the backbone learns only what deviates from it. (Consequently the backbone gets
    zero gradient until the head's weight has moved away from zero.)

    Args:
        width: ResNet-18 width multiplier.
    """

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        self.backbone = ResNet18(num_outputs=6, in_channels=6, width=width)
        nn.init.zeros_(self.backbone.fc.weight)
        with torch.no_grad():
            self.backbone.fc.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]))

    def forward(self, source: torch.Tensor, driving: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` twice -> ``(B, 3, 3)`` homogeneous matrices, last row ``(0, 0, 1)``.

        A matrix maps a *driving*-frame coordinate ``(x, y, 1)`` to the *source*-frame
        coordinate to sample (see :func:`~pgmm.models.tps.apply_affine`), i.e. it is a backward
        warp in the convention of ``F.grid_sample``.
        """
        params = self.backbone(torch.cat([source, driving], dim=1)).view(-1, 2, 3)
        last_row = params.new_tensor([0.0, 0.0, 1.0]).expand(params.shape[0], 1, 3)
        return torch.cat([params, last_row], dim=1)
