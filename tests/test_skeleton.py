"""Stick-figure renderer (pgmm.pose.skeleton)."""

from __future__ import annotations

import numpy as np
import pytest

from pgmm.pose import layout as L
from pgmm.pose.sequence import PoseSequence
from pgmm.pose.skeleton import draw_pose_sequence, draw_skeleton


def _points(layout: str = "wholebody133", **named: tuple[float, float]) -> np.ndarray:
    """A ``(K, 3)`` pose where only the named points are present (confidence 1)."""
    names = L.LAYOUTS[layout]
    pts = np.zeros((len(names), 3), dtype=np.float32)
    for name, (x, y) in named.items():
        pts[names.index(name)] = (x, y, 1.0)
    return pts


# Off the pixel grid (v = 0.51 * H), so the anti-aliased edges are partially covered.
SHOULDERS = {"left_shoulder": (0.75, 0.51), "right_shoulder": (0.25, 0.51)}


def test_limb_is_drawn_between_confident_ends() -> None:
    img = draw_skeleton(_points(**SHOULDERS), size=64, thickness=2.0)
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    row = img[32].max(axis=-1)  # the limb covers v = 31.64 .. 33.64
    assert (row[17:47] > 100).all()  # covered between the shoulders (u = 16 .. 48)
    assert img[:20].max() == 0 and img[45:].max() == 0  # nothing far from it
    # Anti-aliased: the line's edge rows are partially covered.
    edge = img[30:35, 32].max(axis=-1)
    assert ((edge > 0) & (edge < edge.max())).any()


def test_confidence_zero_points_draw_nothing() -> None:
    empty = draw_skeleton(np.zeros((L.NUM_WHOLEBODY, 3)), size=32)
    assert empty.max() == 0
    pts = _points(**SHOULDERS)
    pts[L.WB["right_shoulder"], 2] = 0.0  # one end missing: no limb, only the other joint
    img = draw_skeleton(pts, size=64)
    assert img[32, 20:44].max() == 0
    assert img[32, 48].max() > 0


def test_joint_is_centred_on_its_subpixel_location() -> None:
    """The intensity centroid of a lone joint dot is at u = x * W, v = y * H.

    Drawing at 4x quantises positions to 1/8 output px, hence the 0.2 px tolerance; without
    the half-pixel convention the error would be 0.5 px.
    """
    h, w = 40, 60
    x, y = 0.3137, 0.6421
    img = draw_skeleton(_points(nose=(x, y)), size=(h, w), thickness=2.0).max(axis=-1)
    weight = img.astype(np.float64)
    rows, cols = np.indices(img.shape) + 0.5
    u, v = (weight * cols).sum() / weight.sum(), (weight * rows).sum() / weight.sum()
    assert abs(u - x * w) < 0.2 and abs(v - y * h) < 0.2


def test_parts_and_fingers_have_distinct_colours() -> None:
    def colour_of(**named: tuple[float, float]) -> tuple[int, ...]:
        img = draw_skeleton(_points(**named), size=64, thickness=3.0)
        return tuple(img[32, 32])  # every probe limb below passes through the centre

    horizontal = {"a": (0.2, 0.5), "b": (0.8, 0.5)}
    probes = {
        "body": ("left_shoulder", "right_shoulder"),
        "left thumb": ("left_thumb_mcp", "left_thumb_ip"),
        "left pinky": ("left_pinky_mcp", "left_pinky_pip"),
        "right thumb": ("right_thumb_mcp", "right_thumb_ip"),
        "right pinky": ("right_pinky_mcp", "right_pinky_pip"),
        "face": ("face_0", "face_1"),
    }
    colours = {
        part: colour_of(**{a: horizontal["a"], b: horizontal["b"]})
        for part, (a, b) in probes.items()
    }
    assert len(set(colours.values())) == len(colours), colours


def test_shapes_for_single_sequence_and_layouts() -> None:
    single = _points(**SHOULDERS)
    seq = np.stack([single, single, single])
    assert draw_skeleton(single, size=(48, 80)).shape == (48, 80, 3)
    frames = draw_skeleton(seq, size=32)
    assert frames.shape == (3, 32, 32, 3)
    np.testing.assert_array_equal(frames[0], draw_skeleton(single, size=32))
    pgmm = _points("pgmm36", left_shoulder=(0.7, 0.4), left_elbow=(0.8, 0.7))
    assert draw_skeleton(pgmm, size=32, layout="pgmm36").max() > 0


def test_overlay_on_background_image() -> None:
    rng = np.random.default_rng(0)
    background = rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
    img = draw_skeleton(_points(**SHOULDERS), size=999, background=background)
    assert img.shape == background.shape  # the image sets the size
    np.testing.assert_array_equal(img[:16], background[:16])  # untouched away from the limb
    assert (img[24, 20:44] != background[24, 20:44]).any()
    # Per-frame backgrounds for a sequence, and a background colour.
    frames = draw_skeleton(np.stack([_points(), _points()]), background=np.stack([background] * 2))
    np.testing.assert_array_equal(frames[1], background)
    grey = draw_skeleton(_points(), size=8, background=(10, 20, 30))
    assert (grey == np.array([10, 20, 30], dtype=np.uint8)).all()


def test_draw_pose_sequence_keeps_aspect_ratio() -> None:
    data = np.stack([_points(**SHOULDERS)] * 2)
    seq = PoseSequence(data, fps=25.0, width=320, height=240)
    assert draw_pose_sequence(seq).shape == (2, 192, 256, 3)
    assert draw_pose_sequence(seq, size=64).shape == (2, 64, 64, 3)


def test_invalid_input() -> None:
    with pytest.raises(ValueError):
        draw_skeleton(np.zeros((10, 3)))
    with pytest.raises(ValueError):
        draw_skeleton(np.zeros((36, 3)), layout="openpose")
    with pytest.raises(ValueError):
        draw_skeleton(_points(), background=np.zeros((8, 8), dtype=np.uint8))
