"""On which pixel scale does TCD's T = 0.5 apply? Measure smooth vs flickering videos.

The paper (Eqs. 12-13) thresholds ``D = |Î_t - ½(I_{t-1} + I_{t+1})|`` at T = 0.5 but does not
say whether images are in [0, 1] or 0..255, nor how colour channels are combined. This script
renders one SynthSigner test sentence as the target and scores "generated" videos of known
temporal behaviour -- the target itself, a smooth imperfect copy (shifted 1 px and blurred), the
same copy with frame-independent noise or alternating brightness (flicker), and the shipped
``full-small`` renderer driven by the ground-truth poses -- under each reading. A usable reading
ranks flicker above smooth and is not saturated (near 0 or 1 for everything).

    python scripts/tcd_scale.py                 # ~1 CPU minute; prints a markdown table
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import torch

# scripts/ is on sys.path when run as a script
from dot_artefact import binomial_blur, load_clip, render

from pgmm.data.synth.dataset import RenderedSynthSigner
from pgmm.metrics.tcd import TCD_THRESHOLD, neighbour_difference
from pgmm.models.pgmm import PGMM
from pgmm.report import md_table

ROOT = Path(__file__).resolve().parents[1]
LUMA = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64).view(1, 1, 3, 1, 1)

#: How the per-channel D of Eq. 12 becomes "the proportion of pixels" of Eq. 13.
Reduction = Callable[[torch.Tensor], torch.Tensor]
REDUCTIONS: dict[str, Reduction] = {
    "channel mean of D": lambda d: d.mean(dim=2),
    "per channel": lambda d: d,
    # D of the grey (Rec. 601 luma) images: the luma of the signed differences, not of |D|.
    "grey": lambda d: (d * LUMA).sum(dim=2).abs(),
}
SCALES = {"[0, 1]": 1.0, "0..255": 255.0}


def _noise(video: torch.Tensor, sigma: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (video + sigma * torch.randn(video.shape, generator=g)).clamp(0, 1)


def _alternate(video: torch.Tensor, amplitude: float) -> torch.Tensor:
    sign = torch.ones(len(video)).view(-1, 1, 1, 1)
    sign[1::2] = -1
    return (video + amplitude * sign).clamp(0, 1)


def fraction(pred: torch.Tensor, target: torch.Tensor, scale: float, reduction: Reduction) -> float:
    """TCD (Eq. 13) under one reading: D on ``scale``, channels combined by ``reduction``."""
    d = reduction(neighbour_difference(pred, target)) * scale
    return float((d > TCD_THRESHOLD).double().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "models/pgmm/full-small")
    args = parser.parse_args()
    data = RenderedSynthSigner("test", args.size, languages=("de",), max_videos=1)
    target, points = load_clip(data, 0, args.frames)
    smooth = binomial_blur(torch.roll(target, shifts=1, dims=-1))
    # The shipped renderer driven by the sentence's ground-truth poses (``PGMM.animate``).
    model = PGMM.from_pretrained(args.checkpoint).eval()
    rendered = render(model, (target, points)).float().clamp(0, 1)
    videos = {
        "target itself (perfect reconstruction)": target,
        "smooth: shifted 1 px + 3x3 blur": smooth,
        "smooth + per-frame noise σ=2/255": _noise(smooth, 2 / 255),
        "smooth + per-frame noise σ=0.05": _noise(smooth, 0.05),
        "smooth + alternating brightness ±2/255": _alternate(smooth, 2 / 255),
        "smooth + alternating brightness ±0.1": _alternate(smooth, 0.1),
        "smooth + alternating brightness ±0.3": _alternate(smooth, 0.3),
        "full-small, pose-driven": rendered,
        "full-small + alternating brightness ±0.1": _alternate(rendered, 0.1),
    }
    columns = [(s, r) for s in SCALES for r in REDUCTIONS]
    own = neighbour_difference(target, target).mean(dim=2)
    print(f"{data.sentences[0].id}, {args.frames} frames at {args.size}², T = {TCD_THRESHOLD}")
    print(f"share of pixels where the target jumps > 0.25 from its neighbours' mean: "
          f"{float((own > 0.25).double().mean()):.4f}")  # fmt: skip
    heads = [f"{s}, {r}" for s, r in columns] + ["L1 (levels)", "median D (levels)"]
    rows = []
    for name, video in videos.items():
        cells = [f"{fraction(video, target, SCALES[s], REDUCTIONS[r]):.3f}" for s, r in columns]
        d = neighbour_difference(video, target).mean(dim=2)
        cells += [
            f"{float((video - target).abs().mean()) * 255:.1f}",
            f"{float(d.median()) * 255:.1f}",
        ]
        rows.append([name, *cells])
    print(md_table(["video", *heads], rows))


if __name__ == "__main__":
    main()
