"""Pose Fusion Module (PFM): image features attend to where the pose says detail must go.

Q comes from the pose features X_p, K and V from the image features X_in (each a 3x3 conv +
InstanceNorm + ReLU), and X_out = X_in + softmax(Q K^T / sqrt(C)) V. Attention runs through
``F.scaled_dot_product_attention``, which picks a flash / memory-efficient kernel on GPU so
memory stays linear in the number of tokens. The paper does not say at which scales PFM runs;
we run it where ``h * w <= pfm_max_tokens`` (config, default 1024: the 16^2 and 32^2 scales at
128^2 input, the 32^2 scale at 256^2) and use :class:`PoseSum` (a 1x1 projection added)
elsewhere, so pose information enters every scale while the cost stays close to the baseline's
(``bench/render_speed.py`` measures it; raise the limit on GPUs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pgmm.models.hourglass import InstanceNorm2d


def _conv_in_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1),
        InstanceNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class PFM(nn.Module):
    """X_out = X_in + softmax(Q(X_p) K(X_in)^T / sqrt(C)) V(X_in)."""

    def __init__(self, channels: int, pose_channels: int, attention_channels: int | None = None):
        super().__init__()
        d = attention_channels or channels
        self.query = _conv_in_relu(pose_channels, d)
        self.key = _conv_in_relu(channels, d)
        self.value = _conv_in_relu(channels, channels)

    def forward(self, x: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape

        def tokens(features: torch.Tensor) -> torch.Tensor:
            # (B, 1, hw, C), contiguous: on CPU, strided tokens make SDPA fall back to its
            # slower path (~30 % of PFM's forward + backward at 32^2, bench/train_step.py).
            return features.flatten(2).transpose(1, 2).unsqueeze(1).contiguous()

        q, k, v = tokens(self.query(pose)), tokens(self.key(x)), tokens(self.value(x))
        out = F.scaled_dot_product_attention(q, k, v)  # scale 1/sqrt(d)
        return x + out.squeeze(1).transpose(1, 2).reshape(b, c, h, w)


class PoseSum(nn.Module):
    """Ablation ``pose_sum`` (and PFM's stand-in at token-heavy scales): X_in + W X_p."""

    def __init__(self, channels: int, pose_channels: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(pose_channels, channels, 1)

    def forward(self, x: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
        return x + self.proj(pose)
