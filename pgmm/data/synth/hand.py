"""Articulated 3-D hand: a handshape library and forward kinematics to the 21 COCO hand points.

Why 3-D: sign handshapes differ mostly by finger flexion *towards the camera or away from it*,
and by which finger hides which. A 3-D model projected orthographically gives both the
foreshortening and a per-point depth that the renderer uses for occlusion order.

Hand-local frame (right hand; the left hand is mirrored by the caller):
+Y runs from the wrist to the middle knuckle (finger direction), +Z is the palm normal (the
side the fingers curl towards), the thumb sits on the -X side. Units: hand length (wrist to
middle fingertip) = 1.
"""

from __future__ import annotations

import numpy as np

# Knuckle (MCP) positions of index, middle, ring, pinky and the thumb's CMC joint.
_MCP = np.array([[-0.12, 0.44, 0.0], [-0.035, 0.45, 0.0], [0.045, 0.43, 0.0], [0.12, 0.39, 0.0]])
_THUMB_CMC = np.array([-0.11, 0.10, 0.03])
# Segment lengths (proximal, middle, distal) per finger; thumb: CMC-MCP, MCP-IP, IP-tip.
_SEGMENTS = np.array(
    [[0.23, 0.14, 0.11], [0.25, 0.17, 0.13], [0.23, 0.15, 0.12], [0.18, 0.11, 0.1]]
)
_THUMB_SEGMENTS = np.array([0.2, 0.16, 0.13])
# Rest spread angle of each finger (radians, positive = towards the pinky side).
_SPREAD0 = np.array([-0.10, 0.0, 0.08, 0.17])

#: Handshape parameter vector layout (length 16):
#: [0:12] flexion (MCP, PIP, DIP) of index, middle, ring, pinky;
#: [12] finger spread scale; [13] thumb abduction; [14] thumb opposition; [15] thumb flexion.
NUM_PARAMS = 16


def _shape(fingers: list[tuple[float, float, float]], spread: float, thumb: tuple) -> np.ndarray:
    return np.array([v for f in fingers for v in f] + [spread, *thumb], dtype=np.float64)


_EXT = (0.0, 0.05, 0.03)
_FIST = (1.45, 1.55, 1.0)
_CURVE = (0.45, 0.6, 0.35)
_HOOK = (0.15, 1.45, 1.0)
_BENT = (1.35, 0.05, 0.0)
_PINCH = (0.85, 0.95, 0.55)
_THUMB_OUT = (1.15, 0.05, 0.05)
_THUMB_SIDE = (0.2, 0.25, 0.1)
_THUMB_ACROSS = (0.1, 0.45, 0.9)
_THUMB_C = (0.75, 0.55, 0.3)
_THUMB_PINCH = (-0.3, 0.75, 0.2)

#: The handshape library: names follow the ASL/DGS manual alphabet shapes they resemble.
HANDSHAPES: dict[str, np.ndarray] = {
    "B": _shape([_EXT] * 4, 0.0, _THUMB_ACROSS),
    "5": _shape([_EXT] * 4, 1.6, _THUMB_OUT),
    "A": _shape([_FIST] * 4, 0.0, _THUMB_SIDE),
    "S": _shape([_FIST] * 4, 0.0, _THUMB_ACROSS),
    "1": _shape([_EXT, _FIST, _FIST, _FIST], 0.0, _THUMB_ACROSS),
    "V": _shape([_EXT, _EXT, _FIST, _FIST], 2.2, _THUMB_ACROSS),
    "U": _shape([_EXT, _EXT, _FIST, _FIST], -0.6, _THUMB_ACROSS),
    "W": _shape([_EXT, _EXT, _EXT, _FIST], 1.8, _THUMB_ACROSS),
    "Y": _shape([_FIST, _FIST, _FIST, _EXT], 1.0, _THUMB_OUT),
    "L": _shape([_EXT, _FIST, _FIST, _FIST], 0.0, _THUMB_OUT),
    "I": _shape([_FIST, _FIST, _FIST, _EXT], 0.0, _THUMB_ACROSS),
    "C": _shape([_CURVE] * 4, 0.2, _THUMB_C),
    "O": _shape([_PINCH] * 4, 0.0, _THUMB_PINCH),
    "F": _shape([_PINCH, _EXT, _EXT, _EXT], 1.4, _THUMB_PINCH),
    "X": _shape([_HOOK, _FIST, _FIST, _FIST], 0.0, _THUMB_ACROSS),
    "claw": _shape([_HOOK] * 4, 1.5, _THUMB_C),
    "bentB": _shape([_BENT] * 4, 0.0, _THUMB_SIDE),
    "3": _shape([_EXT, _EXT, _FIST, _FIST], 1.8, _THUMB_OUT),
    "flatO": _shape([(1.0, 0.3, 0.1)] * 4, 0.0, _THUMB_PINCH),
    "horns": _shape([_EXT, _FIST, _FIST, _EXT], 1.2, _THUMB_ACROSS),
}
HANDSHAPE_NAMES = sorted(HANDSHAPES)


def rotate(v: np.ndarray, axis: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Rodrigues rotation of vectors ``v`` (..., 3) about unit ``axis`` (..., 3) by ``angle``."""
    c, s = np.cos(angle)[..., None], np.sin(angle)[..., None]
    return v * c + np.cross(axis, v) * s + axis * np.sum(axis * v, -1, keepdims=True) * (1 - c)


def hand_points(params: np.ndarray) -> np.ndarray:
    """Forward kinematics: handshape params ``(..., 16)`` -> 21 hand points ``(..., 21, 3)``.

    Points follow the COCO-WholeBody hand order (wrist, thumb CMC..tip, index MCP..tip, ...),
    in the right-hand local frame described in the module docstring.
    """
    params = np.asarray(params, dtype=np.float64)
    lead = params.shape[:-1]
    out = np.zeros((*lead, 21, 3))
    flex = params[..., :12].reshape(*lead, 4, 3)
    spread = params[..., 12:13] * 0.09 + _SPREAD0  # (..., 4)
    # Fingers: each starts at its knuckle pointing along +Y rotated by its spread in the palm
    # plane, and curls about the axis perpendicular to it in that plane (towards +Z).
    base = np.stack([np.sin(spread), np.cos(spread), np.zeros_like(spread)], -1)  # (..., 4, 3)
    axis = np.stack([np.cos(spread), -np.sin(spread), np.zeros_like(spread)], -1)
    point = np.broadcast_to(_MCP, base.shape).copy()
    out[..., [5, 9, 13, 17], :] = point
    angle = np.zeros(spread.shape)
    for k in range(3):
        angle = angle + flex[..., k]
        direction = rotate(base, axis, angle)
        point = point + direction * _SEGMENTS[:, k, None]
        out[..., [6 + k, 10 + k, 14 + k, 18 + k], :] = point
    # Thumb: abducted away from the index in the palm plane, opposed out of it (towards the
    # palm side), then flexed towards the palm centre.
    abd, opp, tflex = params[..., 13], params[..., 14], params[..., 15]
    v0 = np.stack([-np.sin(0.35 + abd), np.cos(0.35 + abd), np.zeros_like(abd)], -1)
    z = np.broadcast_to(np.array([0.0, 0.0, 1.0]), v0.shape)
    v = v0 * np.cos(opp)[..., None] + z * np.sin(opp)[..., None]
    bend_axis = np.cross(v, np.broadcast_to(np.array([1.0, -0.2, 0.6]), v.shape))
    bend_axis /= np.linalg.norm(bend_axis, axis=-1, keepdims=True) + 1e-9
    point = np.broadcast_to(_THUMB_CMC, v.shape).copy()
    out[..., 1, :] = point
    for k in range(3):
        direction = rotate(v, bend_axis, tflex * (0.5 + 0.5 * k))
        point = point + direction * _THUMB_SEGMENTS[k]
        out[..., 2 + k, :] = point
    return out


def frame_from_directions(finger_dir: np.ndarray, palm_dir: np.ndarray) -> np.ndarray:
    """Rotation matrices ``(..., 3, 3)`` whose columns are the hand's X, Y (finger), Z (palm).

    The palm direction is re-orthogonalised against the finger direction (Gram-Schmidt), so
    linearly blended directions during co-articulation still give valid rotations.
    """
    y = finger_dir / (np.linalg.norm(finger_dir, axis=-1, keepdims=True) + 1e-9)
    z = palm_dir - np.sum(palm_dir * y, -1, keepdims=True) * y
    z_norm = np.linalg.norm(z, axis=-1, keepdims=True)
    # Degenerate blend (palm parallel to fingers): fall back to any perpendicular.
    fallback = np.cross(y, np.broadcast_to(np.array([1.0, 0.0, 0.0]), y.shape))
    z = np.where(z_norm > 1e-4, z / np.maximum(z_norm, 1e-9), fallback)
    z /= np.linalg.norm(z, axis=-1, keepdims=True) + 1e-9
    x = np.cross(y, z)
    return np.stack([x, y, z], -1)
