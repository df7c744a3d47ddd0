"""Stick-figure previews of pose sequences.

Used to eyeball text-to-pose output, to check keypoint extraction against a real video (overlay
mode) and as a cheap visual baseline next to PGMM's rendered frames. Sign language lives in the
hands, so hands are colour-coded per finger, and left/right are told apart by palette: a swapped
hand or a mislabelled finger is visible at a glance.

Lines are drawn with PIL at 4x resolution and box-filtered down (``Image.reduce``), which
anti-aliases them: at 128-256 px a 1-2 px aliased finger line flickers from frame to frame and
hides the sub-pixel motion the previews are meant to show.
"""

from __future__ import annotations

import colorsys
from functools import cache
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw

from pgmm.pose import layout as L

if TYPE_CHECKING:
    from pgmm.pose.sequence import PoseSequence

__all__ = ["draw_pose_sequence", "draw_skeleton"]

Colour = tuple[int, int, int]

_SUPERSAMPLE = 4
_FINGERS = ("thumb", "index", "middle", "ring", "pinky")
_BODY_COLOUR: Colour = (255, 64, 200)  # magenta: far from both hand palettes and from the face grey
_FACE_COLOUR: Colour = (200, 200, 200)
# Hue ranges per hand (degrees): signer's left warm (red -> green), right cool (cyan -> violet).
_HAND_HUES = {"left": (0.0, 25.0), "right": (175.0, 25.0)}  # (first finger hue, step)
_FACE_SCALE = 0.6  # face lines are dense; thinner lines keep eyes and mouth readable
_JOINT_RADIUS = 0.8  # in line widths


def _hsv(hue_deg: float) -> Colour:
    r, g, b = colorsys.hsv_to_rgb((hue_deg % 360.0) / 360.0, 0.9, 1.0)
    return round(r * 255), round(g * 255), round(b * 255)


def _point_style(name: str) -> tuple[str, Colour]:
    """Part (``body``/``face``/``hand``) and colour of a keypoint, from its layout name."""
    if name.startswith("face_"):
        return "face", _FACE_COLOUR
    side, _, rest = name.partition("_")
    if side in _HAND_HUES and rest in L.HAND_NAMES:
        first, step = _HAND_HUES[side]
        finger = next((i for i, f in enumerate(_FINGERS) if rest.startswith(f)), None)
        # The hand root belongs to no finger: give it the hand's middle hue.
        return "hand", _hsv(first + step * (2 if finger is None else finger))
    return "body", _BODY_COLOUR


def _limb_style(names: list[str], a: int, b: int) -> tuple[str, Colour]:
    """A limb takes the style of its distal end ``b`` (so root -> finger-base limbs get the
    finger's hue), except limbs joining two parts (wrist/elbow -> hand root), which are body."""
    part_a, _ = _point_style(names[a])
    part_b, colour_b = _point_style(names[b])
    return (part_b, colour_b) if part_a == part_b else ("body", _BODY_COLOUR)


_Part = tuple[float, list[tuple[int, int, Colour]], list[tuple[int, Colour]]]


@cache
def _styles(layout: str) -> list[_Part]:
    """Drawing plan of a layout, computed once: per part (body, then face, then hands, so the
    hands are never hidden), its width scale, coloured limbs and coloured joints."""
    names = L.LAYOUTS[layout]
    joints = [_point_style(n) for n in names]
    limbs = [(a, b, *_limb_style(names, a, b)) for a, b in L.LIMBS[layout]]
    return [
        (
            _FACE_SCALE if part == "face" else 1.0,
            [(a, b, rgb) for a, b, p, rgb in limbs if p == part],
            [(k, rgb) for k, (p, rgb) in enumerate(joints) if p == part],
        )
        for part in ("body", "face", "hand")
    ]


def _frame_size(size: int | tuple[int, int]) -> tuple[int, int]:
    """``(height, width)``; an int means a square frame."""
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if h <= 0 or w <= 0:
        raise ValueError(f"frame size must be positive, got {size}")
    return h, w


def _draw_overlay(
    points: np.ndarray, layout: str, h: int, w: int, thickness: float
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one frame at supersampled resolution and reduce it.

    Returns the premultiplied colour ``(h, w, 3)`` and the coverage ``(h, w)``, both float32 in
    [0, 255]: drawing colour on black and coverage on a separate mask gives exact
    "over" compositing on any background without relying on PIL's alpha handling.
    """
    s = _SUPERSAMPLE
    colour = Image.new("RGB", (w * s, h * s))
    mask = Image.new("L", (w * s, h * s))
    draw_c, draw_m = ImageDraw.Draw(colour), ImageDraw.Draw(mask)
    # Normalised x -> continuous pixel u = x * w; PIL puts pixel k's centre at coordinate k,
    # so the supersampled PIL coordinate is u * s - 0.5. PIL truncates coordinates to integers
    # (a bias of up to a whole supersampled pixel); rounding here halves the error and removes
    # the bias, leaving at most 1 / (2 s) output pixels.
    xy = points[:, :2] * np.array([w * s, h * s], dtype=np.float64) - 0.5
    shown = (points[:, 2] > 0) & np.isfinite(xy).all(axis=1)
    xy = np.rint(np.where(shown[:, None], xy, 0.0))

    for scale, limbs, joints in _styles(layout):
        width = thickness * s * scale
        for a, b, rgb in limbs:
            if shown[a] and shown[b]:
                line = [tuple(xy[a]), tuple(xy[b])]
                draw_c.line(line, fill=rgb, width=max(1, round(width)))
                draw_m.line(line, fill=255, width=max(1, round(width)))
        # > half the line width, so dots also round off line ends; an integer radius keeps the
        # dot's box symmetric about its (integer) centre.
        r = max(1, round(_JOINT_RADIUS * width))
        for k, rgb in joints:
            if shown[k]:
                box = [xy[k, 0] - r, xy[k, 1] - r, xy[k, 0] + r, xy[k, 1] + r]
                draw_c.ellipse(box, fill=rgb)
                draw_m.ellipse(box, fill=255)
    return (
        np.asarray(colour.reduce(s), dtype=np.float32),
        np.asarray(mask.reduce(s), dtype=np.float32),
    )


def draw_skeleton(
    points: np.ndarray,
    size: int | tuple[int, int] = 256,
    layout: str = "wholebody133",
    background: np.ndarray | tuple[int, int, int] = (0, 0, 0),
    thickness: float | None = None,
) -> np.ndarray:
    """Draw stick figures.

    Args:
        points: ``(K, 3)`` or ``(T, K, 3)``: normalised x, y and confidence in ``layout``.
            Limbs are drawn only where both ends have confidence > 0, joints only where their
            own confidence is > 0 -- a missing point's coordinates are meaningless.
        size: output ``(height, width)`` or an int for a square frame. Ignored when
            ``background`` is an image, whose size is used instead (normalised coordinates
            then land on the matching pixels of that image).
        layout: a key of :data:`pgmm.pose.layout.LIMBS`.
        background: an RGB colour, or a uint8 image ``(H, W, 3)`` (or ``(T, H, W, 3)``, one per
            frame) to overlay the skeleton on.
        thickness: line width in output pixels; default ``max(1, min(H, W) / 128)`` so the
            figure looks the same at every resolution. Face lines are drawn thinner.

    Returns:
        uint8 ``(H, W, 3)`` for ``(K, 3)`` input, ``(T, H, W, 3)`` for ``(T, K, 3)``.
    """
    if layout not in L.LIMBS:
        raise ValueError(f"unknown layout {layout!r}; known: {sorted(L.LIMBS)}")
    names = L.LAYOUTS[layout]
    pts = np.asarray(points, dtype=np.float64)
    single = pts.ndim == 2
    if single:
        pts = pts[None]
    if pts.ndim != 3 or pts.shape[1:] != (len(names), 3):
        raise ValueError(
            f"{layout} points must be (K, 3) or (T, K, 3) with K={len(names)}, got {pts.shape}"
        )

    if isinstance(background, np.ndarray):
        bad_shape = background.ndim not in (3, 4) or background.shape[-1] != 3
        if background.dtype != np.uint8 or bad_shape:
            raise ValueError(f"background image must be uint8 (H, W, 3), got {background.shape}")
        if background.ndim == 4 and (single or background.shape[0] != len(pts)):
            raise ValueError(
                f"per-frame background {background.shape} does not match {len(pts)} frames"
            )
        h, w = background.shape[-3:-1]
        bg = background.astype(np.float32)
    else:
        h, w = _frame_size(size)
        bg = np.broadcast_to(np.asarray(background, dtype=np.float32), (h, w, 3))
    if thickness is None:
        thickness = max(1.0, min(h, w) / 128)
    if thickness <= 0:
        raise ValueError(f"thickness must be positive, got {thickness}")

    frames = np.empty((len(pts), h, w, 3), dtype=np.uint8)
    for t, frame_points in enumerate(pts):  # PIL draws one image at a time
        colour, coverage = _draw_overlay(frame_points, layout, h, w, thickness)
        frame_bg = bg[t] if bg.ndim == 4 else bg
        out = frame_bg * (1.0 - coverage[..., None] / 255.0) + colour
        frames[t] = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return frames[0] if single else frames


def draw_pose_sequence(
    seq: PoseSequence,
    size: int | tuple[int, int] | None = None,
    background: np.ndarray | tuple[int, int, int] = (0, 0, 0),
    thickness: float | None = None,
) -> np.ndarray:
    """Draw every frame of ``seq`` -> uint8 ``(T, H, W, 3)``.

    ``size=None`` keeps the sequence's own aspect ratio (``seq.width`` x ``seq.height``) with the
    longer side 256 px: normalised coordinates drawn into a frame of another aspect ratio would
    stretch the signer.
    """
    if size is None:
        scale = 256 / max(seq.width, seq.height)
        size = (max(1, round(seq.height * scale)), max(1, round(seq.width * scale)))
    return draw_skeleton(seq.data, size, seq.layout, background, thickness)
