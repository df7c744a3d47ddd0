"""The frozen pose estimator ``P_e`` of PGMM: images -> the 36 PGMM heatmaps at stride 4.

PGMM uses ``P_e`` twice: its heatmaps of the *driving* frame condition the generator, and its
heatmaps of the *generated* frame enter the pose-distance loss ``L_pd``. The second use is why
freezing here means "no parameter updates" but never "no gradient": ``L_pd`` must back-propagate
through ``P_e`` into the generated image (see :meth:`PoseEstimator.freeze`).

Two implementations share the :class:`PoseEstimator` interface:

* :class:`HRNetLite` (this file) -- our own compact HRNet-style network, trained from scratch
  on SynthSigner's exact labels; small enough to train and run on CPU.
* :class:`pgmm.models.mmpose_adapter.MMPoseWholeBody` -- mmpose's pretrained HRNet-W32
  COCO-WholeBody model (an optional extra) with its 133 maps reduced to the 36 PGMM channels.

Heatmap semantics (both implementations): *Gaussian-regression maps*, not logits. Training
regresses each channel with MSE onto a unit-peak Gaussian (:func:`target_heatmaps`), so values
lie roughly in [0, 1], may dip slightly below 0, and the peak height is the point's confidence.
Decode with :func:`pgmm.pose.heatmaps.argmax_decode` (evaluation) or
:func:`pgmm.pose.heatmaps.soft_argmax` with ``beta=None`` (differentiable, clamps at 0).
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from pgmm.checkpoint import DictConfig, check_positive, load_folder, save_folder
from pgmm.models.resnet import he_init
from pgmm.pose.heatmaps import argmax_decode, render_heatmaps
from pgmm.pose.layout import NUM_PGMM

__all__ = [
    "HRNETLITE_PRESETS",
    "HRNetLite",
    "HRNetLiteConfig",
    "PoseEstimator",
    "heatmap_loss",
    "target_heatmaps",
]

# ImageNet statistics: the usual input normalisation of HRNet-style pose networks.
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------- interface
class PoseEstimator(nn.Module, ABC):
    """Images ``(B, 3, H, W)`` in [0, 1] -> Gaussian-regression heatmaps ``(B, K, H/4, W/4)``.

    ``H`` and ``W`` must be multiples of :attr:`heatmap_stride` so that the maps cover the
    image exactly and the normalised coordinates of :mod:`pgmm.pose.heatmaps` mean the same
    point on the map and on the image.
    """

    num_keypoints: int = NUM_PGMM
    heatmap_stride: int = 4

    def __init__(self) -> None:
        super().__init__()
        self._frozen = False

    @abstractmethod
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` float in [0, 1] -> ``(B, num_keypoints, H/4, W/4)`` heatmaps."""

    def check_images(self, images: torch.Tensor) -> None:
        """Raise a clear ``ValueError`` for input that the estimator cannot map exactly."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
        h, w = images.shape[-2:]
        s = self.heatmap_stride
        if h % s or w % s:
            raise ValueError(f"image size {h}x{w} is not a multiple of the heatmap stride {s}")

    def keypoints(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, K, 3)``: normalised x, y and confidence (the peak height clamped to [0, 1]).

        For evaluation and pseudo-labelling only: the argmax has no gradient, so nothing is
        recorded for autograd.
        """
        with torch.no_grad():
            return argmax_decode(self(images))

    @property
    def frozen(self) -> bool:
        return self._frozen

    def freeze(self) -> PoseEstimator:
        """Fix the estimator for use inside PGMM's training; returns ``self``.

        Parameters stop requiring gradients and the module stays in eval mode -- also when a
        parent module calls ``.train()``, which would otherwise switch BatchNorm back to batch
        statistics and update its running averages. ``forward`` is *not* wrapped in
        ``torch.no_grad``: ``L_pd`` needs the gradient with respect to the input image.
        """
        self._frozen = True
        self.requires_grad_(False)
        return self.train(False)

    def train(self, mode: bool = True) -> PoseEstimator:
        return super().train(mode and not self._frozen)


# --------------------------------------------------------------------------- training targets
def target_heatmaps(
    points: torch.Tensor, size: int | tuple[int, int], sigma: float = 2.0
) -> torch.Tensor:
    """Regression targets ``(B, K, h, w)`` for points ``(B, K, 3)`` (normalised x, y, conf).

    ``size`` is the *heatmap* size (image size / :attr:`PoseEstimator.heatmap_stride`) and
    ``sigma`` is in heatmap pixels: 2 px at 32x32 (128x128 input) keeps neighbouring finger
    joints, a few map pixels apart, separable while the blob stays wide enough to learn.
    Points with confidence 0 get all-zero maps (and should get weight 0 in
    :func:`heatmap_loss`).
    """
    if points.ndim != 3 or points.shape[-1] != 3:
        raise ValueError(f"points must be (B, K, 3), got {tuple(points.shape)}")
    return render_heatmaps(points, size, sigma)


def heatmap_loss(
    pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-channel MSE weighted by visibility, averaged over all channels of the batch.

    ``weight`` ``(B, K)`` is normally the keypoint confidence: an occluded or missing point
    contributes nothing, so the network is never taught to draw a blob where the label is
    meaningless. Averaging over channels rather than over the visible ones keeps the loss
    scale independent of how many points a batch happens to show.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    per_channel = (pred - target).square().mean(dim=(-2, -1))  # (B, K)
    if weight is not None:
        if weight.shape != per_channel.shape:
            want, got = tuple(per_channel.shape), tuple(weight.shape)
            raise ValueError(f"weight must be {want} (B, K), got {got}")
        per_channel = per_channel * weight.to(per_channel.dtype)
    return per_channel.mean()


# --------------------------------------------------------------------------- HRNetLite
@dataclass(frozen=True)
class HRNetLiteConfig(DictConfig):
    """Architecture of :class:`HRNetLite`.

    ``widths``: channels of the parallel branches, finest first; branch ``i`` runs at stride
    ``4 * 2**i``. HRNet-W32 uses (32, 64, 128, 256); 2-4 branches are supported.
    ``stem_width``: channels of the two stride-2 stem convs and the single-branch first stage.
    ``blocks_per_stage``: residual blocks per branch before each fusion.
    ``modules_per_stage``: (blocks + fusion) repeats per multi-branch stage, i.e. how often the
    resolutions exchange information.
    """

    widths: tuple[int, ...] = (16, 32, 64)
    stem_width: int = 32
    blocks_per_stage: int = 1
    modules_per_stage: int = 1
    num_keypoints: int = NUM_PGMM

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        if not 2 <= len(self.widths) <= 4:
            raise ValueError(f"HRNetLite needs 2-4 branches, got widths={self.widths}")
        counts = {
            "widths": min(self.widths),
            "stem_width": self.stem_width,
            "blocks_per_stage": self.blocks_per_stage,
            "modules_per_stage": self.modules_per_stage,
            "num_keypoints": self.num_keypoints,
        }
        check_positive("HRNetLite config", counts, f" in {self}")

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "widths": list(self.widths)}


#: ``cpu``: trains and runs on 2 CPU cores; ``gpu``: HRNet-W32's widths on three branches;
#: ``evaluator``: the independent scorer of generated frames -- other widths and twice the
#: residual depth than ``cpu``, so it shares neither weights nor blind spots with the ``P_e``
#: that ``L_pd`` trains renderers against (it is trained with another seed, and never by a loss).
HRNETLITE_PRESETS: dict[str, HRNetLiteConfig] = {
    "cpu": HRNetLiteConfig(),
    "evaluator": HRNetLiteConfig(widths=(24, 48, 96), stem_width=24, blocks_per_stage=2),
    "gpu": HRNetLiteConfig(
        widths=(32, 64, 128), stem_width=64, blocks_per_stage=2, modules_per_stage=2
    ),
}


def _conv_bn(
    cin: int, cout: int, kernel: int = 3, stride: int = 1, relu: bool = True
) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class _BasicBlock(nn.Module):
    """Two 3x3 convs with an identity shortcut (HRNet's BASIC block)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv_bn(channels, channels), _conv_bn(channels, channels, relu=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x))


class _Fusion(nn.Module):
    """Every output branch sums all input branches brought to its resolution and width.

    Coarser -> finer: 1x1 conv then bilinear upsampling to the exact target size (bilinear with
    ``align_corners=False`` keeps pixel centres aligned; HRNet's nearest upsampling shifts the
    coarse map by a fraction of a pixel, which the fine finger joints would feel).
    Finer -> coarser: a chain of stride-2 3x3 convs, one per halving.
    """

    def __init__(self, widths: tuple[int, ...], num_outputs: int) -> None:
        super().__init__()
        paths = []
        for i in range(num_outputs):
            row: list[nn.Module] = []
            for j, cin in enumerate(widths):
                if j == i:
                    row.append(nn.Identity())
                elif j > i:
                    row.append(_conv_bn(cin, widths[i], kernel=1, relu=False))
                else:
                    steps = [_conv_bn(cin, cin, stride=2) for _ in range(i - j - 1)]
                    steps.append(_conv_bn(cin, widths[i], stride=2, relu=False))
                    row.append(nn.Sequential(*steps))
            paths.append(nn.ModuleList(row))
        self.paths = nn.ModuleList(paths)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        out = []
        for i, row in enumerate(self.paths):
            size = xs[i].shape[-2:]
            total = xs[i]
            for j, (path, x) in enumerate(zip(cast(nn.ModuleList, row), xs, strict=True)):
                if j == i:
                    continue
                y = path(x)
                if y.shape[-2:] != size:  # upsampled path, or odd sizes on a strided path
                    y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
                total = total + y
            out.append(F.relu(total))
        return out


class _Module(nn.Module):
    """``blocks_per_stage`` residual blocks on every branch, then one multi-resolution fusion."""

    def __init__(self, widths: tuple[int, ...], blocks: int, num_outputs: int) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(*[_BasicBlock(w) for _ in range(blocks)]) for w in widths
        )
        self.fusion = _Fusion(widths, num_outputs)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        return self.fusion([b(x) for b, x in zip(self.branches, xs, strict=True)])


class HRNetLite(PoseEstimator):
    """A compact HRNet: high resolution kept throughout, low resolutions added stage by stage.

    stem (two stride-2 3x3 convs -> 1/4) -> single-branch stage -> for each further width a
    transition that adds one branch at half the resolution (stride-2 conv from the currently
    coarsest branch) and a stage of fusing modules -> 1x1 conv on the 1/4 branch -> heatmaps.
    Keeping a 1/4-resolution path from the stem to the head is what lets a small network place
    finger joints to a fraction of a map pixel; the coarse branches supply the context to tell
    left from right hand and fingers apart.
    """

    mean: torch.Tensor  # buffers: ImageNet normalisation
    std: torch.Tensor

    def __init__(self, config: HRNetLiteConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or HRNetLiteConfig()
        self.num_keypoints = cfg.num_keypoints
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)
        self.stem = nn.Sequential(
            _conv_bn(3, cfg.stem_width, stride=2),
            _conv_bn(cfg.stem_width, cfg.stem_width, stride=2),
            *[_BasicBlock(cfg.stem_width) for _ in range(cfg.blocks_per_stage)],
        )
        self.to_high = _conv_bn(cfg.stem_width, cfg.widths[0])
        transitions, stages = [], []
        for n in range(2, len(cfg.widths) + 1):
            source = cfg.stem_width if n == 2 else cfg.widths[n - 2]
            transitions.append(_conv_bn(source, cfg.widths[n - 1], stride=2))
            last_stage = n == len(cfg.widths)
            modules = [
                _Module(
                    cfg.widths[:n],
                    cfg.blocks_per_stage,
                    # The very last fusion only feeds the head, which reads the 1/4 branch.
                    1 if last_stage and m == cfg.modules_per_stage - 1 else n,
                )
                for m in range(cfg.modules_per_stage)
            ]
            stages.append(nn.Sequential(*modules))
        self.transitions = nn.ModuleList(transitions)
        self.stages = nn.ModuleList(stages)
        self.head = nn.Conv2d(cfg.widths[0], cfg.num_keypoints, 1)
        he_init(self)
        # Start from near-zero maps: the target is zero almost everywhere.
        nn.init.normal_(self.head.weight, std=1e-3)
        if self.head.bias is not None:  # typed optional; the head is built with one
            nn.init.zeros_(self.head.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.check_images(images)
        x = self.stem((images - self.mean) / self.std)
        xs = [self.to_high(x)]
        coarsest = x
        for transition, stage in zip(self.transitions, self.stages, strict=True):
            xs.append(transition(coarsest))
            xs = stage(xs)
            coarsest = xs[-1]
        return self.head(xs[0])

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` (no pickle) into ``directory``."""
        return save_folder(directory, self, self.config.to_dict())

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> HRNetLite:
        """Load a model written by :meth:`save_pretrained`, in eval mode (not frozen).

        Raises ``FileNotFoundError`` for a missing directory or file and ``ValueError`` for an
        unreadable config or weights that do not fit the config, always naming the directory.
        """
        return load_folder(cls, HRNetLiteConfig, directory, "HRNetLite").eval()
