"""Can the fingers of a rendered hand be told apart? A pixel measure against the real frame.

Issue 16 asks for "fingers of an open hand distinguishable". A keypoint reader cannot say it
(it finds a hand's points in a blob as well), and no network may judge the renderer here, so
this measures the pixels themselves, against SynthSigner's own frame of the same pose:

* for every frame of the first dev videos, every hand and every pair of neighbouring fingers
  (thumb-index, index-middle, middle-ring, ring-little), a point on each finger (halfway between
  its last joint and its tip, from the ground-truth pose) and the point halfway between the
  two fingers -- the gap;
* the **gap contrast** of a frame at that pair: the colour distance (RGB in [0, 1], Euclidean)
  between the gap and the mean of the two finger points, sampled bilinearly. Where the real
  frame shows two fingers with background or shadow between them it is high; where a renderer
  paints the hand as one blob it is near zero;
* pairs count only where the **real** frame separates them (fingers at least ``--min-apart``
  pixels apart and a real gap contrast of at least ``--min-contrast``): there both frames are
  compared, the renderer's contrast as a share of the real one, and a pair is *told apart*
  when the renderer keeps at least half the real contrast.

Renderers are driven as in ``scripts/dot_artefact.py`` (every frame animated from its
ground-truth pose, source = the first frame). ``--sheet`` writes the pairs with the highest real
contrast as 3x crops (real | each model), the picture the number summarises.

    python scripts/finger_gaps.py models/pgmm/full-small --sheet docs/images/finger_gaps_3x.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from dot_artefact import dev_clips, load, render
from PIL import Image, ImageDraw

from pgmm.pose.layout import LEFT_HAND_OFFSET, RIGHT_HAND_OFFSET

# Within a hand's 21 points: finger k (thumb = 0) has its last joint at 3 + 4k, its tip at 4 + 4k.
NEIGHBOURS = [(0, 1), (1, 2), (2, 3), (3, 4)]
CROP = 20  # crop side in pixels of the 128^2 frame, around a pair's gap


def finger_points(poses: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(T, 2 hands, 5 fingers, 2)`` pixel points halfway between last joint and tip, and
    ``(T, 2, 5)``: whether both joints are labelled visible (occluded fingers are left out)."""
    hands, seen = [], []
    for offset in (LEFT_HAND_OFFSET, RIGHT_HAND_OFFSET):
        joint = poses[:, [offset + 3 + 4 * k for k in range(5)]]
        tip = poses[:, [offset + 4 + 4 * k for k in range(5)]]
        hands.append((joint[..., :2] + tip[..., :2]) / 2 * size)
        seen.append((joint[..., 2] > 0.5) & (tip[..., 2] > 0.5))
    return torch.stack(hands, dim=1), torch.stack(seen, dim=1)


def sample(frames: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Bilinear colours ``(T, N, 3)`` of ``frames (T, 3, S, S)`` at pixel points ``(T, N, 2)``
    (pixel centres at i + 0.5, as ``PoseSequence.pixels``)."""
    size = frames.shape[-1]
    grid = (points / size * 2 - 1)[:, None]  # (T, 1, N, 2)
    out = F.grid_sample(frames, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out[:, :, 0].permute(0, 2, 1)


def gap_contrast(frames: torch.Tensor, fingers: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Gap contrast ``(T, 2, 4)``, finger distance in pixels and gap point ``(T, 2, 4, 2)``."""
    a = fingers[:, :, [i for i, _ in NEIGHBOURS]]
    b = fingers[:, :, [j for _, j in NEIGHBOURS]]
    gap = (a + b) / 2
    t = frames.shape[0]
    colour = {
        name: sample(frames, p.reshape(t, -1, 2)).reshape(t, 2, len(NEIGHBOURS), 3)
        for name, p in (("a", a), ("b", b), ("gap", gap))
    }
    contrast = (colour["gap"] - (colour["a"] + colour["b"]) / 2).norm(dim=-1)
    return contrast, (a - b).norm(dim=-1), gap


def crop(frame: torch.Tensor, centre: torch.Tensor) -> Image.Image:
    """A ``CROP``-pixel square of ``frame`` around ``centre``, enlarged 3x (nearest)."""
    size = frame.shape[-1]
    x0, y0 = (int(round(float(v) - CROP / 2)) for v in centre)
    x0, y0 = min(max(x0, 0), size - CROP), min(max(y0, 0), size - CROP)
    pixels = (frame[:, y0 : y0 + CROP, x0 : x0 + CROP].permute(1, 2, 0).numpy() * 255).round()
    return Image.fromarray(pixels.astype(np.uint8)).resize(
        (CROP * 3, CROP * 3), Image.Resampling.NEAREST
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", type=Path, help="PGMM folders")
    parser.add_argument("--videos", type=int, default=4, help="first N dev videos")
    parser.add_argument("--frames", type=int, default=48, help="first N frames of each")
    parser.add_argument("--min-apart", type=float, default=2.5, help="pixels between fingers")
    parser.add_argument("--min-contrast", type=float, default=0.1, help="real gap contrast")
    parser.add_argument("--sheet", type=Path, help="PNG of the clearest pairs, real | models")
    parser.add_argument("--sheet-pairs", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    clips = dev_clips(args.videos, args.frames)
    real = torch.cat([frames for frames, _ in clips])
    size = real.shape[-1]
    points = [finger_points(poses.float(), size) for _, poses in clips]
    fingers, seen = torch.cat([p for p, _ in points]), torch.cat([v for _, v in points])
    real_contrast, apart, gap = gap_contrast(real, fingers)
    both_seen = seen[:, :, [i for i, _ in NEIGHBOURS]] & seen[:, :, [j for _, j in NEIGHBOURS]]
    shown = both_seen & (apart >= args.min_apart) & (real_contrast >= args.min_contrast)
    if not shown.any():
        raise SystemExit(
            "no finger pair is separated in the real frames of this selection: take more "
            "--videos/--frames, or lower --min-apart/--min-contrast"
        )
    print(
        f"{int(shown.sum())} finger pairs the real frames separate, of {shown.numel()} "
        f"({len(real)} frames × 2 hands × {len(NEIGHBOURS)} pairs); "
        f"real gap contrast {float(real_contrast[shown].mean()):.3f}, finger points "
        f"{float(apart[shown].median()):.1f} px apart (median)"
    )
    rendered = {}
    for path in args.models:
        model = load(path)
        frames = torch.cat([render(model, clip) for clip in clips]).clamp(0, 1)
        rendered[path.name] = frames
        contrast = gap_contrast(frames, fingers)[0][shown]
        row = {
            "model": str(path),
            "pairs": int(shown.sum()),
            "real_gap_contrast": round(float(real_contrast[shown].mean()), 4),
            "gap_contrast": round(float(contrast.mean()), 4),
            "share_of_real": round(float(contrast.mean() / real_contrast[shown].mean()), 3),
            "told_apart": round(float((contrast >= real_contrast[shown] / 2).float().mean()), 3),
        }
        print(json.dumps(row))
    if args.sheet:
        where = []  # the clearest pairs, at most one per 8 frames: different hands and moments
        for t, h, p in shown.nonzero()[torch.argsort(real_contrast[shown], descending=True)]:
            if len(where) < args.sheet_pairs and all(abs(t - u) >= 8 for u, _, _ in where):
                where.append((t, h, p))
        tile = CROP * 3
        sheet = Image.new("RGB", ((1 + len(rendered)) * tile, len(where) * tile + 14), "white")
        ImageDraw.Draw(sheet).text((2, 1), "real | " + " | ".join(rendered), fill=(0, 0, 0))
        for r, (t, h, p) in enumerate(where):
            centre = gap[t, h, p]
            for c, frame in enumerate([real[t], *(f[t] for f in rendered.values())]):
                sheet.paste(crop(frame, centre), (c * tile, 14 + r * tile))
        args.sheet.parent.mkdir(parents=True, exist_ok=True)
        sheet.save(args.sheet)
        print(f"wrote {args.sheet}")


if __name__ == "__main__":
    main()
