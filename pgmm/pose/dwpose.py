"""Import DWPose whole-body labels (one JSON file per frame) into our layout.

DWPose (the ControlNet annotator's format) writes, per person: ``body_keypoints`` in the
OpenPose-18 order with ``body_scores`` holding each point's *candidate index* (``-1`` = not
detected, not a confidence), then ``face_keypoints`` (68, iBUG order) and
``left_hand_keypoints``/``right_hand_keypoints`` (21 each) with real scores. Coordinates are
normalised to the frame. The shared How2Sign clip ships these labels; importing them gives a
second, independent labeller to check MediaPipe against.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pgmm.pose import layout as L
from pgmm.pose.sequence import PoseFormatError, PoseSequence

__all__ = ["load_dwpose_folder", "parse_dwpose_frame"]


def _points(person: dict, key: str, count: int) -> np.ndarray:
    xy = np.asarray(person.get(f"{key}_keypoints") or np.zeros((count, 2)), np.float32)
    scores = np.asarray(person.get(f"{key}_scores") or np.zeros(count), np.float32)
    if xy.shape != (count, 2) or scores.shape != (count,):
        raise ValueError(f"{key}: expected {count} points, got {xy.shape} / {scores.shape}")
    if key == "body":  # candidate indices: present or not
        scores = (scores >= 0).astype(np.float32)
    return np.concatenate([xy, np.clip(scores, 0.0, 1.0)[:, None]], axis=1)


def parse_dwpose_frame(data: dict) -> np.ndarray:
    """One DWPose JSON object -> ``(133, 3)``; the first person, zeros when nobody."""
    if not data.get("num_persons") or "person_0" not in data:
        return np.zeros((L.NUM_WHOLEBODY, 3), np.float32)
    parts = (("body", 18), ("face", 68), ("left_hand", 21), ("right_hand", 21))
    return L.openpose_wholebody_to_wholebody(*(_points(data["person_0"], *p) for p in parts))


def load_dwpose_folder(
    folder: str | Path, fps: float = 25.0, width: int = 1, height: int = 1
) -> PoseSequence:
    """Every ``*.json`` of ``folder`` in name order as one sequence (``fps``/size: the video's)."""
    folder = Path(folder)
    files = sorted(folder.glob("*.json"))
    if not files:
        raise PoseFormatError(f"{folder}: no DWPose .json files")
    frames = []
    for path in files:
        try:
            frames.append(parse_dwpose_frame(json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, ValueError, TypeError, AttributeError) as e:
            raise PoseFormatError(f"{path}: not a DWPose frame ({e})") from e
    return PoseSequence(np.stack(frames), fps, "wholebody133", width, height)
