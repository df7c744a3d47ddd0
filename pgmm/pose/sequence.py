"""``PoseSequence``: frames x keypoints x (x, y, confidence) at a frame rate.

Coordinates are *normalised* to the frame: x / width and y / height, so one sequence drives
renderers at 128^2, 256^2 or a real signer's resolution alike; ``width``/``height`` remember
the reference frame for aspect ratio and for export to pixel-based formats (``.pose``).
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pgmm.pose import layout as L


def _left_right(*parts: str) -> list[str]:
    """``LEFT_<part>``, ``RIGHT_<part>`` for each part in turn, as MediaPipe Pose orders them."""
    return [f"{side}_{part}" for part in parts for side in ("LEFT", "RIGHT")]


# MediaPipe's point names (its PoseLandmark and HandLandmark order), as .pose files store them.
_MEDIAPIPE_POSE_NAMES = (
    ["NOSE"]
    + [f"{side}_EYE{part}" for side in ("LEFT", "RIGHT") for part in ("_INNER", "", "_OUTER")]
    + _left_right("EAR")
    + ["MOUTH_LEFT", "MOUTH_RIGHT"]
    + _left_right("SHOULDER", "ELBOW", "WRIST", "PINKY", "INDEX", "THUMB")
    + _left_right("HIP", "KNEE", "ANKLE", "HEEL", "FOOT_INDEX")
)
_MEDIAPIPE_HAND_NAMES = ["WRIST", "THUMB_CMC", "THUMB_MCP", "THUMB_IP", "THUMB_TIP"] + [
    f"{finger}_{joint}"
    for finger in ("INDEX_FINGER", "MIDDLE_FINGER", "RING_FINGER", "PINKY")
    for joint in ("MCP", "PIP", "DIP", "TIP")
]
# Where a MediaPipe Holistic .pose keeps each part: (component, point name per point of the
# part, or "" where MediaPipe has no such point, part).
_MEDIAPIPE_COMPONENTS = [
    ("POSE_LANDMARKS", [_MEDIAPIPE_POSE_NAMES[i] for i in L.MEDIAPIPE_POSE_FOR_BODY], L.BODY),
    (
        "POSE_LANDMARKS",
        [_MEDIAPIPE_POSE_NAMES[i] if i >= 0 else "" for i in L.MEDIAPIPE_POSE_FOR_FEET],
        L.FEET,
    ),
    ("FACE_LANDMARKS", [str(i) for i in L.MEDIAPIPE_FACE_FOR_FACE68], L.FACE),
    ("LEFT_HAND_LANDMARKS", _MEDIAPIPE_HAND_NAMES, L.LEFT_HAND),
    ("RIGHT_HAND_LANDMARKS", _MEDIAPIPE_HAND_NAMES, L.RIGHT_HAND),
]
# OpenPose BODY_25 index for every COCO body point / foot point.
_BODY25_FOR_BODY = [0, 16, 15, 18, 17, 5, 2, 6, 3, 7, 4, 12, 9, 13, 10, 14, 11]
_BODY25_FOR_FEET = [19, 20, 21, 22, 23, 24]
# Our own .pose components for the whole-body layout: (name, slice).
_WB_COMPONENTS = [
    ("BODY", L.BODY),
    ("FEET", L.FEET),
    ("FACE", L.FACE),
    ("LEFT_HAND", L.LEFT_HAND),
    ("RIGHT_HAND", L.RIGHT_HAND),
]


# Compact .npz: coordinates in [-0.5, 1.5) of the frame quantised to uint16.
_XY_SCALE = 65535 / 2


class PoseFormatError(ValueError):
    """A pose file that cannot be read, named in the message."""


@dataclass
class PoseSequence:
    """A pose sequence in one of the layouts of :mod:`pgmm.pose.layout`.

    ``data``: float32 ``(T, K, 3)`` -- normalised x, normalised y, confidence in [0, 1].
    A point with confidence 0 is *missing* (its coordinates are meaningless).
    """

    data: np.ndarray
    fps: float = 25.0
    layout: str = "wholebody133"
    width: int = 256
    height: int = 256

    def __post_init__(self) -> None:
        self.data = np.asarray(self.data, dtype=np.float32)
        if self.layout not in L.LAYOUTS:
            raise ValueError(f"unknown layout {self.layout!r}; known: {sorted(L.LAYOUTS)}")
        k = len(L.LAYOUTS[self.layout])
        if self.data.ndim != 3 or self.data.shape[1:] != (k, 3):
            raise ValueError(f"{self.layout} pose data must be (T, {k}, 3), got {self.data.shape}")
        if self.fps <= 0:
            raise ValueError(f"fps must be positive, got {self.fps}")

    # ------------------------------------------------------------------ basics
    def __len__(self) -> int:
        return self.data.shape[0]

    @property
    def xy(self) -> np.ndarray:
        return self.data[..., :2]

    @property
    def confidence(self) -> np.ndarray:
        return self.data[..., 2]

    @property
    def duration(self) -> float:
        return len(self) / self.fps

    def __getitem__(self, index: slice) -> PoseSequence:
        if not isinstance(index, slice):
            raise TypeError("index a PoseSequence with a slice of frames")
        return PoseSequence(self.data[index], self.fps, self.layout, self.width, self.height)

    def to_layout(self, layout: str) -> PoseSequence:
        """Convert (only whole-body -> PGMM36 loses nothing that PGMM needs)."""
        if layout == self.layout:
            return self
        if (self.layout, layout) != ("wholebody133", "pgmm36"):
            raise ValueError(f"cannot convert {self.layout} to {layout}")
        data = L.wholebody_to_pgmm36(self.data)
        return PoseSequence(data, self.fps, layout, self.width, self.height)

    def pixels(self, width: int | None = None, height: int | None = None) -> np.ndarray:
        """``(T, K, 2)`` pixel coordinates (pixel centres at i + 0.5) for a frame size."""
        w, h = width or self.width, height or self.height
        return self.xy * np.array([w, h], dtype=np.float32)

    # ------------------------------------------------------------------ .npz
    def save(self, path: str | Path, compact: bool = False) -> None:
        """Write ``.npz`` (or ``.pose`` by extension) atomically.

        ``compact`` quantises coordinates to 1/65535 of the frame (0.004 px at 256^2) and
        confidences to 1/255: about 2.5x smaller, for corpus-scale exports of poses only.
        """
        path = Path(path)
        if path.suffix == ".pose":
            self.save_pose(path)
            return
        if compact:
            xy = np.round(np.clip(self.xy, -0.5, 1.5) * _XY_SCALE + _XY_SCALE / 2)
            arrays = {
                "xy_q": xy.astype(np.uint16),
                "conf_q": np.round(np.clip(self.confidence, 0, 1) * 255).astype(np.uint8),
            }
        else:
            arrays = {"data": self.data}
        buf = io.BytesIO()
        np.savez_compressed(
            buf,
            **arrays,
            fps=np.float64(self.fps),
            layout=np.array(self.layout),
            size=np.array([self.width, self.height], dtype=np.int64),
        )
        _atomic_write(path, buf.getvalue())

    @classmethod
    def load(cls, path: str | Path) -> PoseSequence:
        """Read ``.npz`` written by :meth:`save`, or any supported ``.pose`` file."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"pose file not found: {path}")
        if path.suffix == ".pose":
            return cls.load_pose(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                w, h = (int(v) for v in z["size"])
                if "xy_q" in z:
                    xy = (z["xy_q"].astype(np.float32) - _XY_SCALE / 2) / _XY_SCALE
                    conf = z["conf_q"].astype(np.float32)[..., None] / 255
                    data = np.concatenate([xy, conf], axis=-1)
                else:
                    data = z["data"]
                return cls(data, float(z["fps"]), str(z["layout"]), w, h)
        except (OSError, KeyError, ValueError, TypeError, zipfile.BadZipFile, EOFError) as e:
            raise PoseFormatError(f"{path}: not a PoseSequence .npz ({e})") from e

    # ------------------------------------------------------------------ .pose (pose-format)
    def save_pose(self, path: str | Path) -> None:
        """Write the sign-language community's ``.pose`` format (pixel coordinates)."""
        from pose_format import Pose
        from pose_format.numpy import NumPyPoseBody
        from pose_format.pose_header import PoseHeader, PoseHeaderComponent, PoseHeaderDimensions

        names = L.LAYOUTS[self.layout]
        if self.layout == "wholebody133":
            groups = _WB_COMPONENTS
        else:
            groups = [("PGMM36", slice(0, len(names)))]
        components = []
        for name, sl in groups:
            lo = sl.start
            limbs = [
                (a - lo, b - lo)
                for a, b in L.LIMBS[self.layout]
                if sl.start <= a < sl.stop and sl.start <= b < sl.stop
            ]
            components.append(PoseHeaderComponent(name, names[sl], limbs, [(255, 255, 255)], "XYC"))
        header = PoseHeader(0.1, PoseHeaderDimensions(self.width, self.height, 0), components)
        xy = self.pixels()[:, None]  # (T, 1, K, 2)
        conf = self.confidence[:, None]
        mask = np.repeat((conf <= 0)[..., None], 2, axis=-1)
        body = NumPyPoseBody(self.fps, np.ma.masked_array(xy, mask=mask), conf)
        buf = io.BytesIO()
        Pose(header, body).write(buf)
        _atomic_write(Path(path), buf.getvalue())

    @classmethod
    def load_pose(cls, path: str | Path) -> PoseSequence:
        """Read a ``.pose`` file: ours, MediaPipe Holistic (full or reduced), or OpenPose-137."""
        from pose_format import Pose

        path = Path(path)
        try:
            pose = Pose.read(path.read_bytes())
        except Exception as e:  # pose-format raises bare struct/Value errors on bad bytes
            raise PoseFormatError(f"{path}: not a readable .pose file ({e})") from e
        header, body = pose.header, pose.body
        w, h = int(header.dimensions.width) or 1, int(header.dimensions.height) or 1
        xy = np.asarray(np.ma.getdata(body.data))[:, 0, :, :2].astype(np.float32)
        conf = np.asarray(body.confidence)[:, 0].astype(np.float32)
        masked = np.ma.getmaskarray(body.data)[:, 0, :, 0]
        conf = np.where(masked, 0.0, np.clip(conf, 0.0, 1.0))
        points = np.concatenate([xy / np.array([w, h], np.float32), conf[..., None]], axis=-1)

        names = [c.name for c in header.components]
        offsets = np.cumsum([0] + [len(c.points) for c in header.components])
        comp = {c.name: (c, int(o)) for c, o in zip(header.components, offsets, strict=False)}
        index = np.full(L.NUM_WHOLEBODY, -1, dtype=np.int64)
        if names == ["PGMM36"]:
            return cls(points, float(body.fps), "pgmm36", w, h)
        if "BODY" in comp and "LEFT_HAND" in comp:
            for name, sl in _WB_COMPONENTS:
                c, off = comp[name]
                index[sl] = off + np.arange(len(c.points))
        elif "POSE_LANDMARKS" in comp:
            for component, wanted, part in _MEDIAPIPE_COMPONENTS:
                _map_by_name(index, comp, component, wanted, part.start)
        elif "pose_keypoints_2d" in comp:
            off = comp["pose_keypoints_2d"][1]
            index[L.BODY] = off + np.array(_BODY25_FOR_BODY)
            index[L.FEET] = off + np.array(_BODY25_FOR_FEET)
            index[L.FACE] = comp["face_keypoints_2d"][1] + np.arange(68)
            index[L.LEFT_HAND] = comp["hand_left_keypoints_2d"][1] + np.arange(21)
            index[L.RIGHT_HAND] = comp["hand_right_keypoints_2d"][1] + np.arange(21)
        else:
            raise PoseFormatError(f"{path}: unknown .pose components {names}")
        return cls(L.convert(points, index), float(body.fps), "wholebody133", w, h)


def _map_by_name(
    index: np.ndarray, comp: dict, component: str, wanted: list[str], start: int
) -> None:
    """Fill ``index[start + i]`` with the position of point ``wanted[i]`` if the file has it."""
    if component not in comp:
        return
    c, off = comp[component]
    where = {p: off + j for j, p in enumerate(c.points)}
    for i, name in enumerate(wanted):
        if name in where:
            index[start + i] = where[name]


def _atomic_write(path: Path, payload: bytes) -> None:
    """Write to a temporary sibling, then rename: a crash never leaves a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(payload)
    tmp.replace(path)
