"""Per-frame reconstruction metrics: L1 and SSIM, plus the video-shape helpers all metrics share.

Videos are float tensors in [0, 1] shaped ``(T, 3, H, W)`` or ``(B, T, 3, H, W)``; a frame
metric treats every frame of every clip alike and averages over all of them, which is how the
paper's L1/SSIM rows are computed (mean over all reconstructed test frames).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Wang et al. 2004 constants, as in the paper's SSIM (and skimage with gaussian_weights=True).
SSIM_SIGMA = 1.5
SSIM_WINDOW = 11  # radius int(3.5 * sigma + 0.5) = 5, the filter skimage/scipy build for sigma 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def check_pair(pred: torch.Tensor, target: torch.Tensor) -> None:
    """Reject inputs that would broadcast silently or are not ``(T,C,H,W)``/``(B,T,C,H,W)``."""
    if pred.shape != target.shape:
        raise ValueError(f"pred and target shapes differ: {tuple(pred.shape)} vs {target.shape}")
    if pred.dim() not in (4, 5):
        raise ValueError(f"expected (T,C,H,W) or (B,T,C,H,W), got shape {tuple(pred.shape)}")


def check_unit_range(x: torch.Tensor, name: str) -> None:
    """Metrics whose constants assume [0, 1] (TCD's threshold, LPIPS' scaling) refuse 0..255."""
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(f"{name} must be in [0, 1], got values in [{lo:.4g}, {hi:.4g}]")


def as_frames(x: torch.Tensor) -> torch.Tensor:
    """``(T,C,H,W)`` or ``(B,T,C,H,W)`` -> ``(N,C,H,W)``: frame metrics ignore clip boundaries."""
    return x.reshape(-1, *x.shape[-3:])


def l1(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Mean absolute error over all pixels, channels and frames (the paper's L1 column)."""
    check_pair(pred, target)
    return float((pred.double() - target.double()).abs().mean())


def _gaussian_window(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    radius = SSIM_WINDOW // 2
    x = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    g = torch.exp(-0.5 * (x / SSIM_SIGMA) ** 2)
    return g / g.sum()


def _filter(x: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter over ``(N,C,H,W)``, 'valid' region only.

    skimage filters with reflect padding and then crops the filter radius from every border,
    so only windows fully inside the image count; a valid convolution gives exactly those.
    """
    c = x.shape[1]
    k = window.numel()
    x = F.conv2d(x, window.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)
    return F.conv2d(x, window.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)


def ssim(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> float:
    """Structural similarity, averaged over pixels, channels and frames.

    Gaussian-weighted local statistics (window 11, sigma 1.5), population covariances and
    K1 = 0.01, K2 = 0.03, with the mean taken over the window positions that lie fully inside
    the frame -- the definition of Wang et al. 2004 as implemented by
    ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, channel_axis=-1)``, which the tests check it against.
    Computed in float64 because ``E[x^2] - E[x]^2`` loses most of float32's digits.
    """
    check_pair(pred, target)
    if min(pred.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs frames of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels")
    x = as_frames(pred).double()
    y = as_frames(target).double()
    window = _gaussian_window(x.dtype, x.device)
    mu_x, mu_y = _filter(x, window), _filter(y, window)
    var_x = _filter(x * x, window) - mu_x**2
    var_y = _filter(y * y, window) - mu_y**2
    cov = _filter(x * y, window) - mu_x * mu_y
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    numerator = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    denominator = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    return float((numerator / denominator).mean())
