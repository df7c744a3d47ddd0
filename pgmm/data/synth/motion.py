"""Kinematic signer: a gloss sequence + a frame count -> whole-body poses at 25 fps.

The body lives in *body units*: origin between the shoulders, x to the image right, y down,
z towards the camera. Every hand computation is done for a right (dominant) hand; the left hand
is the same computation mirrored in x, which gives symmetric two-handed signs for free.

A sentence is a timeline: rest -> transition -> sign 1 -> co-articulated transition -> sign 2
... -> rest. Signs are stretched to the sentence's real ``num_frames``; transitions blend the end
state of one sign into the start state of the next with a minimum-jerk profile. Idle motion
(breathing, blinks, slow head sway) runs underneath, so no two frames are identical.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pgmm.data.synth.hand import HANDSHAPES, frame_from_directions, hand_points, rotate
from pgmm.data.synth.identity import Identity
from pgmm.data.synth.lexicon import DIRECTIONS, LOCATIONS, ORIENTATIONS, Sign
from pgmm.pose import layout as L

FPS = 25.0
HAND_LENGTH = 0.2  # wrist to middle fingertip, body units
UPPER_ARM, FOREARM = 0.30, 0.27
_PALM_ANCHOR = np.array([0.0, 0.3, 0.0])  # hand-local point placed at the sign location
_FACE_LOCATIONS = {  # head-template units (head half-width = 1), z in body units
    "forehead": (0.0, -0.85, 0.17),
    "eyes": (0.0, -0.2, 0.2),
    "nose": (0.0, 0.25, 0.22),
    "mouth": (0.0, 0.78, 0.2),
    "chin": (0.0, 1.25, 0.18),
    "cheek": (-0.62, 0.4, 0.15),
    "ear": (-1.05, 0.0, 0.1),
    "temple": (-0.82, -0.5, 0.14),
    "neck": (0.0, 1.9, 0.12),
}
_REST_SHAPE = 0.5 * HANDSHAPES["B"] + 0.5 * HANDSHAPES["C"]


def _face_template() -> np.ndarray:
    """68 iBUG face points in head units (x right, y down, head half-width 1)."""
    t = np.linspace(0, np.pi, 17)
    jaw = np.stack([-0.93 * np.cos(t), -0.1 + 1.4 * np.sin(t) ** 0.85], -1)
    u = np.linspace(0, 1, 5)
    brow_r = np.stack([-0.78 + 0.6 * u, -0.45 - 0.1 * np.sin(np.pi * u)], -1)
    brow_l = brow_r[::-1] * [-1, 1]
    bridge = np.stack([np.zeros(4), np.linspace(-0.25, 0.3, 4)], -1)
    nostrils = np.array([[-0.2, 0.45], [-0.1, 0.49], [0.0, 0.51], [0.1, 0.49], [0.2, 0.45]])
    eye_r = np.array(
        [[-0.6, -0.2], [-0.47, -0.29], [-0.33, -0.29], [-0.2, -0.2], [-0.33, -0.12], [-0.47, -0.12]]
    )
    eye_l = eye_r[[3, 2, 1, 0, 5, 4]] * [-1, 1]
    outer = np.array(
        [
            [-0.36, 0.78],
            [-0.22, 0.71],
            [-0.08, 0.68],
            [0.0, 0.7],
            [0.08, 0.68],
            [0.22, 0.71],
            [0.36, 0.78],
            [0.22, 0.86],
            [0.1, 0.9],
            [0.0, 0.91],
            [-0.1, 0.9],
            [-0.22, 0.86],
        ]
    )
    inner = np.array(
        [
            [-0.29, 0.78],
            [-0.1, 0.765],
            [0.0, 0.77],
            [0.1, 0.765],
            [0.29, 0.78],
            [0.1, 0.79],
            [0.0, 0.795],
            [-0.1, 0.79],
        ]
    )
    return np.concatenate([jaw, brow_r, brow_l, bridge, nostrils, eye_r, eye_l, outer, inner])


FACE_TEMPLATE = _face_template()
_LOWER_LIP = np.array([55, 56, 57, 58, 59, 65, 66, 67])
_UPPER_LID = np.array([37, 38, 43, 44])
_LOWER_LID = np.array([40, 41, 46, 47])


@dataclass
class HandTrack:
    """Per-frame state of one hand in right-hand space."""

    anchor: np.ndarray  # (T, 3)
    finger: np.ndarray  # (T, 3)
    palm: np.ndarray  # (T, 3)
    shape: np.ndarray  # (T, 16)

    @classmethod
    def constant(cls, n: int, anchor, finger, palm, shape) -> HandTrack:
        rep = lambda v: np.repeat(np.asarray(v, float)[None], n, 0)  # noqa: E731
        return cls(rep(anchor), rep(finger), rep(palm), rep(shape))


@dataclass
class SentencePose:
    """Output of the kinematic signer: canvas-normalised whole-body keypoints."""

    keypoints: np.ndarray  # (T, 133, 2) normalised image coordinates
    depth: np.ndarray  # (T, 133) towards the camera (for occlusion order)
    confidence: np.ndarray  # (T, 133): 1 inside the frame, 0 outside / non-existent

    def __len__(self) -> int:
        return self.keypoints.shape[0]


# --------------------------------------------------------------------------- sign evaluation
def _ease(s: np.ndarray) -> np.ndarray:
    """Minimum-jerk profile: zero velocity and acceleration at both ends."""
    return 10 * s**3 - 15 * s**4 + 6 * s**5


def _perpendicular(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    helper = np.array([0.0, 0.0, 1.0]) if abs(d[2]) < 0.9 else np.array([0.0, -1.0, 0.0])
    e1 = np.cross(d, helper)
    e1 /= np.linalg.norm(e1)
    return e1, np.cross(d, e1)


def _rotate_about(v: np.ndarray, axis: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """:func:`~pgmm.data.synth.hand.rotate` about an axis of any length (a blended direction)."""
    return rotate(v, axis / (np.linalg.norm(axis, axis=-1, keepdims=True) + 1e-9), angle)


def _location(name: str, head: np.ndarray, head_w: float) -> np.ndarray:
    if name in _FACE_LOCATIONS:
        x, y, z = _FACE_LOCATIONS[name]
        return np.array([head[0] + head_w * x, head[1] + head_w * y, z])
    return np.array(LOCATIONS[name], dtype=float)


def sign_track(sign: Sign, hand: str, s: np.ndarray, head: np.ndarray, head_w: float) -> HandTrack:
    """State of ``hand`` ("dom" or "nondom") while ``sign`` is performed, at progress ``s``."""
    n = len(s)
    if hand == "nondom" and sign.hand_type == "one":
        return _idle_nondom(n)
    two = sign.hand_type != "one"
    base = _location(sign.location, head, head_w) + (np.array([-0.1, 0, 0]) if two else 0)
    finger, palm = (np.array(v, float) for v in ORIENTATIONS[sign.orientation])
    if hand == "nondom" and sign.hand_type == "base":
        # The base hand holds still, palm up, under the moving dominant hand.
        return HandTrack.constant(
            n,
            base + [0.0, 0.06, 0.0],
            [1.0, 0.1, 0.2],
            [0, -1, 0.1],
            HANDSHAPES[sign.base_handshape],
        )
    if hand == "dom" and sign.hand_type == "base":
        base = base + np.array([0.1, -0.03, 0.03])
    if hand == "nondom" and sign.hand_type == "alternating":
        s = (s + 0.5) % 1.0 if sign.movement in ("circle", "repeat", "shake", "nod") else 1 - s
    d = np.array(DIRECTIONS[sign.direction], float)
    d /= np.linalg.norm(d)
    e1, e2 = _perpendicular(d)
    size, reps, es = sign.size, sign.repetitions, _ease(s)
    offset = np.zeros((n, 3))
    twist = np.zeros(n)
    nod = np.zeros(n)
    shape = np.repeat(HANDSHAPES[sign.handshape][None], n, 0)
    m = sign.movement
    if m == "hold":
        offset += 0.008 * np.sin(2 * np.pi * s)[:, None] * e1
    elif m == "straight":
        offset += (es - 0.5)[:, None] * size * d
    elif m == "arc":
        offset += (es - 0.5)[:, None] * size * d + (0.45 * size * np.sin(np.pi * es))[:, None] * e1
    elif m == "circle":
        a = 2 * np.pi * es
        offset += 0.5 * size * (np.cos(a)[:, None] * e1 + np.sin(a)[:, None] * e2)
    elif m == "repeat":
        offset += (0.5 * size * np.abs(np.sin(np.pi * reps * s)))[:, None] * d
    elif m == "twist":
        twist = 1.1 * np.sin(np.pi * reps * s)
    elif m == "nod":
        nod = 0.6 * np.sin(2 * np.pi * reps * s)
    elif m == "shake":
        offset += (0.35 * size * np.sin(2 * np.pi * reps * s))[:, None] * np.array([1.0, 0, 0])
    elif m == "zigzag":
        offset += (es - 0.5)[:, None] * size * d
        offset += (0.25 * size * np.sin(6 * np.pi * s))[:, None] * e1
    elif m == "change":
        end = HANDSHAPES[sign.end_handshape]
        shape = shape + es[:, None] * (end - shape)
        offset += (0.3 * size * (es - 0.5))[:, None] * d
    elif m == "wiggle":
        phase = np.array([0.0, 0.8, 1.6, 2.4])
        wig = 0.35 * np.sin(2 * np.pi * 3 * s[:, None] + phase) + 0.35  # (n, 4)
        shape = shape.copy()
        shape[:, 0:12:3] += wig
    finger_t = np.repeat(finger[None], n, 0)
    palm_t = np.repeat(palm[None], n, 0)
    if np.any(twist):
        palm_t = _rotate_about(palm_t, finger_t, twist)
    if np.any(nod):
        side = np.cross(finger_t, palm_t)
        finger_t = _rotate_about(finger_t, side, nod)
        palm_t = _rotate_about(palm_t, side, nod)
    return HandTrack(base + offset, finger_t, palm_t, shape)


def _idle_nondom(n: int) -> HandTrack:
    return HandTrack.constant(
        n, [-0.12, 0.42, 0.18], [1.0, 0.25, 0.1], [0.1, -0.3, -1.0], _REST_SHAPE
    )


def _rest(n: int) -> HandTrack:
    return HandTrack.constant(
        n, [-0.08, 0.62, 0.16], [1.0, 0.45, 0.0], [0.0, -0.2, -1.0], _REST_SHAPE
    )


def _blend(a: HandTrack, b: HandTrack, u: np.ndarray) -> HandTrack:
    """Co-articulation: blend a's last state into b's first state (arrays of length 1)."""
    w = _ease(u)[:, None]
    lift = (0.05 * np.sin(np.pi * u))[:, None] * np.array([0.0, 0.0, 1.0])
    mix = lambda x, y: x[-1] + w * (y[0] - x[-1])  # noqa: E731
    return HandTrack(
        mix(a.anchor, b.anchor) + lift,
        mix(a.finger, b.finger),
        mix(a.palm, b.palm),
        mix(a.shape, b.shape),
    )


# --------------------------------------------------------------------------- timeline
def timeline(weights: list[float], num_frames: int) -> list[tuple[str, int, float, float]]:
    """Split ``num_frames`` into segments ``(kind, sign_index, start, end)`` (float frames).

    kinds: rest, in (rest -> first sign), sign, trans (sign j -> j + 1), out, rest. Transitions
    take 35 % of a sign unit, entry/exit half a unit, rests ~12 % of the sentence each side.
    """
    n = len(weights)
    rest = float(np.clip(0.12 * num_frames, 1.0, 12.0))
    units = sum(weights) + 0.35 * max(n - 1, 0) + 1.0
    unit = max(num_frames - 2 * rest, 1e-3) / units
    segments: list[tuple[str, int, float, float]] = [("rest", -1, 0.0, rest)]
    t = rest
    for j, w in enumerate(weights):
        kind, length = ("in", 0.5) if j == 0 else ("trans", 0.35)
        segments.append((kind, j, t, t + length * unit))
        t += length * unit
        segments.append(("sign", j, t, t + w * unit))
        t += w * unit
    segments.append(("out", n - 1, t, t + 0.5 * unit))
    segments.append(("rest", -1, t + 0.5 * unit, float(num_frames)))
    return segments


def hand_tracks(signs: list[Sign], num_frames: int, head: np.ndarray, head_w: float) -> dict:
    """Per-frame :class:`HandTrack` of the dominant and non-dominant hand for a sentence."""
    frames = np.arange(num_frames) + 0.5
    segs = timeline([sg.duration for sg in signs], num_frames)
    out = {}
    for hand in ("dom", "nondom"):
        parts: list[HandTrack] = []
        for kind, j, a, b in segs:
            sel = frames[(frames >= a) & (frames < b)]
            if len(sel) == 0:
                continue
            u = (sel - a) / max(b - a, 1e-6)
            if kind == "rest":
                parts.append(_rest(len(sel)))
            elif kind == "sign":
                parts.append(sign_track(signs[j], hand, u, head, head_w))
            else:
                zero, one = np.zeros(1), np.ones(1)
                src = (
                    _rest(1)
                    if kind == "in"
                    else sign_track(signs[j - (kind == "trans")], hand, one, head, head_w)
                )
                dst = _rest(1) if kind == "out" else sign_track(signs[j], hand, zero, head, head_w)
                parts.append(_blend(src, dst, u))
        out[hand] = HandTrack(
            *(
                np.concatenate([getattr(p, f) for p in parts])
                for f in ("anchor", "finger", "palm", "shape")
            )
        )
    return out


# --------------------------------------------------------------------------- whole body
def _arm_ik(shoulder: np.ndarray, wrist: np.ndarray, pole: np.ndarray, l1: float, l2: float):
    """Two-bone IK per frame; returns (elbow, reachable wrist)."""
    v = wrist - shoulder
    d = np.linalg.norm(v, axis=-1, keepdims=True)
    u = v / np.maximum(d, 1e-9)
    d = np.clip(d, abs(l1 - l2) + 1e-3, l1 + l2 - 1e-3)
    wrist = shoulder + u * d
    a = (l1**2 - l2**2 + d**2) / (2 * d)
    h = np.sqrt(np.maximum(l1**2 - a**2, 0.0))
    p = pole - np.sum(pole * u, -1, keepdims=True) * u
    p /= np.linalg.norm(p, axis=-1, keepdims=True) + 1e-9
    return shoulder + a * u + h * p, wrist


def _idle(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    t = np.arange(n) / FPS

    def sway(amp: float) -> np.ndarray:
        f = rng.uniform(0.08, 0.45, 2)
        ph = rng.uniform(0, 2 * np.pi, 2)
        return amp * (
            np.sin(2 * np.pi * f[0] * t + ph[0]) + 0.5 * np.sin(2 * np.pi * f[1] * t + ph[1])
        )

    eye = np.ones(n)
    blink = np.array([0.55, 0.1, 0.15, 0.6])  # eye openness over a blink's four frames
    k = int(rng.uniform(0.3, 3.0) * FPS)
    while k < n:
        eye[k : k + 4] = blink[: n - k]
        k += int(rng.uniform(2.0, 5.0) * FPS)
    breath = 0.006 * np.sin(2 * np.pi * t / rng.uniform(3.0, 4.5) + rng.uniform(0, 2 * np.pi))
    return {
        "yaw": sway(0.05),
        "pitch": sway(0.035),
        "roll": sway(0.035),
        "hx": sway(0.004),
        "hy": sway(0.003),
        "eye": eye,
        "breath": breath,
    }


def _nonmanual(signs: list[Sign], num_frames: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mouth openness, mouth width and brow raise per frame, following the signs' mouthings."""
    frames = np.arange(num_frames) + 0.5
    mouth = np.full(num_frames, 0.04)
    width = np.zeros(num_frames)
    brow = np.zeros(num_frames)
    for kind, j, a, b in timeline([sg.duration for sg in signs], num_frames):
        if kind != "sign":
            continue
        sel = (frames >= a) & (frames < b)
        s = (frames[sel] - a) / max(b - a, 1e-6)
        k = len(signs[j].mouthing)
        syll = np.minimum((s * k).astype(int), k - 1)
        amp = np.asarray(signs[j].mouthing)[syll]
        mouth[sel] = 0.04 + amp * np.sin(np.pi * ((s * k) % 1.0)) ** 2
        width[sel] = (amp - 0.55) * 0.8
        brow[sel] = signs[j].brow
    kernel = np.ones(5) / 5
    smooth = lambda x: np.convolve(np.pad(x, 2, mode="edge"), kernel, "valid")  # noqa: E731
    return smooth(mouth), smooth(width), smooth(brow)


def sentence_pose(
    signs: list[Sign], num_frames: int, identity: Identity, rng: np.random.Generator
) -> SentencePose:
    """Whole-body pose of ``identity`` signing ``signs`` over ``num_frames`` frames."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    n = num_frames
    idle = _idle(rng, n)
    sw = identity.shoulder_width
    head_w = 0.1 * identity.head_scale
    head = np.array([0.0, -0.04 - identity.neck_length - 0.13 * identity.head_scale])
    tracks = hand_tracks(signs, n, head, head_w) if signs else {"dom": _rest(n), "nondom": _rest(n)}

    pts = np.zeros((n, L.NUM_WHOLEBODY, 3))  # body units, xyz
    conf = np.ones((n, L.NUM_WHOLEBODY))
    breath = idle["breath"][:, None]
    shoulders = {
        side: np.stack([np.full(n, sx), -breath[:, 0], np.zeros(n)], -1)
        for side, sx in (("right", -sw), ("left", sw))
    }
    pts[:, L.WB["right_shoulder"]] = shoulders["right"]
    pts[:, L.WB["left_shoulder"]] = shoulders["left"]
    for side, sx in (("right", -0.72 * sw), ("left", 0.72 * sw)):
        pts[:, L.WB[f"{side}_hip"]] = [sx, 0.75, 0.0]
        pts[:, L.WB[f"{side}_knee"]] = [sx, 1.2, 0.05]
        pts[:, L.WB[f"{side}_ankle"]] = [sx, 1.65, 0.0]
    conf[:, L.FEET] = 0.0

    # Head and face: template -> mouth/eyes/brows -> yaw/pitch -> roll -> position.
    mouth, mwidth, brow = _nonmanual(signs, n)
    face = np.repeat(FACE_TEMPLATE[None], n, 0).copy()
    face[:, _LOWER_LIP, 1] += 0.26 * mouth[:, None]
    face[:, 5:12, 1] += 0.12 * mouth[:, None] * np.sin(np.linspace(0.3, np.pi - 0.3, 7))
    face[:, 48:68, 0] *= 1 + 0.15 * mwidth[:, None]
    lids = np.concatenate([_UPPER_LID, _LOWER_LID])
    face[:, lids, 1] = -0.2 + (face[:, lids, 1] + 0.2) * idle["eye"][:, None]
    face[:, 17:27, 1] -= 0.09 * brow[:, None]
    depth = np.zeros(68)
    depth[27:36], depth[36:48], depth[48:68] = 0.5, 0.25, 0.3
    depth[17:27] = 0.25
    face[..., 0] = (
        face[..., 0] * np.cos(idle["yaw"])[:, None] + np.sin(idle["yaw"])[:, None] * depth
    )
    face[..., 1] += np.sin(idle["pitch"])[:, None] * (depth + 0.2)
    c, s = np.cos(idle["roll"])[:, None], np.sin(idle["roll"])[:, None]
    fx, fy = face[..., 0], face[..., 1]
    face = np.stack([c * fx - s * fy, s * fx + c * fy], -1)
    head_pos = head + np.stack([idle["hx"], idle["hy"] - breath[:, 0]], -1)
    pts[:, L.FACE, :2] = head_pos[:, None] + head_w * face
    pts[:, L.FACE, 2] = 0.08 + head_w * depth
    fpts = pts[:, L.FACE]
    pts[:, L.WB["nose"]] = fpts[:, 30]
    pts[:, L.WB["right_eye"]] = fpts[:, 36:42].mean(1)
    pts[:, L.WB["left_eye"]] = fpts[:, 42:48].mean(1)
    # Ears sit just outside the upper jaw line, slightly behind the face plane.
    for side, k in (("right", 0), ("left", 16)):
        pts[:, L.WB[f"{side}_ear"]] = fpts[:, k] + 0.07 * (fpts[:, k] - fpts[:, 16 - k])
        pts[:, L.WB[f"{side}_ear"], 2] -= 0.1

    # Hands and arms. The left (non-dominant) hand is computed in mirrored space.
    l1, l2 = UPPER_ARM * identity.arm_scale, FOREARM * identity.arm_scale
    mirror = np.array([-1.0, 1.0, 1.0])
    local = hand_points(np.concatenate([tracks["dom"].shape, tracks["nondom"].shape]))
    for i, (side, hand) in enumerate((("right", "dom"), ("left", "nondom"))):
        tr = tracks[hand]
        rot = frame_from_directions(tr.finger, tr.palm)  # (n, 3, 3)
        hl = HAND_LENGTH * identity.arm_scale
        loc = local[i * n : (i + 1) * n] * hl
        wrist = tr.anchor - np.einsum("nij,j->ni", rot, _PALM_ANCHOR * hl)
        shoulder = shoulders[side] * (mirror if side == "left" else 1)
        pole = np.array([-0.45, 1.0, 0.25])
        elbow, wrist = _arm_ik(shoulder, wrist, np.broadcast_to(pole, wrist.shape), l1, l2)
        hand_pts = wrist[:, None] + np.einsum("nij,nkj->nki", rot, loc)
        if side == "left":
            elbow, wrist, hand_pts = elbow * mirror, wrist * mirror, hand_pts * mirror
        pts[:, L.WB[f"{side}_elbow"]] = elbow
        pts[:, L.WB[f"{side}_wrist"]] = wrist
        pts[:, L.LEFT_HAND if side == "left" else L.RIGHT_HAND] = hand_pts

    # Body units -> normalised canvas through the identity's camera.
    scale = 0.95 * identity.cam_scale
    centre = np.array([0.5 + identity.cam_offset[0], 0.5 + identity.cam_offset[1]])
    xy = centre + scale * pts[..., :2]
    inside = np.all((xy >= 0.0) & (xy <= 1.0), axis=-1)
    return SentencePose(
        xy.astype(np.float32),
        (scale * pts[..., 2]).astype(np.float32),
        (conf * inside).astype(np.float32),
    )
