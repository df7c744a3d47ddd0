"""Driving-keypoint head: TPS keypoints and background motion from *pose heatmaps*.

The paper drives the motion branch with a driving *video* (the keypoint detector runs on the
driving frame). Our pipeline only has poses from text, so this head predicts what the
keypoint detector would have said about a driving frame from (a) the driving heatmaps, (b) the
source frame's heatmaps and (c) the source TPS keypoints. It regresses offsets from the source
keypoints (a pose change moves the TPS keypoints relative to where they were), working on the
soft-argmax coordinates of the heatmaps, which makes it cheap and resolution-independent.
Trained by distillation towards the image-based detector on the same frame, and end to end.
"""

from __future__ import annotations

import torch
from torch import nn

from pgmm.pose.heatmaps import soft_argmax


class DrivingKeypointHead(nn.Module):
    def __init__(self, num_keypoints: int = 36, num_tps_points: int = 100, hidden: int = 256):
        super().__init__()
        self.num_tps_points = num_tps_points
        inputs = 2 * num_keypoints * 3 + num_tps_points * 2
        self.mlp = nn.Sequential(
            nn.Linear(inputs, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            last := nn.Linear(hidden, num_tps_points * 2 + 6),
        )
        # Start as "nothing moved": zero keypoint offsets and the identity background.
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    @staticmethod
    def _describe(heatmaps: torch.Tensor) -> torch.Tensor:
        """(B, P, h, w) -> (B, P*3): soft-argmax position in [-1, 1] and peak height."""
        xy = soft_argmax(heatmaps.float().clamp(min=0)) * 2 - 1
        peak = heatmaps.float().flatten(2).amax(-1, keepdim=True).clamp(0, 1)
        return torch.cat([xy * peak, peak], dim=-1).flatten(1)

    def forward(
        self, driving_heatmaps: torch.Tensor, source_heatmaps: torch.Tensor, kp_source: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (kp_driving ``(B, K, 2)``, background affine ``(B, 3, 3)``)."""
        b = kp_source.shape[0]
        feats = torch.cat(
            [
                self._describe(driving_heatmaps),
                self._describe(source_heatmaps),
                kp_source.flatten(1),
            ],
            dim=1,
        )
        out = self.mlp(feats.to(next(self.mlp.parameters()).dtype))
        kp = kp_source + out[:, : self.num_tps_points * 2].view(b, -1, 2)
        out = out.float()  # the background affine is a coordinate transform: float32 under autocast
        eye = torch.eye(3, device=out.device, dtype=out.dtype).expand(b, 3, 3).clone()
        eye[:, :2, :] += out[:, -6:].view(b, 2, 3)
        return kp, eye
