"""Multi-scale perceptual loss (TPSMM's reconstruction loss): VGG19 features over an image pyramid.

A per-pixel L1 on the prediction rewards blur wherever the motion is slightly off; comparing
deep features instead rewards matching structure and texture, and repeating the comparison on
a pyramid of downscaled copies makes the coarse scales see the whole body and the fine scales
the fingers.

Layers. TPSMM's ``Vgg19`` returns the *first* ReLU of each block (``relu1_1, relu2_1, relu3_1,
relu4_1, relu5_1``: torchvision indices 1, 6, 11, 20, 29), the pix2pixHD choice, and its loss
weights (10 per layer) were tuned on those; that is our default (:data:`TPSMM_LAYERS`). Any
VGG19 ReLU can be requested by name, e.g. the last of each block (``relu1_2, relu2_2, relu3_4,
relu4_4, relu5_4``); the network is built only as deep as the deepest requested layer.

Weights. Parameter names are torchvision's (``features.{i}.weight/bias``), so a torchvision
VGG19 state dict loads from a *local* file (``.pth`` or ``.safetensors``). Without a file the
convolutions are randomly initialised with a fixed seed: random conv features are still a
useful multi-scale structural loss (an edge/texture filter bank whose responses differ when
structure differs), they need no download, and every run gets the same network. Whether the
ImageNet or the random network trains PGMM better is an empirical question, measured in the
training issue -- not assumed here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn
from torch.nn.utils import skip_init

__all__ = [
    "TPSMM_LAYERS",
    "TPSMM_SCALES",
    "VGG19_RELU_INDEX",
    "ImagePyramid",
    "Vgg19Features",
    "perceptual_loss",
]

TPSMM_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
TPSMM_SCALES = (1.0, 0.5, 0.25, 0.125)
# ImageNet statistics, the input normalisation VGG19 was trained with.
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)
# VGG19 ("configuration E"): convs per block and their width; a 2x2 max pool ends each block.
_BLOCK_CONVS = (2, 2, 4, 4, 4)
_BLOCK_WIDTHS = (64, 128, 256, 512, 512)


def _relu_indices() -> dict[str, int]:
    """``relu{block}_{conv}`` -> index in torchvision's ``vgg19().features``."""
    names, index = {}, 0
    for block, convs in enumerate(_BLOCK_CONVS, start=1):
        for conv in range(1, convs + 1):
            names[f"relu{block}_{conv}"] = index + 1  # conv at ``index``, its ReLU next
            index += 2
        index += 1  # the block's max pool
    return names


#: Every ReLU of VGG19 by name, e.g. ``VGG19_RELU_INDEX["relu5_1"] == 29``.
VGG19_RELU_INDEX = _relu_indices()


def _vgg19_features(depth: int, scale: float = 1.0) -> nn.Sequential:
    """torchvision's ``vgg19().features[: depth + 1]`` (same layer indices, hence same names).

    ``scale`` multiplies every conv width (random weights only: a real VGG19 has scale 1).
    """
    layers: list[nn.Module] = []
    channels = 3
    for convs, full_width in zip(_BLOCK_CONVS, _BLOCK_WIDTHS, strict=True):
        width = max(4, round(full_width * scale))
        for _ in range(convs):
            # skip_init: the weights are set by the caller, and default initialisation would
            # draw from (and so change) the global RNG.
            conv = skip_init(nn.Conv2d, channels, width, 3, padding=1)
            layers += [conv, nn.ReLU()]
            channels = width
        layers.append(nn.MaxPool2d(2, 2))
        if len(layers) > depth:
            break
    return nn.Sequential(*layers[: depth + 1])


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or from a pickle-free ``torch.save`` file."""
    if not path.is_file():
        raise FileNotFoundError(f"VGG19 weights not found: {path}")
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch and safetensors raise assorted types on bad bytes
        raise ValueError(f"{path}: not a readable VGG19 state dict ({e})") from e
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    return state


class Vgg19Features(nn.Module):
    """Frozen VGG19 ``features`` returning the activations of the requested ReLUs.

    Frozen means no parameter ever requires a gradient and the module stays in eval mode even
    when a parent calls ``.train()``; the forward pass is still differentiable with respect to
    its input, which is how the perceptual loss reaches the generator.

    Args:
        weights: local ``.pth``/``.safetensors`` file holding a torchvision VGG19 state dict
            (or one saved from this module). Keys beyond the depth used -- deeper convs,
            ``classifier.*`` -- are ignored; missing keys or wrong shapes raise ``ValueError``.
            ``None``: random weights (Kaiming-normal, as torchvision initialises VGG) drawn
            from their own generator seeded with ``seed``, leaving the global RNG untouched.
        seed: seed of the random weights; ignored when ``weights`` is given.
        layers: ReLU names (see :data:`VGG19_RELU_INDEX`), returned in this order.
        width: multiplier of every conv width, for random weights only. A random network needs
            no particular width to give a multi-scale structural loss, and 1/4 width costs
            ~1/16 of the FLOPs -- the difference between usable and unusable CPU training
            (the full VGG19 pyramid dominates a small PGMM's step time).
    """

    mean: torch.Tensor  # buffers: ImageNet normalisation
    std: torch.Tensor

    def __init__(
        self,
        weights: str | Path | None = None,
        seed: int = 0,
        layers: Sequence[str] = TPSMM_LAYERS,
        width: float = 1.0,
    ) -> None:
        super().__init__()
        if weights is not None and width != 1.0:
            raise ValueError(f"real VGG19 weights need width 1.0, got {width}")
        unknown = [name for name in layers if name not in VGG19_RELU_INDEX]
        if unknown or not layers:
            raise ValueError(
                f"unknown VGG19 layers {unknown or '(none given)'}; "
                f"choose from {list(VGG19_RELU_INDEX)}"
            )
        self.layers = tuple(layers)
        self._taps = [VGG19_RELU_INDEX[name] for name in self.layers]
        self._deepest = max(self.layers, key=VGG19_RELU_INDEX.__getitem__)
        self.features = _vgg19_features(max(self._taps), width)
        # Input side length needed so that the deepest tap is still at least 1x1.
        pools = sum(isinstance(m, nn.MaxPool2d) for m in list(self.features)[: max(self._taps)])
        self.min_size = 2**pools
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)
        if weights is None:
            self._init_random(seed)
        else:
            self._load(Path(weights))
        self.requires_grad_(False)
        self.train(False)

    def _init_random(self, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        for module in self.features:
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(
                    module.weight, mode="fan_out", nonlinearity="relu", generator=generator
                )
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def _load(self, path: Path) -> None:
        state = _read_state_dict(path)
        own = self.state_dict()
        missing = [k for k in own if k not in state]
        shapes = [
            f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
            for k, v in own.items()
            if k in state and state[k].shape != v.shape
        ]
        if missing or shapes:
            raise ValueError(
                f"{path} is not a torchvision VGG19 state dict usable up to {self._deepest}: "
                f"missing {missing[:6]}{' ...' if len(missing) > 6 else ''}, "
                f"wrong shapes {shapes[:6]}"
            )
        self.load_state_dict({k: state[k] for k in own})

    def train(self, mode: bool = True) -> Vgg19Features:
        """Always eval: the network is fixed, so ``.training`` must not claim otherwise."""
        return super().train(False)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """``(B, 3, H, W)`` in [0, 1] -> one activation per requested layer, in order."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
        if min(images.shape[-2:]) < self.min_size:
            raise ValueError(
                f"VGG19 up to {self._deepest} needs images of at least {self.min_size} px, "
                f"got {tuple(images.shape[-2:])}: drop the coarsest pyramid scale or use "
                "shallower layers"
            )
        x = (images - self.mean) / self.std
        taps: dict[int, torch.Tensor] = {}
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self._taps:
                taps[index] = x
        return [taps[i] for i in self._taps]


class ImagePyramid(nn.Module):
    """An image and its antialiased downscaled copies, one per scale.

    Antialiasing (a triangle filter as wide as the scale step) keeps thin structures such as
    fingers from aliasing into jagged lines at the coarse scales, which would otherwise make
    the coarse comparisons noisy.
    """

    def __init__(self, scales: Sequence[float] = TPSMM_SCALES) -> None:
        super().__init__()
        if not scales or any(not 0 < s <= 1 for s in scales):
            raise ValueError(f"pyramid scales must be in (0, 1], got {tuple(scales)}")
        self.scales = tuple(float(s) for s in scales)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """``(B, C, H, W)`` -> ``[(B, C, round(H s), round(W s)) for s in scales]``."""
        h, w = images.shape[-2:]
        out = []
        for scale in self.scales:
            size = (max(1, round(h * scale)), max(1, round(w * scale)))
            if size == (h, w):
                out.append(images)
            else:
                out.append(
                    F.interpolate(
                        images, size=size, mode="bilinear", align_corners=False, antialias=True
                    )
                )
        return out


def perceptual_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    vgg: Vgg19Features,
    scales: Sequence[float] = TPSMM_SCALES,
    layer_weights: Sequence[float] = (10.0,) * 5,
) -> torch.Tensor:
    """``sum_scales sum_layers weight_l * mean |vgg_l(pred_s) - vgg_l(target_s)|`` (TPSMM).

    The target's features are computed without autograd (the target is data, and this halves
    the activations kept for the backward pass); the gradient reaches ``pred`` only.
    Default ``layer_weights`` are TPSMM's (10 for each of its 5 layers).
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    if len(layer_weights) != len(vgg.layers):
        raise ValueError(
            f"{len(layer_weights)} layer weights for {len(vgg.layers)} VGG layers {vgg.layers}"
        )
    pyramid = ImagePyramid(scales)
    total = pred.new_zeros(())
    for pred_s, target_s in zip(pyramid(pred), pyramid(target), strict=True):
        with torch.no_grad():
            target_feats = vgg(target_s)
        for weight, fp, ft in zip(layer_weights, vgg(pred_s), target_feats, strict=True):
            # Compared in float32: under bf16 autocast the features are bf16.
            total = total + weight * (fp.float() - ft.float()).abs().mean()
    return total
