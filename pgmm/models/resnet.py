"""ResNet-18 backbone for the motion branch's two regressors.

TPSMM regresses its keypoints and its background affine transform with a plain torchvision
ResNet-18. torchvision is not a dependency of this project, so the network is written out here,
with two requirements:

* the parameter and buffer names are torchvision's (``conv1``, ``bn1``, ``layer1.0.conv1``,
  ``layer2.0.downsample.0``, ..., ``fc``), so an ImageNet ``resnet18`` state dict saved as a local
  ``.pth`` or ``.safetensors`` file loads with :func:`load_pretrained_backbone` unchanged;
* a ``width`` multiplier scales the stage widths 64/128/256/512, so CPU tests and smoke-training
  configs can use a network a fraction of the size. ``width=1.0`` is exactly torchvision's shape.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

__all__ = ["BasicBlock", "ResNet18", "he_init", "load_pretrained_backbone"]

STAGE_WIDTHS = (64, 128, 256, 512)


def he_init(network: nn.Module) -> None:
    """torchvision's ResNet initialisation: He (fan-out) for every convolution, unit-scale batch
    norm; every other layer keeps PyTorch's default."""
    for module in network.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18/34's block).

    When the block changes resolution or width, the shortcut is a strided 1x1 convolution plus
    batch norm, registered as ``downsample`` (``downsample.0`` conv, ``downsample.1`` norm) to
    match torchvision's names; otherwise it is the identity and has no parameters.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + shortcut)


class ResNet18(nn.Module):
    """ResNet-18 (BasicBlock, two blocks per stage) ending in a linear head.

    Args:
        num_outputs: size of the final linear layer ``fc``.
        in_channels: input channels of ``conv1`` (3 for an image; 6 for the background
            regressor, which sees source and driving frames stacked).
        width: multiplier on the stage widths 64/128/256/512 (each rounded, at least 1).
    """

    def __init__(self, num_outputs: int, in_channels: int = 3, width: float = 1.0) -> None:
        super().__init__()
        if width <= 0:
            raise ValueError(f"width must be positive, got {width}")
        widths = [max(1, round(c * width)) for c in STAGE_WIDTHS]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._stage(widths[0], widths[0], stride=1)
        self.layer2 = self._stage(widths[0], widths[1], stride=2)
        self.layer3 = self._stage(widths[1], widths[2], stride=2)
        self.layer4 = self._stage(widths[2], widths[3], stride=2)
        self.fc = nn.Linear(widths[3], num_outputs)
        self.num_features = widths[3]
        # torchvision's initialisation, so a from-scratch run matches TPSMM's (which uses an
        # untrained torchvision resnet18); ``fc`` keeps PyTorch's default.
        he_init(self)

    @staticmethod
    def _stage(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
        return nn.Sequential(
            BasicBlock(in_channels, out_channels, stride), BasicBlock(out_channels, out_channels)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, H, W)`` -> ``(B, num_outputs)``."""
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def load_pretrained_backbone(model: ResNet18, path: str | Path) -> list[str]:
    """Load a torchvision-style ResNet-18 state dict from a local file into ``model``.

    ``.safetensors`` files are read with safetensors; anything else with
    ``torch.load(weights_only=True)``, which refuses pickled code. The classifier head ``fc.*``
    is skipped when its shapes differ from the model's (an ImageNet file has 1000 classes; the
    keypoint head has ``2 * num_keypoints`` outputs) or when the file has none (a backbone-only
    export); it then keeps its own initialisation.
    A file lacking ``num_batches_tracked`` counters (older torchvision releases) is accepted.
    Everything else must match exactly.

    Returns:
        The model keys that were *not* loaded (the skipped head, missing counters), for logging.

    Raises:
        ValueError: naming every missing key, unexpected key and shape mismatch.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        state = load_file(str(path), device="cpu")
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    own = model.state_dict()
    head = [k for k in own if k.startswith("fc.")]
    if any(k in state and state[k].shape != own[k].shape for k in head):
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing = sorted(set(own) - set(state))
    optional = set(head) | {k for k in own if k.endswith("num_batches_tracked")}
    problems = [f"missing key: {k}" for k in missing if k not in optional]
    problems += [f"unexpected key: {k}" for k in sorted(set(state) - set(own))]
    problems += [
        f"shape mismatch: {k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    if problems:
        listing = "\n  ".join(problems)
        raise ValueError(f"{path} is not a compatible ResNet-18 state dict:\n  {listing}")
    model.load_state_dict(state, strict=False)
    return missing
