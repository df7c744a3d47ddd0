"""Keypoint layouts (pgmm.pose.layout) and PoseSequence I/O (pgmm.pose.sequence)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from pgmm.pose import layout as L
from pgmm.pose.sequence import PoseFormatError, PoseSequence

# ----------------------------------------------------------------------------------- layouts


def test_layout_names_are_unique() -> None:
    assert len(L.WHOLEBODY133) == len(set(L.WHOLEBODY133)) == L.NUM_WHOLEBODY == 133
    assert len(L.PGMM36) == len(set(L.PGMM36)) == L.NUM_PGMM == 36
    assert len(L.WB) == 133


def test_wholebody_parts() -> None:
    assert L.WHOLEBODY133[L.LEFT_HAND][0] == "left_hand_root"
    assert L.WHOLEBODY133[L.RIGHT_HAND][-1] == "right_pinky_tip"
    assert L.WHOLEBODY133[L.FACE] == [f"face_{i}" for i in range(68)]
    assert L.WB["left_wrist"] == 9 and L.WB["right_wrist"] == 10  # the body's wrists


def test_pgmm36_selection() -> None:
    hands = [i for i in L.PGMM36_FROM_WHOLEBODY if 91 <= i < 133]
    assert len(hands) == 28
    assert sum(91 <= i < 112 for i in hands) == 14
    for name, index in zip(L.PGMM36, L.PGMM36_FROM_WHOLEBODY, strict=True):
        assert L.WHOLEBODY133[index] == name
    wholebody = np.random.default_rng(0).random((2, 133, 3))
    pgmm = L.wholebody_to_pgmm36(wholebody)
    np.testing.assert_array_equal(pgmm[:, L.PGMM36.index("face_8")], wholebody[:, L.WB["face_8"]])
    with pytest.raises(ValueError):
        L.wholebody_to_pgmm36(np.zeros((2, 36, 3)))


@pytest.mark.parametrize("layout", sorted(L.LAYOUTS))
def test_limbs_in_range(layout: str) -> None:
    k = len(L.LAYOUTS[layout])
    limbs = L.LIMBS[layout]
    assert limbs and all(0 <= a < k and 0 <= b < k and a != b for a, b in limbs)
    assert len(set(limbs)) == len(limbs)


def test_mediapipe_index_map() -> None:
    m = L.MEDIAPIPE_FOR_WHOLEBODY
    assert m.shape == (133,)
    assert m[L.WB["left_shoulder"]] == 11
    assert m[L.WB["right_wrist"]] == 16
    assert m[L.WB["face_8"]] == 33 + 152  # chin
    assert m[L.WB["left_hand_root"]] == 33 + 468 + 0
    assert m[L.WB["right_pinky_tip"]] == 33 + 468 + 21 + 20
    assert m[L.WB["left_small_toe"]] == -1  # MediaPipe has no small toe
    np.testing.assert_array_equal(L.MEDIAPIPE_FOR_PGMM36, m[L.PGMM36_FROM_WHOLEBODY])


def test_convert_marks_missing_points() -> None:
    src = np.arange(12, dtype=np.float32).reshape(4, 3) + 1
    out = L.convert(src, np.array([2, -1, 0]))
    np.testing.assert_array_equal(out[0], src[2])
    np.testing.assert_array_equal(out[2], src[0])
    assert out[1, 2] == 0.0 and (out[1] == 0).all()


def _tagged(n: int, offset: int, lead: tuple[int, ...] = (5,)) -> np.ndarray:
    """``(*lead, n, 3)`` points whose x is their index in the concatenated source."""
    pts = np.ones((*lead, n, 3), dtype=np.float32)
    pts[..., 0] = offset + np.arange(n)
    return pts


def test_mediapipe_to_wholebody() -> None:
    out = L.mediapipe_to_wholebody(_tagged(33, 0), _tagged(468, 33), _tagged(21, 501),
                                   _tagged(21, 522))  # fmt: skip
    assert out.shape == (5, 133, 3)
    assert out[0, L.WB["left_shoulder"], 0] == 11
    assert out[0, L.WB["right_hip"], 0] == 24
    assert out[0, L.WB["face_8"], 0] == 33 + 152
    assert out[0, L.WB["right_hand_root"], 0] == 33 + 468 + 21
    assert out[0, L.WB["left_small_toe"], 2] == 0.0
    assert (np.delete(out[..., 2], [L.WB["left_small_toe"], L.WB["right_small_toe"]], 1) == 1).all()
    with pytest.raises(ValueError):
        L.mediapipe_to_wholebody(_tagged(33, 0), _tagged(10, 0), _tagged(21, 0), _tagged(21, 0))


OPENPOSE18 = [
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder",
    "left_elbow", "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip",
    "left_knee", "left_ankle", "right_eye", "left_eye", "right_ear", "left_ear",
]  # fmt: skip


def test_openpose_wholebody_to_wholebody() -> None:
    out = L.openpose_wholebody_to_wholebody(
        _tagged(18, 0, (2, 3)), _tagged(68, 100, (2, 3)), _tagged(21, 200, (2, 3)),
        _tagged(21, 300, (2, 3)),
    )  # fmt: skip
    assert out.shape == (2, 3, 133, 3)
    for op_index, name in enumerate(OPENPOSE18):
        if name != "neck":
            assert out[0, 0, L.WB[name], 0] == op_index, name
    assert (out[..., L.FEET, 2] == 0).all()
    assert out[1, 2, L.WB["face_30"], 0] == 130
    assert out[1, 2, L.WB["left_hand_root"], 0] == 200
    assert out[1, 2, L.WB["right_index_tip"], 0] == 308


# ----------------------------------------------------------------------------------- sequences


def _random_sequence(layout: str, frames: int = 6, seed: int = 0) -> PoseSequence:
    k = len(L.LAYOUTS[layout])
    data = np.random.default_rng(seed).random((frames, k, 3)).astype(np.float32)
    data[:, ::5, 2] = 0.0  # some missing points
    return PoseSequence(data, fps=30.0, layout=layout, width=320, height=240)


@pytest.mark.parametrize("layout", ["wholebody133", "pgmm36"])
def test_npz_round_trip_is_exact(tmp_path: Path, layout: str) -> None:
    seq = _random_sequence(layout)
    seq.save(tmp_path / "seq.npz")
    back = PoseSequence.load(tmp_path / "seq.npz")
    np.testing.assert_array_equal(back.data, seq.data)
    assert (back.fps, back.layout, back.width, back.height) == (30.0, layout, 320, 240)


@pytest.mark.parametrize("layout", ["wholebody133", "pgmm36"])
def test_pose_format_round_trip(tmp_path: Path, layout: str) -> None:
    seq = _random_sequence(layout)
    seq.save(tmp_path / "seq.pose")  # dispatches on the suffix
    back = PoseSequence.load(tmp_path / "seq.pose")
    assert (back.fps, back.layout, back.width, back.height) == (30.0, layout, 320, 240)
    np.testing.assert_allclose(back.confidence, seq.confidence, atol=1e-4)
    present = seq.confidence > 0
    np.testing.assert_allclose(back.xy[present], seq.xy[present], atol=1e-4)


def test_sequence_basics() -> None:
    seq = _random_sequence("wholebody133", frames=10)
    assert len(seq) == 10 and seq.duration == pytest.approx(10 / 30)
    assert len(seq[2:5]) == 3 and seq[2:5].width == 320
    np.testing.assert_allclose(seq.pixels()[..., 0], seq.xy[..., 0] * 320)
    pgmm = seq.to_layout("pgmm36")
    assert pgmm.data.shape == (10, 36, 3)
    with pytest.raises(ValueError):
        pgmm.to_layout("wholebody133")


def _plausible_signer(seq: PoseSequence) -> None:
    """Checks any real upper-body recording of a signer facing the camera must pass."""
    d = seq.data
    assert np.isfinite(d).all() and ((d[..., 2] >= 0) & (d[..., 2] <= 1)).all()
    ls, rs = d[:, L.WB["left_shoulder"]], d[:, L.WB["right_shoulder"]]
    both = (ls[:, 2] > 0) & (rs[:, 2] > 0)
    assert both.mean() > 0.9
    assert (ls[both, 0] > rs[both, 0]).all()  # the signer's left is on the image's right
    chin = d[:, L.WB["face_8"]]
    assert np.median(chin[:, 1]) < np.median(ls[:, 1])  # chin above the shoulders
    upper = np.r_[L.WB["left_shoulder"], L.WB["right_shoulder"], 23:133]
    pts = d[:, upper]
    on = pts[..., 2] > 0
    assert (((pts[..., :2] >= 0) & (pts[..., :2] <= 1)).all(-1)[on]).mean() > 0.95
    for side, other in (("left", "right"), ("right", "left")):
        hand = d[:, L.LEFT_HAND if side == "left" else L.RIGHT_HAND]
        present = (hand[..., 2] > 0).any(-1)
        assert present.mean() > 0.5  # each hand is tracked in most frames...
        assert (hand[present, :, 2] > 0).mean() > 0.99  # ...with all its 21 points
        # ... and the hand root lies at its own wrist, not at the other one (no L/R swap).
        root, wrist, far = (d[:, L.WB[n]] for n in
                            (f"{side}_hand_root", f"{side}_wrist", f"{other}_wrist"))  # fmt: skip
        ok = (root[:, 2] > 0) & (wrist[:, 2] > 0) & (far[:, 2] > 0)
        near_d = np.linalg.norm(root[ok, :2] - wrist[ok, :2], axis=-1)
        far_d = np.linalg.norm(root[ok, :2] - far[ok, :2], axis=-1)
        assert np.median(near_d) < 0.3 * np.median(far_d)


def test_read_mediapipe_holistic_full(shared_data: Path) -> None:
    seq = PoseSequence.load(shared_data / "video/asl-what-is-your-name/what-is-your-name.pose")
    assert seq.layout == "wholebody133" and seq.data.shape == (107, 133, 3)
    assert (seq.fps, seq.width, seq.height) == (25.0, 320, 240)
    _plausible_signer(seq)
    assert (seq.data[:, L.WB["nose"], 2] > 0).all()
    assert (seq.data[:, L.FACE, 2] > 0).all()
    assert seq.to_layout("pgmm36").data.shape == (107, 36, 3)


def test_read_mediapipe_holistic_reduced(shared_data: Path) -> None:
    seq = PoseSequence.load(shared_data / "pose/swiss-german-lexicon/sgg/essen.pose")
    assert seq.layout == "wholebody133" and seq.data.shape[1:] == (133, 3) and len(seq) > 10
    _plausible_signer(seq)
    # The reduced export keeps 8 body points (no nose) and a subset of the face mesh.
    assert (seq.data[:, L.WB["nose"], 2] == 0).all()
    assert 0.5 < (seq.data[:, L.FACE, 2] > 0).mean() < 1.0


def test_read_openpose_137(shared_data: Path) -> None:
    seq = PoseSequence.load(shared_data / "pose/pose-format-samples/openpose.pose")
    assert seq.layout == "wholebody133" and seq.data.shape == (93, 133, 3)
    _plausible_signer(seq)
    nose, ls = seq.data[:, L.WB["nose"]], seq.data[:, L.WB["left_shoulder"]]
    assert np.median(nose[:, 1]) < np.median(ls[:, 1])


# ----------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("name", ["absent.pose", "absent.npz"])
def test_missing_file(tmp_path: Path, name: str) -> None:
    with pytest.raises(FileNotFoundError):
        PoseSequence.load(tmp_path / name)


def _npy_bytes() -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.zeros(3))
    return buf.getvalue()


@pytest.mark.parametrize(
    "name,payload",
    [
        ("garbage.pose", bytes(range(256)) * 4),
        ("empty.pose", b""),
        ("garbage.npz", b"not a zip archive at all" * 10),
        ("empty.npz", b""),
        ("array.npz", _npy_bytes()),  # a valid .npy, but not a PoseSequence archive
    ],
)
def test_unreadable_file(tmp_path: Path, name: str, payload: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(payload)
    with pytest.raises(PoseFormatError) as info:
        PoseSequence.load(path)
    assert isinstance(info.value, ValueError)
    assert str(path) in str(info.value)


def test_npz_with_wrong_contents(tmp_path: Path) -> None:
    path = tmp_path / "other.npz"
    np.savez(path, data=np.zeros((2, 5, 3)), fps=25.0, layout="pgmm36", size=[256, 256])
    with pytest.raises(PoseFormatError, match="other.npz"):
        PoseSequence.load(path)


def test_invalid_sequences() -> None:
    with pytest.raises(ValueError, match="must be"):
        PoseSequence(np.zeros((4, 36, 3)))  # pgmm36-shaped data in the default whole-body layout
    with pytest.raises(ValueError):
        PoseSequence(np.zeros((4, 133, 2)))
    with pytest.raises(ValueError):
        PoseSequence(np.zeros((133, 3)))
    with pytest.raises(ValueError):
        PoseSequence(np.zeros((4, 36, 3)), layout="coco17")
    with pytest.raises(ValueError):
        PoseSequence(np.zeros((4, 36, 3)), fps=0.0, layout="pgmm36")


def test_compact_npz_round_trip_within_quantisation(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = rng.uniform(0, 1, (7, 36, 3)).astype(np.float32)
    seq = PoseSequence(data, 25.0, "pgmm36", 256, 256)
    seq.save(tmp_path / "c.npz", compact=True)
    back = PoseSequence.load(tmp_path / "c.npz")
    assert np.abs(back.xy - seq.xy).max() * 256 < 0.01  # < 0.01 px at 256^2
    assert np.abs(back.confidence - seq.confidence).max() <= 0.5 / 255 + 1e-6
    seq.save(tmp_path / "full.npz")
    assert (tmp_path / "c.npz").stat().st_size < (tmp_path / "full.npz").stat().st_size
