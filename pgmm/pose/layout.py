"""Whole-body keypoint layouts used everywhere in the project.

Two layouts matter:

* ``WHOLEBODY133`` -- the COCO-WholeBody order (17 body, 6 feet, 68 face, 21 left hand,
  21 right hand). It is the *full skeleton*: SynthSigner emits it, the stick-figure renderer
  draws it, and real pose estimators (mmpose HRNet-W32 WholeBody, DWPose) speak it natively,
  so one layout covers synthetic labels and real labels without re-mapping.
* ``PGMM36`` -- the 36 heatmaps that feed PGMM's pose branch. The paper selects 36 of the
  133 COCO-WholeBody heatmaps but does not list them. We choose hands first, because PGMM's
  claim is fine-grained hand detail: 14 points per hand (wrist, 3 thumb, 3 index, 3 middle,
  2 ring, 2 pinky), plus the 8 points that carry arm placement and the mouth/face
  non-manuals (nose, shoulders, elbows, chin, inner upper lip, inner lower lip). 28 of 36
  channels are hand channels.

"Left"/"right" always mean the *signer's* left/right (COCO convention): for a signer facing the
camera the left shoulder appears on the image's right side.

Mappings to other layouts are index arrays into the source layout with ``-1`` for "no such
point" (the converted point then gets confidence 0).
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np

# --------------------------------------------------------------------------- COCO-WholeBody-133
# COCO order: the nose, then left/right pairs from the eyes down to the ankles.
_SIDES = ("left", "right")
_BODY_PAIRS = ("eye", "ear", "shoulder", "elbow", "wrist", "hip", "knee", "ankle")
BODY_NAMES = ["nose"] + [f"{side}_{part}" for part in _BODY_PAIRS for side in _SIDES]
FEET_NAMES = [f"{side}_{part}" for side in _SIDES for part in ("big_toe", "small_toe", "heel")]
# The hand's own wrist point is "hand_root" (mmpose's name), not "wrist": prefixed with
# "left_"/"right_" it would otherwise collide with the body's "left_wrist"/"right_wrist".
HAND_NAMES = ["hand_root", "thumb_cmc", "thumb_mcp", "thumb_ip", "thumb_tip"] + [
    f"{finger}_{joint}"
    for finger in ("index", "middle", "ring", "pinky")
    for joint in ("mcp", "pip", "dip", "tip")
]
# 68-point face (iBUG / dlib order): jaw 0-16, right brow 17-21, left brow 22-26,
# nose 27-35, right eye 36-41, left eye 42-47, outer lip 48-59, inner lip 60-67.
FACE_NAMES = [f"face_{i}" for i in range(68)]

WHOLEBODY133 = (
    BODY_NAMES + FEET_NAMES + FACE_NAMES + [f"{side}_{n}" for side in _SIDES for n in HAND_NAMES]
)
NUM_WHOLEBODY = len(WHOLEBODY133)  # 133

BODY = slice(0, 17)
FEET = slice(17, 23)
FACE = slice(23, 91)
LEFT_HAND = slice(91, 112)
RIGHT_HAND = slice(112, 133)
FACE_OFFSET, LEFT_HAND_OFFSET, RIGHT_HAND_OFFSET = 23, 91, 112

WB = {name: i for i, name in enumerate(WHOLEBODY133)}

# Limbs of the full skeleton (pairs of WHOLEBODY133 indices) for drawing.
_BODY_LIMBS = (
    [(5, 6), (5, 7), (7, 9), (6, 8), (8, 10)]  # shoulders, arms
    + [(5, 11), (6, 12), (11, 12), (11, 13), (13, 15), (12, 14), (14, 16)]  # torso, legs
    + [(0, 1), (0, 2), (1, 3), (2, 4)]  # nose, eyes, ears
)
_HAND_CHAINS = [(0, *range(base, base + 4)) for base in (1, 5, 9, 13, 17)]  # root to each tip
_HAND_LIMBS = [(a, b) for chain in _HAND_CHAINS for a, b in pairwise(chain)]
# Open chains (jaw, brows, nose bridge, nostrils), then closed loops (eyes, outer and inner lip).
_FACE_CHAINS = [range(0, 17), range(17, 22), range(22, 27), range(27, 31), range(31, 36)] + [
    [*range(a, b), a] for a, b in ((36, 42), (42, 48), (48, 60), (60, 68))
]
_FACE_LIMBS = [(a, b) for chain in _FACE_CHAINS for a, b in pairwise(chain)]

WHOLEBODY_LIMBS: list[tuple[int, int]] = (
    _BODY_LIMBS
    + [(15, 17), (15, 18), (15, 19), (16, 20), (16, 21), (16, 22)]
    + [(FACE_OFFSET + a, FACE_OFFSET + b) for a, b in _FACE_LIMBS]
    + [(LEFT_HAND_OFFSET + a, LEFT_HAND_OFFSET + b) for a, b in _HAND_LIMBS]
    + [(RIGHT_HAND_OFFSET + a, RIGHT_HAND_OFFSET + b) for a, b in _HAND_LIMBS]
    + [(9, LEFT_HAND_OFFSET), (10, RIGHT_HAND_OFFSET)]
)

# --------------------------------------------------------------------------- PGMM-36
_HAND14 = (
    ["hand_root", "thumb_mcp", "thumb_ip", "thumb_tip"]
    + ["index_mcp", "index_pip", "index_tip", "middle_mcp", "middle_pip", "middle_tip"]
    + ["ring_mcp", "ring_tip", "pinky_mcp", "pinky_tip"]
)
PGMM36 = (
    ["nose", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow"]
    + ["face_8", "face_62", "face_66"]  # chin, inner upper lip, inner lower lip
    + [f"{side}_{n}" for side in _SIDES for n in _HAND14]
)
NUM_PGMM = len(PGMM36)  # 36
#: The 28 hand channels of PGMM36 (both hands' 14 points, 8..35; built above as one block).
PGMM36_HANDS = slice(PGMM36.index("left_hand_root"), NUM_PGMM)
#: PGMM36 index -> WHOLEBODY133 index.
PGMM36_FROM_WHOLEBODY = np.array([WB[n] for n in PGMM36], dtype=np.int64)
# Chains within each hand's 14 points: root to the tips of thumb, index, middle, ring, pinky.
_HAND14_CHAINS = [(0, 1, 2, 3), (0, 4, 5, 6), (0, 7, 8, 9), (0, 10, 11), (0, 12, 13)]
_HAND14_LIMBS = [(a, b) for chain in _HAND14_CHAINS for a, b in pairwise(chain)]
PGMM36_LIMBS = [(1, 2), (1, 3), (2, 4), (0, 5), (6, 7), (3, 8), (4, 22)] + [
    (off + a, off + b) for off in (8, 22) for a, b in _HAND14_LIMBS
]

# --------------------------------------------------------------------------- MediaPipe Holistic
#: MediaPipe Pose (33) index for each COCO body/feet point (-1: MediaPipe has no such point).
MEDIAPIPE_POSE_FOR_BODY = np.array(
    [0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28], dtype=np.int64
)
MEDIAPIPE_POSE_FOR_FEET = np.array([31, -1, 29, 32, -1, 30], dtype=np.int64)
#: MediaPipe FaceMesh (468) vertex closest to each of the 68 iBUG face points.
MEDIAPIPE_FACE_FOR_FACE68 = np.array(
    [162, 234, 93, 58, 172, 136, 149, 148, 152, 377, 378, 365, 397, 288, 323, 454, 389]  # jaw
    + [71, 63, 105, 66, 107, 336, 296, 334, 293, 301]  # right brow, left brow
    + [168, 197, 5, 4, 75, 97, 2, 326, 305]  # nose
    + [33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380]  # right eye, left eye
    + [61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181]  # outer lip
    + [78, 82, 13, 312, 308, 317, 14, 87],  # inner lip
    dtype=np.int64,
)
#: Index into the concatenation [pose 33, face 468, left hand 21, right hand 21] (543 points)
#: for every WHOLEBODY133 point.
MEDIAPIPE_FOR_WHOLEBODY = np.concatenate(
    [
        MEDIAPIPE_POSE_FOR_BODY,
        MEDIAPIPE_POSE_FOR_FEET,
        33 + MEDIAPIPE_FACE_FOR_FACE68,
        33 + 468 + np.arange(21),
        33 + 468 + 21 + np.arange(21),
    ]
)
MEDIAPIPE_FOR_PGMM36 = MEDIAPIPE_FOR_WHOLEBODY[PGMM36_FROM_WHOLEBODY]

# --------------------------------------------------------------------------- OpenPose-18 (DWPose)
#: OpenPose/DWPose 18-point body index for each COCO body point (OpenPose adds a neck).
OPENPOSE18_FOR_BODY = np.array(
    [0, 15, 14, 17, 16, 5, 2, 6, 3, 7, 4, 11, 8, 12, 9, 13, 10], dtype=np.int64
)


def convert(points: np.ndarray, index: np.ndarray, missing_value: float = 0.0) -> np.ndarray:
    """Gather ``points[..., index, :]``; entries with index -1 become zeros with confidence 0.

    ``points`` is ``(..., K_src, C)`` with the confidence in the last channel.
    """
    index = np.asarray(index)
    safe = np.where(index < 0, 0, index)
    out = np.take(points, safe, axis=-2).copy()
    out[..., index < 0, :] = missing_value
    return out


def wholebody_to_pgmm36(points: np.ndarray) -> np.ndarray:
    """``(..., 133, C)`` -> ``(..., 36, C)``."""
    if points.shape[-2] != NUM_WHOLEBODY:
        raise ValueError(f"expected {NUM_WHOLEBODY} whole-body points, got {points.shape[-2]}")
    return convert(points, PGMM36_FROM_WHOLEBODY)


def mediapipe_to_wholebody(
    pose: np.ndarray, face: np.ndarray, left_hand: np.ndarray, right_hand: np.ndarray
) -> np.ndarray:
    """MediaPipe Holistic components (``(..., n, C)`` each) -> ``(..., 133, C)``."""
    stacked = np.concatenate([pose, face, left_hand, right_hand], axis=-2)
    if stacked.shape[-2] != 543:
        raise ValueError(f"expected 33+468+21+21 MediaPipe points, got {stacked.shape[-2]}")
    return convert(stacked, MEDIAPIPE_FOR_WHOLEBODY)


def openpose_wholebody_to_wholebody(
    body18: np.ndarray, face: np.ndarray, left_hand: np.ndarray, right_hand: np.ndarray
) -> np.ndarray:
    """DWPose / OpenPose whole-body output (18 body, 68 face, 2x21 hands) -> 133 points.

    OpenPose has no feet in this export, so the six foot points get confidence 0.
    """
    lead = body18.shape[:-2]
    feet = np.zeros((*lead, 6, body18.shape[-1]), dtype=body18.dtype)
    return np.concatenate(
        [convert(body18, OPENPOSE18_FOR_BODY), feet, face, left_hand, right_hand], axis=-2
    )


LAYOUTS: dict[str, list[str]] = {"wholebody133": WHOLEBODY133, "pgmm36": PGMM36}
LIMBS: dict[str, list[tuple[int, int]]] = {
    "wholebody133": WHOLEBODY_LIMBS,
    "pgmm36": PGMM36_LIMBS,
}
