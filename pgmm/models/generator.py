"""Generator G: repeated [CMM -> PFM -> 2 ResBlocks -> Up], from 1/8 scale to full, then sigmoid.

At each scale the source encoder features of that scale are moved by CMM (or by TPSMM's global
flow in the baseline), concatenated with the upsampled output of the previous stage, merged by
a 1x1 conv, fused with the pose features (PFM attention, or a projected sum), refined by two
ResBlocks and upsampled. The stage outputs Y^i are returned for L_align, which compares them
with a second pass on the *driving* image's features with CMM disabled: Y_d = G(X_d, -, X_p).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pgmm.models.cmm import CMM, TPSMMWarp
from pgmm.models.dense_motion import MotionOutput
from pgmm.models.hourglass import ResBlock2d, UpBlock2d
from pgmm.models.pfm import PFM, PoseSum


@dataclass
class GeneratorOutput:
    image: torch.Tensor | None  # (B, 3, H, W) in [0, 1]; None when not asked for
    intermediates: list[torch.Tensor]  # Y^i, coarsest first
    flows: list[torch.Tensor | None]  # per-scale flows used by the warp (None in the no-CMM pass)
    occlusions: list[torch.Tensor | None]


class Generator(nn.Module):
    def __init__(
        self,
        encoder_channels: list[int],
        pose_channels: list[int] | None,
        motion: str,
        fusion: str,
        motion_channels: int,
        num_deformations: int,
        image_size: int,
        pfm_max_tokens: int = 4096,
    ) -> None:
        super().__init__()
        self.motion = motion
        levels = len(encoder_channels)
        self.levels = list(range(levels - 1, -1, -1))  # coarsest first
        self.warps = nn.ModuleList()
        self.merges = nn.ModuleList()
        self.fusions = nn.ModuleList()
        self.refine = nn.ModuleList()
        self.ups = nn.ModuleList()
        self.attention_levels: list[int] = []
        # X_m has ~230 channels at paper size; one shared 1x1 projection makes the 7x7
        # Conv-Flow of every CMM ~4x cheaper without changing what it can express much.
        self.motion_proj = nn.Conv2d(motion_channels, 64, 1) if motion == "cmm" else None
        cmm_in = 64
        prev = 0
        for level in self.levels:
            ch = encoder_channels[level]
            if motion == "cmm":
                self.warps.append(CMM(cmm_in, num_deformations))
                warped = 2 * ch
            else:
                self.warps.append(TPSMMWarp())
                warped = ch
            self.merges.append(nn.Conv2d(warped + prev, ch, 1))
            tokens = (image_size // 2**level) ** 2
            if fusion == "none" or pose_channels is None:
                self.fusions.append(nn.Identity())
            elif fusion == "pfm" and tokens <= pfm_max_tokens:
                self.fusions.append(PFM(ch, pose_channels[level]))
                self.attention_levels.append(level)
            else:
                self.fusions.append(PoseSum(ch, pose_channels[level]))
            self.refine.append(nn.Sequential(ResBlock2d(ch), ResBlock2d(ch)))
            if level > 0:
                self.ups.append(UpBlock2d(ch, encoder_channels[level - 1]))
                prev = encoder_channels[level - 1]
        self.final = nn.Conv2d(encoder_channels[0], 3, 7, padding=3)

    def forward(
        self,
        features: list[torch.Tensor],
        motion: MotionOutput | None,
        pose_features: list[torch.Tensor] | None,
        with_image: bool = True,
    ) -> GeneratorOutput:
        """``features``/``pose_features`` finest-first; ``motion=None`` disables the warp.

        ``with_image=False`` skips the output convolution (L_align's no-CMM pass needs only
        the intermediates; the 7x7 convolution at full resolution is ~2 % of a training step).
        """
        out: torch.Tensor | None = None
        inter, flows, occs = [], [], []
        motion_features = None
        if motion is not None and self.motion_proj is not None:
            motion_features = self.motion_proj(motion.features)
        n = len(self.levels)
        for i, level in enumerate(self.levels):
            x = features[level]
            if motion is None:
                warped, flow, occ = self.warps[i](x, None, None)
            elif self.motion == "cmm":
                warped, flow, occ = self.warps[i](x, motion_features, motion.deformations)
            else:
                warped, flow, occ = self.warps[i](
                    x, motion.optical_flow, motion.occlusion[n - 1 - i]
                )
            flows.append(flow)
            occs.append(occ)
            x = self.merges[i](warped if out is None else torch.cat([warped, out], dim=1))
            if level == 0 and x.device.type == "cpu" and not torch.is_grad_enabled():
                # Inference on a CPU: the full-resolution level's narrow convolutions (16
                # channels in the small configs) run ~30 % faster in channels_last, where
                # oneDNN needs no layout reorder around each of them (bench/render_cpu.py).
                # Their backward is slower in it, so training keeps the default layout.
                x = x.contiguous(memory_format=torch.channels_last)
            if pose_features is not None and not isinstance(self.fusions[i], nn.Identity):
                x = self.fusions[i](x, pose_features[level])
            x = self.refine[i](x)
            inter.append(x)
            out = self.ups[i](x) if level > 0 else x
        # The frame in float32 also under autocast: the losses and the video writer want it.
        image = torch.sigmoid(self.final(out).float()).contiguous() if with_image else None
        return GeneratorOutput(image, inter, flows, occs)
