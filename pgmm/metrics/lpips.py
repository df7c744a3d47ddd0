"""LPIPS (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features"), v0.1.

Written here so no torchvision or hub download is needed; both weight files come from local
paths given by the caller:

* ``backbone_weights``: a torchvision state dict of AlexNet (``alexnet-owt-7be5be79.pth``) or
  VGG16 (``vgg16-397923af.pth``). Only the ``features.{i}.*`` entries are used; the layer
  indices below match torchvision's ``features`` Sequential, so the file loads unchanged.
* ``linear_weights``: the LPIPS release's ``weights/v0.1/{alex,vgg}.pth`` with entries
  ``lin{k}.model.1.weight`` (one non-negative 1x1 conv per tapped layer, no bias).

Distance between images x0, x1 in [0, 1]: map to [-1, 1], apply LPIPS' fixed scaling layer
(``(x - shift) / scale``, the ImageNet statistics in [-1, 1] units), take the ReLU outputs of
five backbone layers, unit-normalise each feature vector over channels, square the difference,
weight channels by ``lin{k}``, average over space and sum over the five layers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from torch import nn

from pgmm.metrics import read_state_dict
from pgmm.metrics.image import as_frames, check_pair, check_unit_range

# LPIPS' ScalingLayer constants (ImageNet mean/std expressed for inputs in [-1, 1]).
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)
_EPS = 1e-10


def _alexnet_features() -> tuple[nn.Sequential, tuple[int, ...], tuple[int, ...]]:
    """torchvision's ``alexnet().features``; taps after relu1..relu5."""
    layers = nn.Sequential(
        nn.Conv2d(3, 64, 11, stride=4, padding=2),  # 0
        nn.ReLU(),  # 1
        nn.MaxPool2d(3, stride=2),  # 2
        nn.Conv2d(64, 192, 5, padding=2),  # 3
        nn.ReLU(),  # 4
        nn.MaxPool2d(3, stride=2),  # 5
        nn.Conv2d(192, 384, 3, padding=1),  # 6
        nn.ReLU(),  # 7
        nn.Conv2d(384, 256, 3, padding=1),  # 8
        nn.ReLU(),  # 9
        nn.Conv2d(256, 256, 3, padding=1),  # 10
        nn.ReLU(),  # 11
    )
    return layers, (1, 4, 7, 9, 11), (64, 192, 384, 256, 256)


def _vgg16_features() -> tuple[nn.Sequential, tuple[int, ...], tuple[int, ...]]:
    """torchvision's ``vgg16().features`` (config D); taps after relu1_2, 2_2, 3_3, 4_3, 5_3."""
    layers: list[nn.Module] = []
    in_ch = 3
    for item in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512):
        if item == "M":
            layers.append(nn.MaxPool2d(2, stride=2))
        else:
            layers += [nn.Conv2d(in_ch, int(item), 3, padding=1), nn.ReLU()]
            in_ch = int(item)
    return nn.Sequential(*layers), (3, 8, 15, 22, 29), (64, 128, 256, 512, 512)


_BACKBONES = {"alex": (_alexnet_features, "AlexNet"), "vgg": (_vgg16_features, "VGG16")}


class _Backbone(nn.Module):
    """Holds ``features`` under that attribute name so torchvision's keys map one to one."""

    features: nn.Sequential

    def __init__(self, features: nn.Sequential, taps: tuple[int, ...]) -> None:
        super().__init__()
        self.features = features
        self.taps = taps

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for i, layer in enumerate(list(self.features)[: self.taps[-1] + 1]):
            x = layer(x)
            if i in self.taps:
                outs.append(x)
        return outs


class _Linear(nn.Module):
    """``model.0`` is the release's Dropout (identity at eval), ``model.1`` the 1x1 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class LPIPS(nn.Module):
    """Learned perceptual distance; ``forward`` returns one distance per frame.

    Both weight files are required: without trained linear heads LPIPS is a different metric,
    and without a trained backbone it is noise, so a missing file raises
    :class:`~pgmm.metrics.MetricWeightsMissing` rather than falling back.
    """

    shift: torch.Tensor  # buffers (``register_buffer`` in __init__), typed for the checker
    scale: torch.Tensor

    def __init__(
        self,
        net: Literal["alex", "vgg"] = "alex",
        backbone_weights: str | Path | None = None,
        linear_weights: str | Path | None = None,
    ) -> None:
        super().__init__()
        if net not in _BACKBONES:
            raise ValueError(f"net must be one of {sorted(_BACKBONES)}, got {net!r}")
        build, arch = _BACKBONES[net]
        features, taps, channels = build()
        self.net = _Backbone(features, taps)
        self.lins = nn.ModuleList(_Linear(c) for c in channels)
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)

        backbone = read_state_dict(
            backbone_weights,
            f"LPIPS {arch} backbone weights (torchvision state dict, features.{{i}}.weight)",
        )
        linear = read_state_dict(
            linear_weights, f"LPIPS {net} linear-head weights (v0.1, lin{{k}}.model.1.weight)"
        )
        self.net.load_state_dict(
            {k: v for k, v in backbone.items() if k.startswith("features.")}, strict=True
        )
        self.lins.load_state_dict(
            {k.removeprefix("lin"): v for k, v in linear.items() if k.startswith("lin")}
        )
        self.eval().requires_grad_(False)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-frame distances for [0, 1] frames: ``(T,3,H,W)`` -> ``(T,)``, 5-D -> ``(B,T)``."""
        check_pair(pred, target)
        lead = pred.shape[:-3]
        check_unit_range(pred, "pred")
        check_unit_range(target, "target")
        dtype = self.shift.dtype
        x0 = (as_frames(pred).to(dtype) * 2 - 1 - self.shift) / self.scale
        x1 = (as_frames(target).to(dtype) * 2 - 1 - self.shift) / self.scale
        total = x0.new_zeros(x0.shape[0])
        for f0, f1, lin in zip(self.net(x0), self.net(x1), self.lins, strict=True):
            n0 = f0 / (f0.pow(2).sum(dim=1, keepdim=True).sqrt() + _EPS)
            n1 = f1 / (f1.pow(2).sum(dim=1, keepdim=True).sqrt() + _EPS)
            total = total + lin((n0 - n1) ** 2).mean(dim=(1, 2, 3))
        return total.reshape(lead)
