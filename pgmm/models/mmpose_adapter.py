"""mmpose's pretrained HRNet-W32 COCO-WholeBody model as a :class:`PoseEstimator`.

The optional extra for real signers: a pose estimator trained on real people, used as ``P_e``
(or as a pseudo-labeller) instead of :class:`~pgmm.models.pose_estimator.HRNetLite`. Install it
with ``scripts/install_mmpose.sh``; weights and config are local files, nothing is downloaded.
mmpose is imported inside the constructor, so importing this module never needs it.

The model is top-down: it sees a box warped to its fixed input size (256x192 for W32), and
its heatmaps (stride 4 of that input) live in the box's frame. We use the *whole frame* as the
box -- sign-language video is framed on one signer -- with mmpose's own box conventions (aspect
ratio fixed to the input's by growing one side, then padded by 1.25), so the network sees what
it was trained on. Both warps are differentiable ``grid_sample`` calls, so ``L_pd`` can
back-propagate through this estimator too.

Coordinates: mmpose's non-UDP codecs put pixel ``i``'s *index* at the keypoint (a pixel's
centre has integer coordinates), while this project puts pixel centres at ``i + 0.5``
(:mod:`pgmm.pose.heatmaps`). The affine maps below convert between the two, so keypoints
decoded from our maps carry no half-pixel bias.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from pgmm.models.pose_estimator import PoseEstimator
from pgmm.pose.layout import NUM_WHOLEBODY, PGMM36_FROM_WHOLEBODY

__all__ = [
    "MMPoseWholeBody",
    "PixelAffine",
    "full_frame_affines",
    "resample",
    "wholebody_heatmaps_to_pgmm36",
]

INSTALL_HINT = "install with scripts/install_mmpose.sh"
#: mmpose's default top-down box padding (``GetBBoxCenterScale(padding=1.25)``).
BOX_PADDING = 1.25


@dataclass(frozen=True)
class PixelAffine:
    """Per-axis affine map from a *target* grid to a *source* grid, in continuous pixel units
    with pixel centres at ``i + 0.5``: ``source = scale * target + offset`` for x and for y."""

    scale: tuple[float, float]
    offset: tuple[float, float]

    @classmethod
    def stretch(cls, source_hw: Sequence[int], target_hw: Sequence[int]) -> PixelAffine:
        """Plain resizing: the target grid covers exactly the source grid."""
        (sh, sw), (th, tw) = source_hw, target_hw
        return cls((sw / tw, sh / th), (0.0, 0.0))


def resample(
    maps: torch.Tensor,
    size: tuple[int, int],
    affine: PixelAffine,
    padding_mode: str = "zeros",
) -> torch.Tensor:
    """Bilinear ``(B, C, h, w)`` -> ``(B, C, *size)`` through ``affine`` (target -> source).

    ``grid_sample`` with ``align_corners=False`` reads normalised -1 / +1 as the outer edges
    of the border pixels, which is exactly the ``i + 0.5`` pixel-centre convention; outside
    the source it reads 0 (as mmpose's ``warpAffine`` pads with black). No anti-aliasing, like
    mmpose's own warp, so what the network sees matches its training.
    """
    if maps.ndim != 4:
        raise ValueError(f"maps must be (B, C, h, w), got {tuple(maps.shape)}")
    h_src, w_src = maps.shape[-2:]
    th, tw = size
    dtype = maps.dtype if maps.dtype.is_floating_point else torch.float32
    xs = torch.arange(tw, device=maps.device, dtype=dtype) + 0.5
    ys = torch.arange(th, device=maps.device, dtype=dtype) + 0.5
    gx = (affine.scale[0] * xs + affine.offset[0]) * (2.0 / w_src) - 1.0
    gy = (affine.scale[1] * ys + affine.offset[1]) * (2.0 / h_src) - 1.0
    grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), dim=-1)  # (th, tw, 2) as (x, y)
    grid = grid.unsqueeze(0).expand(maps.shape[0], -1, -1, -1)
    return F.grid_sample(
        maps.to(dtype), grid, mode="bilinear", padding_mode=padding_mode, align_corners=False
    )


def full_frame_affines(
    frame_hw: tuple[int, int],
    input_wh: tuple[int, int],
    heatmap_hw: tuple[int, int],
    output_hw: tuple[int, int],
    padding: float = BOX_PADDING,
) -> tuple[PixelAffine, PixelAffine]:
    """The two warps of top-down inference with the whole frame as the person box.

    Returns ``(frame_from_input, heatmap_from_output)``: the first samples the network input
    (``input_wh``, mmpose's ``(w, h)`` order) from the frame; the second samples our output maps
    (``output_hw``, covering the frame) from the network's heatmaps (``heatmap_hw``).

    mmpose's box for ``[0, 0, W, H]``: centre ``(W/2, H/2)``, size ``(W, H)`` grown to the
    input's aspect ratio, times ``padding``; the warp is ``x_in = k (x - c) + w_in / 2`` in
    pixel-index coordinates, and heatmap index ``i`` stands for input index ``i * stride``.
    """
    height, width = frame_hw
    w_in, h_in = input_wh
    box_w, box_h = float(width), float(height)
    if box_w > box_h * w_in / h_in:
        box_h = box_w * h_in / w_in
    else:
        box_w = box_h * w_in / h_in
    k = w_in / (box_w * padding)  # input pixels per frame pixel (same on both axes)
    # Pixel-index coordinates: x_in_idx = k * x_idx + t; ours are idx + 0.5.
    t = (w_in / 2 - k * width / 2, h_in / 2 - k * height / 2)
    # Frame from input (ours): x = (x_in - 0.5 - t) / k + 0.5.
    frame_from_input = PixelAffine((1 / k, 1 / k), (0.5 - (0.5 + t[0]) / k, 0.5 - (0.5 + t[1]) / k))
    # Heatmap (ours) from output map (ours): frame x = r * q with r = frame px per output px;
    # heatmap index = (k * (x - 0.5) + t) / s with s = input px per heatmap px; ours = index + .5.
    r = (width / output_hw[1], height / output_hw[0])
    s = (w_in / heatmap_hw[1], h_in / heatmap_hw[0])
    heatmap_from_output = PixelAffine(
        (k * r[0] / s[0], k * r[1] / s[1]),
        ((t[0] - 0.5 * k) / s[0] + 0.5, (t[1] - 0.5 * k) / s[1] + 0.5),
    )
    return frame_from_input, heatmap_from_output


def wholebody_heatmaps_to_pgmm36(
    heatmaps133: torch.Tensor, size: tuple[int, int], affine: PixelAffine | None = None
) -> torch.Tensor:
    """``(B, 133, h, w)`` COCO-WholeBody maps -> ``(B, 36, *size)`` PGMM maps.

    Picks the channels of :data:`~pgmm.pose.layout.PGMM36_FROM_WHOLEBODY` (before resampling,
    so only 36 channels are interpolated) and resamples them bilinearly: by default a plain
    resize of the whole map, or through ``affine`` (target -> source) for maps that live in a
    different frame, such as a top-down box.
    """
    if heatmaps133.ndim != 4 or heatmaps133.shape[1] != NUM_WHOLEBODY:
        raise ValueError(
            f"expected (B, {NUM_WHOLEBODY}, h, w) whole-body heatmaps, "
            f"got {tuple(heatmaps133.shape)}"
        )
    index = torch.as_tensor(PGMM36_FROM_WHOLEBODY, device=heatmaps133.device)
    maps = heatmaps133.index_select(1, index)
    if affine is None:
        if tuple(maps.shape[-2:]) == tuple(size):
            return maps
        affine = PixelAffine.stretch(tuple(maps.shape[-2:]), tuple(size))
    return resample(maps, size, affine)


class MMPoseWholeBody(PoseEstimator):
    """mmpose 1.x top-down HRNet-W32 COCO-WholeBody, reduced to the 36 PGMM heatmaps.

    Args:
        config_path: local mmpose config, e.g. ``td-hm_hrnet-w32_8xb64-210e_coco-wholebody-
            256x192.py`` (``scripts/install_mmpose.sh`` writes a self-contained copy).
        checkpoint_path: local ``.pth`` checkpoint for that config.
        device: where the model lives; move it later with ``.to()`` like any module.
        trust_checkpoint: the checkpoint is a pickle. By default it is read with
            ``torch.load(weights_only=True)``, which executes no code; set this only for a file
            from a trusted source whose metadata that safe loader rejects.

    The estimator is frozen on construction: it is a fixed, pretrained ``P_e``.
    """

    mean: torch.Tensor  # buffers: the preprocessor's normalisation, in [0, 1] units
    std: torch.Tensor

    def __init__(
        self,
        config_path: str | Path,
        checkpoint_path: str | Path,
        device: str | torch.device = "cpu",
        trust_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        config_path, checkpoint_path = Path(config_path), Path(checkpoint_path)
        for what, path in (("config", config_path), ("checkpoint", checkpoint_path)):
            if not path.is_file():
                raise FileNotFoundError(f"mmpose {what} not found: {path}")
        try:
            from mmpose.apis import init_model
        except ImportError as e:
            raise ImportError(f"MMPoseWholeBody needs mmpose ({e}); {INSTALL_HINT}") from e

        # Build without weights, then load them ourselves: mmengine's loader calls torch.load
        # with pickle semantics that newer torch refuses by default.
        self.model = init_model(str(config_path), None, device=str(device))
        state = _read_state_dict(checkpoint_path, trust_checkpoint)
        try:
            self.model.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise ValueError(f"{checkpoint_path} does not fit {config_path}: {e}") from e
        codec = self.model.cfg.get("codec") or {}
        if "input_size" not in codec or "heatmap_size" not in codec:
            raise ValueError(f"{config_path}: the config has no codec input_size/heatmap_size")
        # mmpose writes sizes as (w, h).
        self.input_wh = (int(codec["input_size"][0]), int(codec["input_size"][1]))
        self.heatmap_wh = (int(codec["heatmap_size"][0]), int(codec["heatmap_size"][1]))
        preprocessor = self.model.data_preprocessor
        # mmpose's preprocessor works on 0-255 images; ours are 0-1.
        self.register_buffer("mean", preprocessor.mean.detach().reshape(1, -1, 1, 1) / 255.0)
        self.register_buffer("std", preprocessor.std.detach().reshape(1, -1, 1, 1) / 255.0)
        # bgr_to_rgb=True means the network wants RGB (mmcv loads BGR); ours already is.
        self.flip_to_bgr = not getattr(preprocessor, "_channel_conversion", True)
        self.freeze()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.check_images(images)
        h, w = images.shape[-2:]
        out_hw = (h // self.heatmap_stride, w // self.heatmap_stride)
        (w_in, h_in), (hm_w, hm_h) = self.input_wh, self.heatmap_wh
        from_input, from_output = full_frame_affines((h, w), self.input_wh, (hm_h, hm_w), out_hw)
        x = resample(images.to(self.mean.dtype), (h_in, w_in), from_input)
        if self.flip_to_bgr:
            x = x.flip(1)
        heatmaps = self.model((x - self.mean) / self.std, None, mode="tensor")
        if tuple(heatmaps.shape[-2:]) != (hm_h, hm_w):
            raise RuntimeError(
                f"mmpose returned {tuple(heatmaps.shape)} heatmaps, its codec says {hm_h}x{hm_w}"
            )
        return wholebody_heatmaps_to_pgmm36(heatmaps, out_hw, from_output)


def _read_state_dict(path: Path, trust: bool) -> dict[str, Any]:
    """The model weights of an mmpose checkpoint (``{'state_dict': ..., 'meta': ...}``)."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=not trust)
    except Exception as e:  # the unpickler raises several types; all mean "cannot read"
        hint = "" if trust else " (pass trust_checkpoint=True only for a file you trust)"
        raise ValueError(f"cannot read mmpose checkpoint {path}: {e}{hint}") from e
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: not an mmpose checkpoint (no state_dict)")
    return state
