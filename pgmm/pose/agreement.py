"""How well do two labellings of the same frames agree? Mean distance per body part.

Distances are divided by the signer's shoulder width (taken from the reference labelling,
per frame), so the numbers mean the same at any resolution: 0.1 is a tenth of a shoulder
width -- roughly a finger's length. Only points both labellings mark as present count.
"""

from __future__ import annotations

import numpy as np

from pgmm.pose import layout as L

__all__ = ["PARTS", "part_distances"]

#: Body parts of COCO-WholeBody-133 compared (the lower body is out of frame in sign video).
PARTS: dict[str, np.ndarray] = {
    "upper body": np.arange(0, 11),  # nose, eyes, ears, shoulders, elbows, wrists
    "face": np.arange(L.FACE.start, L.FACE.stop),
    "left hand": np.arange(L.LEFT_HAND.start, L.LEFT_HAND.stop),
    "right hand": np.arange(L.RIGHT_HAND.start, L.RIGHT_HAND.stop),
}


def part_distances(
    labels: np.ndarray, reference: np.ndarray, aspect: float = 1.0
) -> dict[str, dict[str, float]]:
    """Per part: mean and median normalised distance, and how many point pairs they cover.

    The median is reported beside the mean because one labeller losing a hand for a few
    frames (and guessing it elsewhere) moves the mean far more than the typical error.

    Args:
        labels, reference: ``(T, 133, 3)`` normalised x, y, confidence of the same frames.
        aspect: frame width / height, so x and y distances are in the same unit.
    """
    if labels.shape != reference.shape or labels.shape[1:] != (L.NUM_WHOLEBODY, 3):
        raise ValueError(f"need two (T, 133, 3) arrays, got {labels.shape} and {reference.shape}")
    scale = np.array([aspect, 1.0], np.float32)
    ls, rs = L.WB["left_shoulder"], L.WB["right_shoulder"]
    width = np.linalg.norm((reference[:, ls, :2] - reference[:, rs, :2]) * scale, axis=-1)
    frame_ok = (reference[:, ls, 2] > 0) & (reference[:, rs, 2] > 0) & (width > 1e-4)
    out = {}
    for part, index in PARTS.items():
        a, b = labels[:, index], reference[:, index]
        both = (a[..., 2] > 0) & (b[..., 2] > 0) & frame_ok[:, None]
        dist = np.linalg.norm((a[..., :2] - b[..., :2]) * scale, axis=-1)
        dist = dist / np.where(frame_ok, width, 1.0)[:, None]
        n = int(both.sum())
        d = dist[both]
        out[part] = {
            "mean": float(d.mean()) if n else float("nan"),
            "median": float(np.median(d)) if n else float("nan"),
            "points": n,
        }
    return out
