"""Pose-fidelity metrics: how far the keypoints P_e finds in generated frames are from the truth.

PGMM's claim is fine-grained hands, so errors are reported for the hand keypoints and for the
whole body separately (a good body score can hide bad fingers: hands are small in the frame).

Keypoints are ``(..., K, 2)`` arrays (``(..., K, >=2)`` also accepted; extra channels such as a
confidence are ignored) in the project's normalised convention (x / width, y / height, see
:mod:`pgmm.pose.sequence`); ``visible`` is ``(..., K)`` and marks the ground-truth points that
exist (e.g. confidence > 0) -- only those are scored. Distances are expressed as a fraction of
the image size: for a frame of ``image_size = (width, height)`` the pixel distance is divided by
``max(width, height)``; without ``image_size`` the frame is taken as square, where that is just
the distance in normalised coordinates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from pgmm.pose import layout as L

#: PGMM36 keypoint groups: the 28 hand channels (8..35) and all 36 channels.
PGMM36_GROUPS: dict[str, tuple[int, ...]] = {
    "hands": tuple(range(L.NUM_PGMM)[L.PGMM36_HANDS]),
    "whole_body": tuple(range(L.NUM_PGMM)),
}

Groups = Mapping[str, Sequence[int]]


def _normalised_distances(
    pred_points: np.ndarray,
    gt_points: np.ndarray,
    visible: np.ndarray,
    image_size: tuple[int, int] | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-point distances as a fraction of the image size, and the visibility mask."""
    pred = np.asarray(pred_points, dtype=np.float64)[..., :2]
    gt = np.asarray(gt_points, dtype=np.float64)[..., :2]
    vis = np.asarray(visible).astype(bool)
    if pred.shape != gt.shape or vis.shape != gt.shape[:-1]:
        raise ValueError(
            f"shapes must be (..., K, 2) twice and (..., K): {pred.shape}, {gt.shape}, {vis.shape}"
        )
    delta = pred - gt
    if image_size is not None:
        width, height = image_size
        delta = delta * np.array([width, height], dtype=np.float64) / max(width, height)
    return np.linalg.norm(delta, axis=-1), vis


def _per_group(values: np.ndarray, visible: np.ndarray, groups: Groups) -> dict[str, float]:
    """Mean of ``values`` over the visible points of each group (NaN where none is visible).

    NaN rather than 0 or an exception: a clip with no visible hands has no hand error, and a
    NaN cannot be mistaken for a perfect score.
    """
    k = values.shape[-1]
    out = {}
    for name, group in groups.items():
        index = np.asarray(group, dtype=np.int64)
        if index.size == 0 or index.min() < 0 or index.max() >= k:
            raise ValueError(f"group {name!r} indexes outside 0..{k - 1}")
        v, m = values[..., index], visible[..., index]
        out[name] = float(v[m].mean()) if m.any() else float("nan")
    return out


def keypoint_error(
    pred_points: np.ndarray,
    gt_points: np.ndarray,
    visible: np.ndarray,
    groups: Groups = PGMM36_GROUPS,
    image_size: tuple[int, int] | None = None,
) -> dict[str, float]:
    """Mean normalised keypoint distance per group, e.g. ``{"hands": .., "whole_body": ..}``."""
    dist, vis = _normalised_distances(pred_points, gt_points, visible, image_size)
    return _per_group(dist, vis, groups)


def pck(
    pred_points: np.ndarray,
    gt_points: np.ndarray,
    visible: np.ndarray,
    threshold: float = 0.05,
    groups: Groups = PGMM36_GROUPS,
    image_size: tuple[int, int] | None = None,
) -> dict[str, float]:
    """Percentage of Correct Keypoints per group: share of visible points within ``threshold``.

    A point is correct when its distance is at most ``threshold`` times the image size
    (PCK@0.05 by default), in the same normalisation as :func:`keypoint_error`.
    """
    dist, vis = _normalised_distances(pred_points, gt_points, visible, image_size)
    return _per_group((dist <= threshold).astype(np.float64), vis, groups)
