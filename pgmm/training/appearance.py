"""Appearance jitter: one random colour transform per frame pair, the same for both frames.

Why: SynthSigner's corpus has ten identities, and a renderer trained long on a few of them
learns their colours instead of copying the source's (cross-person hand PCK fell from 0.73 to
0.50 when ``full-small`` went from 600 to 6,000 steps on 5 identities). Recolouring each pair
turns ten identities into a continuum of skins, clothes and backgrounds, while the task stays
the same: the source and driving frames of a pair get the *same* transform, so the target is
still "the source's appearance in the driving pose". Poses and heatmaps are untouched.

The transform is linear in RGB -- a hue rotation about the grey axis, a saturation scale
towards the pixel's grey, then contrast about mid-grey and a brightness offset -- so a batch
costs one 3x3 matrix per pair. Draws come from torch's global generator, which the trainer
seeds per step, so a resumed run recolours exactly as an uninterrupted one.
"""

from __future__ import annotations

import math

import torch


def random_color_transform(
    n: int, strength: float, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random transforms ``x -> M x + b`` as ``M (n, 3, 3)`` and ``b (n, 3)``.

    ``strength`` in [0, 1]: hue rotation up to ``strength * pi`` either way, saturation and
    contrast scaled by ``exp(U(-strength, strength))`` and ``exp(U(-strength, strength) / 2)``,
    brightness shifted by up to ``strength / 4``. 0 is the identity.
    """
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"appearance jitter strength must be in [0, 1], got {strength}")

    def uniform(scale: float) -> torch.Tensor:
        return (torch.rand(n) * 2 - 1) * scale

    theta = uniform(strength * math.pi)
    saturation = uniform(strength).exp()
    contrast = (uniform(strength) / 2).exp()
    brightness = uniform(strength / 4)

    # Rodrigues' rotation about the unit grey axis k = (1, 1, 1) / sqrt(3).
    k = torch.full((3,), 1 / math.sqrt(3))
    cross = torch.tensor([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    outer = torch.outer(k, k)
    eye = torch.eye(3)
    cos, sin = theta.cos()[:, None, None], theta.sin()[:, None, None]
    hue = cos * eye + sin * cross + (1 - cos) * outer
    # Saturation: blend each colour with its grey (the mean of its channels).
    s = saturation[:, None, None]
    sat = s * eye + (1 - s) * torch.full((3, 3), 1 / 3)
    c = contrast[:, None, None]
    matrix = c * sat @ hue
    bias = ((1 - contrast) * 0.5 + brightness)[:, None].expand(n, 3)
    return matrix.to(device), bias.contiguous().to(device)


def jitter_appearance(
    frames: tuple[torch.Tensor, ...], strength: float
) -> tuple[torch.Tensor, ...]:
    """Recolour each pair: ``frames`` are ``(N, 3, H, W)`` in [0, 1], pair ``i`` being row
    ``i`` of every tensor; all get pair ``i``'s transform. ``strength`` 0 returns them as is."""
    if strength == 0:
        return frames
    n = frames[0].shape[0]
    matrix, bias = random_color_transform(n, strength, frames[0].device)
    return tuple(
        (torch.einsum("nij,njhw->nihw", matrix, x) + bias[:, :, None, None]).clamp(0, 1)
        for x in frames
    )
