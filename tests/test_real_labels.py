"""Real-video labels: MediaPipe Holistic on a few real frames, DWPose import, agreement, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pgmm.pose import layout as L
from pgmm.pose.agreement import part_distances
from pgmm.pose.dwpose import load_dwpose_folder, parse_dwpose_frame
from pgmm.pose.sequence import PoseFormatError, PoseSequence
from pgmm.video import VideoError, write_video
from slp_pipeline.cli import main as slp

FRAMES = 3  # MediaPipe labels ~10 frames/s here: a few frames keep the tests fast


@pytest.fixture(scope="module")
def how2sign(shared_data: Path) -> Path:
    return shared_data / "video" / "how2sign-signer"


@pytest.fixture(scope="module")
def labels(how2sign: Path) -> PoseSequence:
    mediapipe_labels = pytest.importorskip("pgmm.pose.mediapipe_labels")
    pytest.importorskip("mediapipe")
    return mediapipe_labels.label_video(
        how2sign / "signer_1280x720.mp4", max_frames=FRAMES, progress=False
    )


def test_mediapipe_labels_agree_with_dwpose(labels: PoseSequence, how2sign: Path) -> None:
    """Two independent labellers on the same real frames: the signer's upper body, face and
    hands land within a tenth of a shoulder width of each other (measured: 0.01-0.05)."""
    assert labels.data.shape == (FRAMES, L.NUM_WHOLEBODY, 3)
    assert (labels.fps, labels.width, labels.height) == (24.0, 1280, 720)
    assert (labels.confidence[:, [L.WB["left_shoulder"], L.WB["right_shoulder"]]] > 0).all()
    dwpose = load_dwpose_folder(how2sign / "dwpose_1280x720").data[:FRAMES]
    parts = part_distances(labels.data, dwpose, aspect=1280 / 720)
    assert parts["upper body"]["points"] > 0 and parts["face"]["points"] > 0
    for name, part in parts.items():
        if part["points"]:
            assert part["mean"] < 0.1, (name, part)


def test_video_without_a_person_is_a_clear_error(tmp_path: Path) -> None:
    mediapipe_labels = pytest.importorskip("pgmm.pose.mediapipe_labels")
    pytest.importorskip("mediapipe")
    video = write_video(tmp_path / "empty.mp4", np.full((4, 96, 96, 3), 128, np.uint8))
    with pytest.raises(mediapipe_labels.NoPersonError, match="found a person in only 0 of 4"):
        mediapipe_labels.label_video(video, progress=False)


def test_unreadable_video_is_a_clear_error(tmp_path: Path) -> None:
    mediapipe_labels = pytest.importorskip("pgmm.pose.mediapipe_labels")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all")
    with pytest.raises(VideoError, match="bad.mp4"):
        mediapipe_labels.label_video(bad, progress=False)


def test_cli_extract_writes_a_pose_file(how2sign: Path, tmp_path: Path, capsys) -> None:
    pytest.importorskip("mediapipe")
    out = tmp_path / "signer.pose"
    assert slp(["pose", "extract", str(how2sign / "signer_480.mp4"), "-o", str(out),
                "--max-frames", "2"]) == 0  # fmt: skip
    pose = PoseSequence.load_pose(out)
    assert len(pose) == 2 and pose.layout == "wholebody133"
    assert "a person in 2" in capsys.readouterr().out


def test_cli_extract_rejects_bad_arguments(tmp_path: Path, capsys) -> None:
    assert slp(["pose", "extract", str(tmp_path / "missing.mp4"), "-o", "x.pose"]) == 2
    assert slp(["pose", "extract", str(tmp_path), "-o", "x.json"]) == 2
    err = capsys.readouterr().err
    assert "missing.mp4" in err and "must end in .pose or .npz" in err


def test_dwpose_frame_mapping() -> None:
    """Body points come in OpenPose-18 order with candidate indices as 'scores' (-1 = absent)."""
    body = [[i / 100, i / 50] for i in range(18)]
    scores = list(range(18))
    scores[4] = -1  # OpenPose 4 = right wrist
    person = {
        "body_keypoints": body,
        "body_scores": scores,
        "face_keypoints": [[0.5, 0.5]] * 68,
        "face_scores": [0.9] * 68,
        "left_hand_keypoints": [[0.3, 0.7]] * 21,
        "left_hand_scores": [0.4] * 21,
        "right_hand_keypoints": [[0.6, 0.7]] * 21,
        "right_hand_scores": [1.5] * 21,
    }
    points = parse_dwpose_frame({"num_persons": 1, "person_0": person})
    assert np.allclose(points[L.WB["left_shoulder"]], [0.05, 0.10, 1.0])  # OpenPose 5
    assert np.allclose(points[L.WB["right_shoulder"]], [0.02, 0.04, 1.0])  # OpenPose 2
    assert points[L.WB["right_wrist"], 2] == 0.0
    assert np.allclose(points[L.LEFT_HAND, :2], [0.3, 0.7]) and points[L.RIGHT_HAND, 2].max() == 1
    assert not parse_dwpose_frame({"num_persons": 0}).any()


def test_dwpose_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(PoseFormatError, match="no DWPose"):
        load_dwpose_folder(tmp_path)
    (tmp_path / "00000001.json").write_text(json.dumps({"num_persons": 1, "person_0": {
        "body_keypoints": [[0, 0]] * 5, "body_scores": [0] * 5}}))  # fmt: skip
    with pytest.raises(PoseFormatError, match="00000001.json"):
        load_dwpose_folder(tmp_path)


def test_part_distances_are_in_shoulder_widths() -> None:
    ref = np.zeros((2, L.NUM_WHOLEBODY, 3), np.float32)
    ref[..., 2] = 1.0
    ref[:, L.WB["left_shoulder"], :2] = (0.7, 0.5)
    ref[:, L.WB["right_shoulder"], :2] = (0.3, 0.5)  # shoulder width 0.4
    moved = ref.copy()
    moved[:, L.LEFT_HAND, 0] += 0.04  # a tenth of a shoulder width
    moved[1, L.FACE, 2] = 0.0  # absent in one labelling: not counted
    parts = part_distances(moved, ref)
    assert parts["left hand"]["mean"] == pytest.approx(0.1)
    assert parts["right hand"]["mean"] == 0.0
    assert parts["face"]["points"] == 68
