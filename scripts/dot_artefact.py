"""The dot/checkerboard artefact of the PGMM renderer: measure it, test its suspects, show it.

The shipped ``models/pgmm/full-small`` draws coloured dots over the face, hands and clothes.
Three suspects (issue 16): the frozen random-weight VGG19 of the perceptual loss, the
up-sampling of the generator (nearest neighbour then conv), and the pose heatmaps leaking into
the output through P_d, whose up-sampling is a 3x3 stride-2 transposed conv. Each is tested,
not assumed:

* ``measure``: high-frequency energy of frames rendered from ground-truth poses (the
  ``drive="pose"`` setting of ``pgmm.evaluation``: source = first frame, every frame animated
  from its heatmaps) against the real frames: the power of the frame's Laplacian and the share
  of its spectrum on the 2-pixel-period lines (the Nyquist row and column of the 2-D FFT), each
  as a ratio generated / real, plus L1 and SSIM. ``--knockout`` also renders the shipped model
  with the pose features of the 128^2 stage set to zero, and with bilinear generator
  up-sampling -- no training, one suspect removed at a time.
* ``probe``: does the random VGG19 penalise the dots or reward them? The perceptual loss of
  the rendered frames against the real ones, and of the same frames with the 2-pixel period
  filtered out.
* ``finetune``: 100-200 steps from the shipped checkpoint with one suspect changed at a time
  (``--set key=value`` on the model config, ``--generator-upsample``), same data and seed.
* ``crops``: the same frame from several models side by side, enlarged 3x, as a PNG.

Every subcommand prints what it measured; ``measure`` also writes JSON next to its models.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from PIL import Image, ImageDraw

from pgmm.data.synth.dataset import RenderedSynthSigner
from pgmm.losses.perceptual import Vgg19Features, perceptual_loss
from pgmm.metrics.image import l1, ssim
from pgmm.models.config import PGMMConfig
from pgmm.models.hourglass import UpBlock2d
from pgmm.models.pgmm import PGMM
from pgmm.models.pose_estimator import HRNetLite
from pgmm.pose.heatmaps import pose_heatmaps
from pgmm.report import md_table
from pgmm.training.config import TrainConfig
from pgmm.training.trainer import PGMMTrainer

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "models" / "pgmm" / "full-small"
ESTIMATOR = ROOT / "models" / "pose_estimator"


@dataclass
class HighFrequency:
    """High-frequency energy of generated frames relative to the real ones (1.0 = as real)."""

    model: str
    laplacian_ratio: float  # mean squared Laplacian, generated / real
    period2_ratio: float  # spectral share on the 2-px-period lines, generated / real
    l1: float
    ssim: float
    frames: int


def _laplacian_power(frames: torch.Tensor) -> float:
    kernel = torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]]).view(1, 1, 3, 3).repeat(3, 1, 1, 1)
    return float(F.conv2d(frames, kernel, groups=3).square().mean())


def _period2_share(frames: torch.Tensor) -> float:
    """Share of each channel's spectral power (mean removed) on the Nyquist row and column."""
    centred = frames - frames.mean(dim=(-2, -1), keepdim=True)
    power = torch.fft.fft2(centred).abs().square()
    h, w = frames.shape[-2:]
    nyquist = power[..., h // 2, :].sum(-1) + power[..., :, w // 2].sum(-1)
    return float((nyquist / power.sum((-2, -1)).clamp_min(1e-12)).mean())


def load_clip(data: RenderedSynthSigner, i: int, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(frames (T, 3, S, S) in [0, 1], ground-truth poses (T, 133, 3))`` of video ``i``."""
    video = torch.from_numpy(np.array(data.load_frames(i)[:frames])).permute(0, 3, 1, 2)
    return video.float() / 255, torch.from_numpy(data.load_poses(i).data[:frames].copy())


def dev_clips(videos: int, frames: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """:func:`load_clip` of each of the first dev videos."""
    data = RenderedSynthSigner("dev", 128, max_videos=videos)
    return [load_clip(data, i, frames) for i in range(len(data))]


def binomial_blur(x: torch.Tensor) -> torch.Tensor:
    """3x3 [1, 2, 1] x [1, 2, 1] / 16 blur of ``(T, 3, H, W)`` (replicate padding): zero at the
    2-pixel period, so it removes the dots (and softens edges a little)."""
    taps = torch.tensor([1.0, 2.0, 1.0])
    kernel = (taps[:, None] * taps[None, :] / 16).view(1, 1, 3, 3).repeat(3, 1, 1, 1)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, groups=3)


def render(model: PGMM, clip: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Every frame of the clip animated from its ground-truth pose; source = the first frame."""
    frames, poses = clip
    cfg = model.config
    maps = pose_heatmaps(poses, cfg.image_size, cfg.heatmap_stride, cfg.heatmap_sigma)
    with torch.no_grad():
        state = model.encode_source(frames[:1], maps[:1])
        return torch.cat([model.animate(state, maps[i : i + 16]) for i in range(0, len(maps), 16)])


def high_frequency(name: str, model: PGMM, clips: list) -> HighFrequency:
    model.eval()
    pred = torch.cat([render(model, clip) for clip in clips]).clamp(0, 1)
    real = torch.cat([clip[0] for clip in clips])
    return HighFrequency(
        model=name,
        laplacian_ratio=_laplacian_power(pred) / _laplacian_power(real),
        period2_ratio=_period2_share(pred) / _period2_share(real),
        l1=l1(pred, real),
        ssim=ssim(pred, real),
        frames=len(real),
    )


def load(path: Path) -> PGMM:
    """A checkpoint, with the generator up-sampling its ``finetune`` run used (if it set one)."""
    model = PGMM.from_pretrained(path).eval()
    for mode in (path / "generator_upsample.txt", path.parent / "generator_upsample.txt"):
        if mode.is_file():
            set_generator_upsample(model, mode.read_text().strip())
    return model


def set_generator_upsample(model: PGMM, mode: str) -> PGMM:
    """The generator's up blocks have no parameters tied to their interpolation mode."""
    for block in model.generator.modules():
        if isinstance(block, UpBlock2d):
            block.mode = mode
    return model


def knockouts() -> list[tuple[str, PGMM]]:
    """The shipped model with one suspect removed, without any training."""
    zeroed = load(SHIPPED)
    features = zeroed.posenet.forward

    def finest_zeroed(heatmaps: torch.Tensor, size: tuple[int, int]) -> list[torch.Tensor]:
        out = features(heatmaps, size)
        return [torch.zeros_like(out[0]), *out[1:]]

    zeroed.posenet.forward = finest_zeroed  # type: ignore[method-assign]
    bilinear = set_generator_upsample(load(SHIPPED), "bilinear")
    return [
        ("shipped, 128^2 pose features zeroed", zeroed),
        ("shipped, bilinear generator up-sampling", bilinear),
    ]


def cmd_measure(args: argparse.Namespace) -> None:
    clips = dev_clips(args.videos, args.frames)
    models = [(str(p), load(p)) for p in args.models]
    if args.knockout:
        models += knockouts()
    rows = [high_frequency(name, model, clips) for name, model in models]
    header = ["model", "Laplacian power gen/real", "2-px-period share gen/real", "L1", "SSIM"]
    cells = [
        (
            r.model,
            f"{r.laplacian_ratio:.2f}",
            f"{r.period2_ratio:.1f}",
            f"{r.l1:.4f}",
            f"{r.ssim:.3f}",
        )
        for r in rows
    ]
    print(md_table(header, cells))
    if args.knockout:  # where the pattern comes from: P_d's features, finest first
        shipped = load(SHIPPED)
        frames, poses = clips[0]
        cfg = shipped.config
        maps = pose_heatmaps(poses, cfg.image_size, cfg.heatmap_stride, cfg.heatmap_sigma)
        coarse = cfg.image_size // 2**cfg.num_down_blocks
        with torch.no_grad():
            features = shipped.posenet(maps, (coarse, coarse))
        shares = ", ".join(f"{f.shape[-1]}^2: {_period2_share(f):.2f}" for f in features)
        print(f"shipped P_d features, share of power at the 2-px period: {shares}")
    if args.out:
        args.out.write_text(json.dumps([dataclasses.asdict(r) for r in rows], indent=2) + "\n")


def cmd_probe(args: argparse.Namespace) -> None:
    clips = dev_clips(args.videos, args.frames)
    model = load(SHIPPED)
    pred = torch.cat([render(model, clip) for clip in clips]).clamp(0, 1)
    real = torch.cat([clip[0] for clip in clips])
    # The filter on the real frames too: how much it softens their edges.
    pred_smooth, real_smooth = binomial_blur(pred), binomial_blur(real)
    rows = []
    for width in (0.25, 1.0):
        vgg = Vgg19Features(width=width)
        with torch.no_grad():
            values = [
                perceptual_loss(x, real, vgg).item() for x in (pred, pred_smooth, real_smooth)
            ]
        rows.append([f"random VGG19 x{width}", *(f"{v:.3f}" for v in values)])
    rows.append(["(L1)", *(f"{l1(x, real):.4f}" for x in (pred, pred_smooth, real_smooth))])
    header = ["perceptual network", "L(generated)", "L(generated, 2-px period removed)"]
    print(md_table([*header, "L(real, same filter)"], rows))


def cmd_finetune(args: argparse.Namespace) -> None:
    base = load(SHIPPED)
    # --set key=value: numbers, booleans and strings as in a config
    overrides = {k: yaml.safe_load(v) for k, _, v in (item.partition("=") for item in args.set)}
    mcfg = PGMMConfig.from_dict({**base.config.to_dict(), **overrides})
    tcfg = TrainConfig.from_yaml(
        ROOT / "configs" / "pgmm" / "full-small.yaml",
        {"epochs": 1, "max_steps": args.steps, "pairs_per_video": args.steps * 4 // args.videos,
         "log_every": 10, "sample_every": args.steps, "checkpoint_every": args.steps},
    )  # fmt: skip
    data = RenderedSynthSigner("train", 128, max_videos=args.videos)
    estimator = HRNetLite.from_pretrained(ESTIMATOR)
    trainer = PGMMTrainer(mcfg, tcfg, data, args.out, estimator=estimator, init_from=base)
    if args.generator_upsample:
        set_generator_upsample(trainer.model, args.generator_upsample)
        (args.out / "generator_upsample.txt").write_text(args.generator_upsample)
    trainer.run()


def cmd_crops(args: argparse.Namespace) -> None:
    clip = dev_clips(args.video + 1, args.frame + 1)[args.video]
    tiles = [("real", clip[0][args.frame])]
    for path, label in zip(args.models, args.labels or [p.name for p in args.models], strict=True):
        model = load(path)
        tiles.append((label, render(model, clip)[args.frame].clamp(0, 1)))
    scale, pad = 3, 18
    size = clip[0].shape[-1] * scale
    sheet = Image.new("RGB", (len(tiles) * size, size + pad), "white")
    draw = ImageDraw.Draw(sheet)
    for k, (label, frame) in enumerate(tiles):
        pixels = (frame.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        tile = Image.fromarray(pixels).resize((size, size), Image.Resampling.NEAREST)
        sheet.paste(tile, (k * size, pad))
        draw.text((k * size + 4, 3), label, fill=(0, 0, 0))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out)
    print(f"wrote {args.out}")


def main() -> int:
    torch.set_num_threads(1)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    measure = sub.add_parser("measure")
    measure.add_argument("models", nargs="*", type=Path, default=[SHIPPED])
    measure.add_argument("--knockout", action="store_true")
    measure.add_argument("--out", type=Path)
    probe = sub.add_parser("probe")
    for p in (measure, probe):
        p.add_argument("--videos", type=int, default=4, help="dev videos")
        p.add_argument("--frames", type=int, default=32, help="first frames of each")
    tune = sub.add_parser("finetune")
    tune.add_argument("--out", type=Path, required=True)
    tune.add_argument("--steps", type=int, default=100)
    tune.add_argument("--videos", type=int, default=16, help="train videos")
    tune.add_argument("--set", action="append", default=[], help="model config key=value")
    tune.add_argument("--generator-upsample", choices=("nearest", "bilinear"))
    crops = sub.add_parser("crops")
    crops.add_argument("models", nargs="+", type=Path)
    crops.add_argument("--labels", nargs="+")
    crops.add_argument("--out", type=Path, required=True)
    crops.add_argument("--video", type=int, default=0)
    crops.add_argument("--frame", type=int, default=12)
    args = parser.parse_args()
    {"measure": cmd_measure, "probe": cmd_probe, "finetune": cmd_finetune,
     "crops": cmd_crops}[args.command](args)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
