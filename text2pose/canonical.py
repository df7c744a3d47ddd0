"""The body-normalised pose frame that text2pose speaks, and retargeting out of it.

text2pose models never see a particular signer: they regress poses in one *canonical* frame —
shoulder midpoint at ``CENTER`` and shoulder width ``SHOULDER_WIDTH`` in a square canvas, both
measured as the SynthSigner average — so that one model can drive any signer. The serving layer
then maps the canonical sequence onto the chosen signer's body with :func:`retarget` (a uniform
scale + shift from the signer's own shoulders), which keeps the signing space proportional to
the signer.
"""

from __future__ import annotations

import numpy as np

from pgmm.pose.layout import WB
from pgmm.pose.sequence import PoseSequence

CENTER = np.array([0.5, 0.49], dtype=np.float32)
SHOULDER_WIDTH = 0.37
CANVAS = 256  # nominal pixel size carried by canonical PoseSequences
FPS = 25.0
LEFT, RIGHT = WB["left_shoulder"], WB["right_shoulder"]


def as_sequence(data: np.ndarray) -> PoseSequence:
    """Canonical ``(T, 133, 3)`` xy + confidence as the whole-body sequence text2pose outputs."""
    return PoseSequence(data, FPS, "wholebody133", CANVAS, CANVAS)


def shoulders(xy: np.ndarray) -> tuple[np.ndarray, float]:
    """Mean shoulder midpoint and width of ``(T, 133, 2)`` (or ``(133, 2)``) whole-body points."""
    xy = xy.reshape(-1, xy.shape[-2], 2)
    mid = (xy[:, LEFT] + xy[:, RIGHT]) / 2
    width = np.linalg.norm(xy[:, LEFT] - xy[:, RIGHT], axis=-1)
    if not np.isfinite(width).all() or width.mean() <= 1e-6:
        raise ValueError("pose has no usable shoulders (needed to normalise body scale)")
    return mid.mean(0), float(width.mean())


def to_canonical(seq: PoseSequence) -> PoseSequence:
    """Whole-body sequence -> canonical frame (per-sequence scale and shift, so the body's own
    motion, e.g. leaning, is kept)."""
    seq = seq.to_layout("wholebody133")
    xy = seq.xy * np.array([seq.width / seq.height, 1.0], np.float32)  # square pixels
    mid, width = shoulders(xy)
    out = (xy - mid) * (SHOULDER_WIDTH / width) + CENTER
    data = np.concatenate([out, seq.confidence[..., None]], -1).astype(np.float32)
    return PoseSequence(data, seq.fps, "wholebody133", CANVAS, CANVAS)


def retarget(seq: PoseSequence, reference: np.ndarray, width: int, height: int) -> PoseSequence:
    """Canonical sequence -> the body of a signer whose whole-body pose is ``reference``
    (``(133, 2)`` or ``(T, 133, 2)`` normalised xy in a ``width``×``height`` image)."""
    aspect = np.array([width / height, 1.0], np.float32)
    mid, ref_width = shoulders(np.asarray(reference, np.float32) * aspect)
    c_mid, c_width = CENTER, SHOULDER_WIDTH
    xy = ((seq.xy - c_mid) * (ref_width / c_width) + mid) / aspect
    data = np.concatenate([xy, seq.confidence[..., None]], -1).astype(np.float32)
    return PoseSequence(data, seq.fps, "wholebody133", width, height)
