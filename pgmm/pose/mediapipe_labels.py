"""Label real video offline with MediaPipe Holistic, in our whole-body layout.

Why MediaPipe: its PyPI wheel (``mediapipe==0.10.21``, the ``real`` extra) ships the Holistic
models, so real frames get whole-body keypoints (body, 468-point face, both hands) with no
download -- the only real pose estimator that runs on these machines. Its points are mapped to
COCO-WholeBody-133 by :data:`pgmm.pose.layout.MEDIAPIPE_FOR_WHOLEBODY` (and from there to
PGMM's 36 heatmaps), so real labels and SynthSigner labels share one layout.

Confidences: body points carry MediaPipe's visibility; face and hand points carry 1 when the
face/hand was found and 0 when not (MediaPipe gives no per-point score there). A frame with no
body at all is kept, all-zero confidence, so frames and labels stay aligned 1:1.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from pgmm.console import progress as progress_bar
from pgmm.pose import layout as L
from pgmm.pose.sequence import PoseSequence
from pgmm.video import iter_frames, probe

__all__ = [
    "NoPersonError",
    "holistic",
    "label_frame",
    "label_image",
    "label_video",
    "require_mediapipe",
]

#: MediaPipe's own component sizes: pose 33, face mesh 468, left hand 21, right hand 21.
_SIZES = (33, 468, 21, 21)
#: A video is "unlabelled" below this fraction of frames with a body: the clip shows no
#: person (or one MediaPipe cannot see), which must be an error rather than silent zeros.
MIN_DETECTED_FRACTION = 0.5


class NoPersonError(ValueError):
    """MediaPipe found no person where one was required; the message names the input."""


def require_mediapipe() -> Any:
    try:
        import mediapipe as mp
    except ImportError as e:
        raise ImportError(
            "real-video labelling needs MediaPipe: pip install -e '.[real]' "
            f"(mediapipe==0.10.21) ({e})"
        ) from e
    return mp


@contextmanager
def holistic(static_image_mode: bool = False, model_complexity: int = 1) -> Iterator[Any]:
    """A MediaPipe Holistic graph. ``static_image_mode=False`` tracks across frames (video);
    ``model_complexity=1`` is the model the wheel ships (0 and 2 would need a download)."""
    mp = require_mediapipe()
    graph = mp.solutions.holistic.Holistic(
        static_image_mode=static_image_mode,
        model_complexity=model_complexity,
        smooth_landmarks=True,
        refine_face_landmarks=False,
    )
    try:
        yield graph
    finally:
        graph.close()


def _landmarks(landmarks: Any, count: int, visibility: bool) -> np.ndarray:
    """``(count, 3)`` x, y, confidence from a landmark list (zeros when it is ``None``)."""
    out = np.zeros((count, 3), np.float32)
    if landmarks is None:
        return out
    for i, p in enumerate(landmarks.landmark):
        out[i] = (p.x, p.y, min(max(p.visibility, 0.0), 1.0) if visibility else 1.0)
    return out


def label_frame(graph: Any, rgb: np.ndarray) -> np.ndarray:
    """One RGB uint8 frame -> ``(133, 3)`` normalised COCO-WholeBody points."""
    result = graph.process(np.ascontiguousarray(rgb))
    return L.mediapipe_to_wholebody(
        _landmarks(result.pose_landmarks, _SIZES[0], visibility=True),
        _landmarks(result.face_landmarks, _SIZES[1], visibility=False),
        _landmarks(result.left_hand_landmarks, _SIZES[2], visibility=False),
        _landmarks(result.right_hand_landmarks, _SIZES[3], visibility=False),
    )


def _has_body(points: np.ndarray) -> bool:
    shoulders = points[[L.WB["left_shoulder"], L.WB["right_shoulder"]], 2]
    return bool((shoulders > 0).all())


def label_image(rgb: np.ndarray, name: str = "image") -> np.ndarray:
    """The ``(133, 3)`` pose of the person in one photo; :class:`NoPersonError` if none."""
    with holistic(static_image_mode=True) as graph:
        points = label_frame(graph, rgb)
    if not _has_body(points):
        raise NoPersonError(f"{name}: MediaPipe found no person (no shoulders) in the image")
    return points


def label_video(
    path: str | Path, max_frames: int | None = None, progress: bool = True
) -> PoseSequence:
    """Whole-body keypoints for every frame of a video (or image folder).

    Raises :class:`~pgmm.video.VideoError` for unreadable media and :class:`NoPersonError`
    when fewer than :data:`MIN_DETECTED_FRACTION` of the frames show a body.
    """
    info = probe(path)
    total = info.num_frames if max_frames is None else min(max_frames, info.num_frames)
    frames: list[np.ndarray] = []
    with holistic() as graph, closing(iter_frames(path)) as stream:
        bar = progress_bar(
            stream, total=total, unit="frame", desc="labelling", disable=not progress
        )
        for rgb in bar:
            frames.append(label_frame(graph, rgb))
            if max_frames is not None and len(frames) >= max_frames:
                break
    if not frames:
        raise NoPersonError(f"{path}: the video has no frames")
    detected = sum(_has_body(f) for f in frames)
    if detected < MIN_DETECTED_FRACTION * len(frames):
        raise NoPersonError(
            f"{path}: MediaPipe found a person in only {detected} of {len(frames)} frames; "
            "a signer clip must show one person, upper body in view"
        )
    return PoseSequence(np.stack(frames), info.fps, "wholebody133", info.width, info.height)
