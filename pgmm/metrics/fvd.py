"""Fréchet Video Distance (Unterthiner et al. 2018) with an I3D network written here.

FVD fits a Gaussian to I3D features of the real clips and another to those of the generated
clips and reports the Fréchet distance between the two Gaussians. The reference implementation
feeds clips resized to 224x224 and scaled to [-1, 1] to the TF-Hub module
``i3d-kinetics-400`` and uses its 400 logits as features.

That TF-Hub module cannot be loaded here (no TensorFlow, no network), so :class:`I3D` is the
same Inception-v1-inflated architecture (Carreira & Zisserman 2017) in torch, and its weights
come from a local file through :meth:`I3D.load_weights`. Expected parameter layout (this
module's own ``state_dict``), ``{unit}`` being a conv-BN-ReLU unit:

* ``{unit}.conv3d.weight`` (no bias) and ``{unit}.bn.{weight,bias,running_mean,running_var}``
  (``num_batches_tracked`` optional) for the stem units ``Conv3d_1a_7x7``, ``Conv3d_2b_1x1``,
  ``Conv3d_2c_3x3``;
* ``Mixed_{3b,3c,4b,4c,4d,4e,4f,5b,5c}.{b0,b1a,b1b,b2a,b2b,b3b}`` units (branch 0: 1x1;
  branch 1: 1x1 then 3x3x3; branch 2: 1x1 then 3x3x3; branch 3: 3x3x3 max-pool then 1x1);
* ``logits.conv3d.weight`` ``(400, 1024, 1, 1, 1)`` and ``logits.conv3d.bias``.

These are the names of the common PyTorch port of DeepMind's kinetics-i3d checkpoints, so a
state dict converted that way should load as is (not verifiable on this machine: no weights
here). FVD values are only comparable with published ones when the weights are the Kinetics-400
RGB I3D; the remaining differences to the TF pipeline (torch's bilinear resize uses half-pixel
centres, TF1's ``resize_bilinear`` does not) move the value slightly.

Minimum clip length: the original head averages a ``[2, 7, 7]`` window over the final feature
map, whose time axis is ``ceil(T / 8)`` long, so it needs ``T >= 9`` frames (and 224x224
input for the 7x7 window). :func:`fvd` enforces ``T >= MIN_FRAMES``; :class:`I3D` itself
shrinks the head window to the map for smaller inputs (so tests can run tiny clips), which is
identical to the original whenever the map is at least ``2x7x7``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pgmm.metrics import MetricWeightsMissing, read_state_dict
from pgmm.metrics.image import as_frames, check_unit_range

MIN_FRAMES = 9
FVD_RESOLUTION = 224

_T3 = tuple[int, int, int]


def _same_padding(size: tuple[int, ...], kernel: _T3, stride: _T3) -> list[int]:
    """TensorFlow 'SAME' padding for (T, H, W), as F.pad's (W, H, T) front/back list.

    The output length is ceil(size / stride); TF puts the odd extra pad at the end.
    """
    pads: list[int] = []
    for n, k, s in zip(reversed(size), reversed(kernel), reversed(stride), strict=True):
        total = max(k - s, 0) if n % s == 0 else max(k - n % s, 0)
        pads += [total // 2, total - total // 2]
    return pads


class _MaxPoolSame(nn.Module):
    def __init__(self, kernel: _T3, stride: _T3) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # -inf padding: TF's SAME max-pool ignores padded cells rather than seeing zeros.
        x = F.pad(x, _same_padding(x.shape[2:], self.kernel, self.stride), value=float("-inf"))
        return F.max_pool3d(x, self.kernel, self.stride)


class _Unit(nn.Module):
    """Conv3d (SAME padding) + BatchNorm(eps 1e-3) + ReLU; the logits unit has bias, no BN/ReLU."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: _T3 = (1, 1, 1),
        stride: _T3 = (1, 1, 1),
        head: bool = False,
    ) -> None:
        super().__init__()
        self.kernel, self.stride, self.head = kernel, stride, head
        self.conv3d = nn.Conv3d(cin, cout, kernel, stride, bias=head)
        if not head:
            self.bn = nn.BatchNorm3d(cout, eps=1e-3, momentum=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(F.pad(x, _same_padding(x.shape[2:], self.kernel, self.stride)))
        return x if self.head else F.relu(self.bn(x))


class _Mixed(nn.Module):
    """Inflated Inception block: four branches concatenated over channels."""

    def __init__(self, cin: int, c: tuple[int, int, int, int, int, int]) -> None:
        super().__init__()
        self.b0 = _Unit(cin, c[0])
        self.b1a = _Unit(cin, c[1])
        self.b1b = _Unit(c[1], c[2], (3, 3, 3))
        self.b2a = _Unit(cin, c[3])
        self.b2b = _Unit(c[3], c[4], (3, 3, 3))
        self.b3a = _MaxPoolSame((3, 3, 3), (1, 1, 1))
        self.b3b = _Unit(cin, c[5])
        self.out_channels = c[0] + c[2] + c[4] + c[5]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))],
            dim=1,
        )


# Mixed blocks: (name, (1x1, 3x3 reduce, 3x3, 3x3 reduce, 3x3, pool proj)).
_MIXED = {
    "3b": (64, 96, 128, 16, 32, 32),
    "3c": (128, 128, 192, 32, 96, 64),
    "4b": (192, 96, 208, 16, 48, 64),
    "4c": (160, 112, 224, 24, 64, 64),
    "4d": (128, 128, 256, 24, 64, 64),
    "4e": (112, 144, 288, 32, 64, 64),
    "4f": (256, 160, 320, 32, 128, 128),
    "5b": (256, 160, 320, 32, 128, 128),
    "5c": (384, 192, 384, 48, 128, 128),
}


class I3D(nn.Module):
    """Inception-v1 I3D on RGB clips ``(B, 3, T, H, W)`` in [-1, 1].

    Built in eval mode with gradients off: it is a fixed feature extractor for FVD, and
    batch statistics must never leak into the features.
    """

    def __init__(self, num_classes: int = 400) -> None:
        super().__init__()
        self.weights_path: Path | None = None
        blocks: list[tuple[str, nn.Module]] = [
            ("Conv3d_1a_7x7", _Unit(3, 64, (7, 7, 7), (2, 2, 2))),
            ("MaxPool3d_2a_3x3", _MaxPoolSame((1, 3, 3), (1, 2, 2))),
            ("Conv3d_2b_1x1", _Unit(64, 64)),
            ("Conv3d_2c_3x3", _Unit(64, 192, (3, 3, 3))),
            ("MaxPool3d_3a_3x3", _MaxPoolSame((1, 3, 3), (1, 2, 2))),
        ]
        channels = 192
        pools = {"4b": ("MaxPool3d_4a_3x3", (3, 3, 3)), "5b": ("MaxPool3d_5a_2x2", (2, 2, 2))}
        for name, widths in _MIXED.items():
            if name in pools:
                pool_name, k = pools[name]
                blocks.append((pool_name, _MaxPoolSame(k, (2, 2, 2))))
            mixed = _Mixed(channels, widths)
            blocks.append((f"Mixed_{name}", mixed))
            channels = mixed.out_channels
        for name, module in blocks:
            self.add_module(name, module)
        self.block_names = [name for name, _ in blocks]
        self.feature_dim = channels  # 1024
        self.logits = _Unit(channels, num_classes, head=True)
        self.eval().requires_grad_(False)

    def load_weights(self, path: str | Path) -> I3D:
        """Load this module's state dict from a local ``.pt``/``.pth``/``.safetensors`` file.

        Only ``num_batches_tracked`` may be absent (older exports lack it); any other missing
        or extra key is an error, since a partly loaded I3D gives plausible-looking garbage.
        """
        state = read_state_dict(path, "I3D weights (pgmm.metrics.fvd.I3D state dict)")
        missing, unexpected = self.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.endswith("num_batches_tracked")]
        if missing or unexpected:
            raise ValueError(
                f"I3D weights at {path} do not match the expected layout: "
                f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
            )
        self.weights_path = Path(path)
        return self

    def forward(
        self, clips: torch.Tensor, output: Literal["logits", "pool"] = "logits"
    ) -> torch.Tensor:
        """``(B, 3, T, H, W)`` -> ``(B, num_classes)`` logits or ``(B, 1024)`` pooled features.

        The logits are the clip-level (time-averaged) class scores, FVD's features.
        """
        x = clips
        for name in self.block_names:
            x = getattr(self, name)(x)
        window = (min(2, x.shape[2]), min(7, x.shape[3]), min(7, x.shape[4]))
        # Mean over the head's window positions; the 1x1x1 logits conv is affine, so
        # applying it after the mean equals averaging per-position logits as the original does.
        pooled = F.avg_pool3d(x, window, stride=1).mean(dim=(2, 3, 4), keepdim=True)
        if output == "pool":
            return pooled.flatten(1)
        return self.logits(pooled).flatten(1)


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """Fréchet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2).

    ``|mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))``. The trace of the square root is taken as
    ``sum sqrt(eig(S1^(1/2) S2 S1^(1/2)))``: that matrix is symmetric PSD with the same
    eigenvalues as ``S1 S2``, so symmetric eigen-solvers apply and no complex values arise
    (the usual ``scipy.linalg.sqrtm(S1 @ S2)`` route returns tiny imaginary parts for the
    rank-deficient covariances of few samples). Rounding-level negative eigenvalues are
    clipped to 0; clearly negative ones mean a covariance is not PSD and raise.
    """
    mu1 = np.atleast_1d(np.asarray(mu1, dtype=np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    s1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
    s2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    d = mu1.shape[0]
    if mu2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(f"shape mismatch: {mu1.shape}, {s1.shape}, {mu2.shape}, {s2.shape}")

    def psd_eigh(m: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
        w, v = np.linalg.eigh((m + m.T) / 2)
        if w.min() < -1e-6 * max(1.0, np.abs(w).max()):
            raise ValueError(f"{name} is not positive semi-definite (eigenvalue {w.min():.3g})")
        return np.clip(w, 0.0, None), v

    w1, v1 = psd_eigh(s1, "sigma1")
    root1 = (v1 * np.sqrt(w1)) @ v1.T
    lam, _ = psd_eigh(root1 @ s2 @ root1, "S1^(1/2) S2 S1^(1/2)")
    diff = mu1 - mu2
    value = diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.sqrt(lam).sum()
    return max(float(value), 0.0)


@torch.inference_mode()
def i3d_features(
    videos: torch.Tensor,
    i3d: I3D,
    resolution: int = FVD_RESOLUTION,
    batch_size: int = 8,
    output: Literal["logits", "pool"] = "logits",
) -> np.ndarray:
    """I3D features of clips ``(B, T, 3, H, W)`` in [0, 1] -> ``(B, D)`` float64.

    Frames are resized to ``resolution`` squared (bilinear) and mapped to [-1, 1], as FVD does.
    """
    if videos.dim() != 5:
        raise ValueError(f"expected videos (B,T,3,H,W), got shape {tuple(videos.shape)}")
    check_unit_range(videos, "videos")
    device = next(i3d.parameters()).device
    feats = []
    for chunk in videos.split(batch_size):
        b, t = chunk.shape[:2]
        frames = F.interpolate(
            as_frames(chunk).to(device, torch.float32),
            size=(resolution, resolution),
            mode="bilinear",
            align_corners=False,
        )
        clips = (frames * 2 - 1).reshape(b, t, 3, resolution, resolution).transpose(1, 2)
        feats.append(i3d(clips, output=output).double().cpu())
    return torch.cat(feats).numpy()


def fvd(
    real_videos: torch.Tensor,
    fake_videos: torch.Tensor,
    i3d: I3D,
    resolution: int = FVD_RESOLUTION,
    batch_size: int = 8,
    output: Literal["logits", "pool"] = "logits",
) -> float:
    """FVD between two sets of clips ``(B, T, 3, H, W)`` in [0, 1] (B >= 2 each, T >= 9).

    ``i3d`` must have weights loaded (:meth:`I3D.load_weights`); an unloaded one raises
    :class:`~pgmm.metrics.MetricWeightsMissing`, because random I3D features give a number
    that looks like an FVD but measures nothing. Covariances are the unbiased sample
    covariances, as in the reference implementation.
    """
    if i3d.weights_path is None:
        raise MetricWeightsMissing("<none loaded: call I3D.load_weights(path)>", "I3D weights")
    stats = []
    for name, videos in (("real_videos", real_videos), ("fake_videos", fake_videos)):
        if videos.dim() != 5 or videos.shape[0] < 2 or videos.shape[1] < MIN_FRAMES:
            raise ValueError(
                f"{name} must be (B>=2, T>={MIN_FRAMES}, 3, H, W), got {tuple(videos.shape)}"
            )
        feats = i3d_features(videos, i3d, resolution, batch_size, output)
        stats.append((feats.mean(axis=0), np.cov(feats, rowvar=False)))
    (mu1, s1), (mu2, s2) = stats
    return frechet_distance(mu1, s1, mu2, s2)
