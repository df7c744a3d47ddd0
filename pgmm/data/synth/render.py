"""Draw a SynthSigner frame from a whole-body pose.

The renderer is a pure function of (133 keypoints, per-point depth, identity): everything it
draws -- head outline, face features, arms, palms, 15 finger segments per hand -- is placed by
keypoints, so the pose labels are exact by construction. Shapes are drawn with Pillow on a
canvas ``supersample`` times larger and box-filtered down, which anti-aliases every edge.

Depth order: background, long hair, neck, torso, head, face, then the two arm+hand groups
ordered by hand depth; inside a hand, the palm and the five fingers are ordered by depth, so
fingers occlude each other and the face correctly.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

from pgmm.data.synth.identity import Identity, rgb
from pgmm.pose import layout as L

_F = L.FACE_OFFSET
_FINGERS = ([1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12], [13, 14, 15, 16], [17, 18, 19, 20])
_PALM = [0, 1, 5, 9, 13, 17]


def _shade(color: tuple[int, int, int], k: float) -> tuple[int, int, int]:
    return rgb(min(255, max(0, int(c * k))) for c in color)


@lru_cache(maxsize=64)
def _background(identity: Identity, px: int) -> Image.Image:
    y, x = np.mgrid[0:px, 0:px] / px
    a, b = np.array(identity.background, float), np.array(identity.background2, float)
    style = identity.background_style
    if style == "gradient":
        t = y[..., None]
    elif style == "vignette":
        t = np.clip(np.hypot(x - 0.5, y - 0.45)[..., None] * 1.6, 0, 1)
    elif style == "tiles":
        t = (((x * 6).astype(int) + (y * 6).astype(int)) % 2)[..., None] * 0.35
    else:
        t = np.zeros((px, px, 1))
    rng = np.random.default_rng([identity.id, px])
    img = a + t * (b - a) + rng.normal(0, 2.0, (px, px, 1))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


@lru_cache(maxsize=64)
def _cloth(identity: Identity, px: int) -> Image.Image:
    """Clothing texture in canvas coordinates (the torso mask cuts it out each frame)."""
    y, x = np.mgrid[0:px, 0:px] / px
    p = identity.pattern_scale
    pattern = identity.pattern
    if pattern == "stripes":
        t = ((y / p) % 1.0) < 0.45
    elif pattern == "checks":
        t = (((x / p).astype(int) + (y / p).astype(int)) % 2) == 0
    elif pattern == "dots":
        t = np.hypot((x / p) % 1.0 - 0.5, (y / p) % 1.0 - 0.5) < 0.22
    elif pattern == "diagonal":
        t = (((x + y) / p) % 1.0) < 0.4
    elif pattern == "knit":
        t = (np.sin(x / p * 2 * np.pi) * np.sin(y / p * 4 * np.pi)) > 0.2
    else:
        t = np.zeros_like(x, dtype=bool)
    a, b = np.array(identity.cloth, float), np.array(identity.cloth2, float)
    img = np.where(t[..., None], b, a)
    return Image.fromarray(img.astype(np.uint8))


def _ellipse(draw: ImageDraw.ImageDraw, c, rx: float, ry: float | None = None, fill=None) -> None:
    """Ellipse (a circle when ``ry`` is None) of radii ``rx``, ``ry`` around centre ``c``."""
    ry = rx if ry is None else ry
    draw.ellipse([c[0] - rx, c[1] - ry, c[0] + rx, c[1] + ry], fill=fill)


def _capsule(draw: ImageDraw.ImageDraw, a, b, ra: float, rb: float, fill) -> None:
    """Tapered capsule from ``a`` (radius ``ra``) to ``b`` (radius ``rb``)."""
    ax, ay = a
    bx, by = b
    _ellipse(draw, a, ra, fill=fill)
    _ellipse(draw, b, rb, fill=fill)
    dx, dy = bx - ax, by - ay
    n = np.hypot(dx, dy)
    if n < 1e-6:
        return
    nx, ny = -dy / n, dx / n
    draw.polygon(
        [
            (ax + nx * ra, ay + ny * ra),
            (bx + nx * rb, by + ny * rb),
            (bx - nx * rb, by - ny * rb),
            (ax - nx * ra, ay - ny * ra),
        ],
        fill=fill,
    )


def _pts(p: np.ndarray | list[np.ndarray]) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in p]


def _head_frame(face: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre, right and up vectors of the head from the jaw line (handles roll)."""
    centre = (face[0] + face[16]) / 2
    right = (face[16] - face[0]) / 2
    up = np.array([right[1], -right[0]])
    return centre, right, up


def _arc(centre, right, up, k_up: float, t0: float, t1: float, n: int = 24) -> np.ndarray:
    t = np.linspace(t0, t1, n)
    return centre + np.cos(t)[:, None] * right + np.sin(t)[:, None] * up * k_up


def _draw_hair(draw: ImageDraw.ImageDraw, identity: Identity, face: np.ndarray, back: bool):
    centre, right, up = _head_frame(face)
    style, hair = identity.hair_style, identity.hair
    if back:
        if style in ("long", "bob", "curly"):
            drop = {"long": 2.6, "bob": 1.35, "curly": 1.6}[style]
            outline = np.concatenate(
                [
                    _arc(centre, right * 1.18, up, 1.38, 0, np.pi),
                    [centre - right * 1.2 - up * drop, centre + right * 1.2 - up * drop],
                ]
            )
            draw.polygon(_pts(outline), fill=_shade(hair, 0.85))
        return
    if style == "bald":
        return
    cap = np.concatenate(
        [
            _arc(centre, right * 1.1, up, 1.6, -0.15, np.pi + 0.15),
            _arc(centre + up * 0.3, right * 0.95, up, 0.55, np.pi, 0.0),
        ]
    )
    draw.polygon(_pts(cap), fill=hair)
    r = float(np.linalg.norm(right))
    if style == "bun":
        _ellipse(draw, centre + up * 1.75, 0.45 * r, fill=hair)
    elif style == "curly":
        for t in np.linspace(-0.1, np.pi + 0.1, 9):
            c = centre + np.cos(t) * right * 1.1 + np.sin(t) * up * 1.5
            _ellipse(draw, c, 0.25 * r, fill=_shade(hair, 1.1))


def _draw_face(draw: ImageDraw.ImageDraw, identity: Identity, face: np.ndarray) -> None:
    skin = identity.skin
    centre, right, up = _head_frame(face)
    r = float(np.linalg.norm(right))
    for k in (0, 16):  # ears
        c = face[k] + (face[k] - centre) * 0.08 - up * 0.05
        _ellipse(draw, c, 0.2 * r, 0.3 * r, fill=_shade(skin, 0.92))
    outline = np.concatenate([face[0:17], _arc(centre, right, up, 1.5, 0.0, np.pi)[1:-1]])
    draw.polygon(_pts(outline), fill=skin)
    dark = _shade(skin, 0.72)
    brow_w = max(1, int(round(0.09 * r)))
    draw.line(_pts(face[17:22]), fill=_shade(identity.hair, 0.9), width=brow_w, joint="curve")
    draw.line(_pts(face[22:27]), fill=_shade(identity.hair, 0.9), width=brow_w, joint="curve")
    for eye in (face[36:42], face[42:48]):
        draw.polygon(_pts(eye), fill=(245, 245, 240))
        c = eye.mean(0)
        half_h = float(max(np.linalg.norm(eye[1] - eye[5]), np.linalg.norm(eye[2] - eye[4]))) / 2
        ir = 0.085 * r
        ih = min(ir, half_h)
        if ih > 0.01 * r:
            _ellipse(draw, c, ir, ih, fill=identity.iris)
            _ellipse(draw, c, 0.4 * ir, min(0.4 * ir, ih), fill=(15, 10, 10))
        draw.line(_pts(eye[[0, 1, 2, 3]]), fill=_shade(skin, 0.45), width=max(1, int(0.04 * r)))
    draw.line(_pts(face[27:31]), fill=_shade(skin, 0.85), width=max(1, int(0.05 * r)))
    draw.line(_pts(face[31:36]), fill=dark, width=max(1, int(0.05 * r)))
    draw.polygon(_pts(face[48:60]), fill=identity.lips)
    if np.linalg.norm(face[66] - face[62]) > 0.03 * r:
        draw.polygon(_pts(face[60:68]), fill=(70, 25, 30))
    else:
        draw.line(
            _pts(face[[60, 61, 62, 63, 64]]),
            fill=_shade(identity.lips, 0.6),
            width=max(1, int(0.03 * r)),
        )


def _draw_torso(
    img: Image.Image,
    draw: ImageDraw.ImageDraw,
    identity: Identity,
    kp: np.ndarray,
    face: np.ndarray,
    unit: float,
    ss_px: int,
) -> None:
    ls, rs = kp[L.WB["left_shoulder"]], kp[L.WB["right_shoulder"]]
    lh, rh = kp[L.WB["left_hip"]], kp[L.WB["right_hip"]]
    mid = (ls + rs) / 2
    neck_w = 0.055 * unit
    jaw_l, jaw_r = face[11], face[5]
    # Neck from under the jaw to below the collar line.
    draw.polygon(
        _pts(
            [
                jaw_r + [0.15 * neck_w, 0],
                jaw_l - [0.15 * neck_w, 0],
                mid + [neck_w, 0.02 * unit],
                mid + [-neck_w, 0.02 * unit],
            ]
        ),
        fill=_shade(identity.skin, 0.88),
    )
    d = 0.035 * unit
    torso = [
        rh - [0.03 * unit, 0],
        rs + [-d, d],
        rs + [0, -0.02 * unit],
        mid + [-1.6 * neck_w, -0.015 * unit],
        mid + [1.6 * neck_w, -0.015 * unit],
        ls + [0, -0.02 * unit],
        ls + [d, d],
        lh + [0.03 * unit, 0],
    ]
    mask = Image.new("L", (ss_px, ss_px), 0)
    ImageDraw.Draw(mask).polygon(_pts(np.array(torso)), fill=255)
    img.paste(_cloth(identity, ss_px), (0, 0), mask)
    if identity.neckline == "v":
        draw.polygon(
            _pts(
                [
                    mid + [-1.3 * neck_w, -0.012 * unit],
                    mid + [1.3 * neck_w, -0.012 * unit],
                    mid + [0, 0.09 * unit],
                ]
            ),
            fill=_shade(identity.skin, 0.88),
        )
    elif identity.neckline == "round":
        c = mid + [0, -0.005 * unit]
        draw.chord(
            [c[0] - 1.35 * neck_w, c[1] - 0.05 * unit, c[0] + 1.35 * neck_w, c[1] + 0.05 * unit],
            0,
            180,
            fill=_shade(identity.skin, 0.88),
        )
    else:
        draw.line(
            _pts(
                [
                    mid + [-1.7 * neck_w, -0.01 * unit],
                    mid + [0, 0.03 * unit],
                    mid + [1.7 * neck_w, -0.01 * unit],
                ]
            ),
            fill=_shade(identity.cloth2, 0.8),
            width=max(1, int(0.02 * unit)),
        )


def _draw_arm_and_hand(
    draw: ImageDraw.ImageDraw,
    identity: Identity,
    kp: np.ndarray,
    z: np.ndarray,
    side: str,
    unit: float,
) -> None:
    sh, el, wr = (kp[L.WB[f"{side}_{j}"]] for j in ("shoulder", "elbow", "wrist"))
    sleeve, seam = _shade(identity.cloth, 0.9), _shade(identity.cloth, 0.55)
    # Each limb twice: a darker outline ``grow`` wider, then its fill.
    for grow, color in ((0.006 * unit, seam), (0.0, sleeve)):
        _capsule(draw, sh, el, 0.05 * unit + grow, 0.043 * unit + grow, color)
        _capsule(draw, el, wr, 0.043 * unit + grow, 0.03 * unit + grow, color)
    off = L.LEFT_HAND_OFFSET if side == "left" else L.RIGHT_HAND_OFFSET
    hand, hz = kp[off : off + 21], z[off : off + 21]
    r = 0.012 * unit
    outline_w = max(0.006 * unit, 0.6)
    skin = identity.skin
    # Palm side faces the camera when the palm normal points to +z: shade it lighter.
    normal_z = np.cross(hand[5] - hand[0], hand[17] - hand[0])
    palm_visible = (normal_z > 0) == (side == "left")
    palm_color = _shade(skin, 1.06) if palm_visible else skin
    items = [(float(hz[_PALM].mean()), -1)] + [
        (float(hz[f].mean()), i) for i, f in enumerate(_FINGERS)
    ]
    for _, item in sorted(items):
        if item < 0:
            poly = hand[_PALM]
            draw.polygon(_pts(poly), fill=_shade(skin, 0.7))
            shrink = poly.mean(0) + (poly - poly.mean(0)) * 0.9
            draw.polygon(_pts(shrink), fill=palm_color)
            _capsule(draw, hand[0], (hand[5] + hand[17]) / 2, 1.6 * r, 1.8 * r, palm_color)
            continue
        chain = hand[_FINGERS[item]]
        radii = np.linspace(1.15 * r, 0.85 * r, len(chain))
        for grow, color in ((outline_w, _shade(skin, 0.62)), (0.0, skin)):
            for k in range(len(chain) - 1):
                _capsule(draw, chain[k], chain[k + 1], radii[k] + grow, radii[k + 1] + grow, color)


def render_frame(
    keypoints: np.ndarray,
    depth: np.ndarray,
    identity: Identity,
    size: int = 128,
    supersample: int = 4,
) -> np.ndarray:
    """One frame ``(size, size, 3)`` uint8 from normalised ``keypoints`` (133, 2) and ``depth``."""
    px = size * supersample
    kp = keypoints.astype(np.float64) * px - 0.5  # PIL puts pixel centres on integers
    unit = px * 0.95 * identity.cam_scale  # one body unit in canvas pixels
    img = _background(identity, px).copy()
    draw = ImageDraw.Draw(img)
    face = kp[_F : _F + 68]
    _draw_hair(draw, identity, face, back=True)
    _draw_torso(img, draw, identity, kp, face, unit, px)
    _draw_face(draw, identity, face)
    _draw_hair(draw, identity, face, back=False)
    hand_depth = {
        side: float(depth[off : off + 21].mean())
        for side, off in (("left", L.LEFT_HAND_OFFSET), ("right", L.RIGHT_HAND_OFFSET))
    }
    for side in sorted(hand_depth, key=lambda s: hand_depth[s]):
        _draw_arm_and_hand(draw, identity, kp, depth * px, side, unit)
    return np.asarray(img.reduce(supersample))
