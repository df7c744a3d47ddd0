"""G2P metrics: DTW-aligned mean joint error, duration error, and one evaluation loop.

A generated sequence is never frame-synchronous with its reference (a model picks its own
length and speed), so joint errors are measured after dynamic time warping: DTW over frames
with the per-frame mean joint distance as the local cost, and the total cost of the best path
divided by that path's length (a mean per aligned frame pair, comparable across lengths).
Distances are in canonical-frame units (fractions of the canvas; x ``CANVAS`` for pixels).
SynthSigner labels no feet, so ``"all"`` means every whole-body joint but the feet; hand and
arm points outside the signer's frame are still exact and counted.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from pgmm.pose import layout as L
from pgmm.pose.sequence import PoseSequence

_ALL = np.r_[np.arange(L.BODY.start, L.BODY.stop), np.arange(L.FACE.start, L.RIGHT_HAND.stop)]
PARTS: dict[str, np.ndarray] = {
    "all": _ALL,
    "body": np.arange(L.BODY.start, L.BODY.stop),
    "face": np.arange(L.FACE.start, L.FACE.stop),
    "hands": np.arange(L.LEFT_HAND.start, L.RIGHT_HAND.stop),
}


def _xy(pose: PoseSequence | np.ndarray) -> np.ndarray:
    if isinstance(pose, PoseSequence):
        return pose.to_layout("wholebody133").xy
    pose = np.asarray(pose, np.float64)
    if pose.ndim != 3 or pose.shape[-1] not in (2, 3):
        raise ValueError(f"pose must be (T, K, 2|3), got {pose.shape}")
    return pose[..., :2]


def dtw(cost: np.ndarray) -> tuple[float, int]:
    """Minimum total cost of a monotone path from ``(0, 0)`` to ``(n-1, m-1)`` through the
    ``(n, m)`` cost matrix (steps (1,0), (0,1), (1,1)) and that path's length in cells.

    Vectorised over anti-diagonals: every cell depends only on the two diagonals before it.
    """
    n, m = cost.shape
    if n == 0 or m == 0:
        raise ValueError("DTW needs at least one frame on each side")
    acc = np.full((n, m), np.inf)
    steps = np.zeros((n, m), np.int64)
    acc[0, 0], steps[0, 0] = cost[0, 0], 1
    for k in range(1, n + m - 1):
        i = np.arange(max(0, k - m + 1), min(n, k + 1))
        j = k - i
        cands = np.full((3, len(i)), np.inf)
        lens = np.zeros((3, len(i)), np.int64)
        for c, (di, dj) in enumerate(((1, 1), (1, 0), (0, 1))):
            pi, pj = i - di, j - dj
            ok = (pi >= 0) & (pj >= 0)
            cands[c, ok] = acc[pi[ok], pj[ok]]
            lens[c, ok] = steps[pi[ok], pj[ok]]
        best = np.argmin(cands, 0)
        cols = np.arange(len(i))
        acc[i, j] = cost[i, j] + cands[best, cols]
        steps[i, j] = lens[best, cols] + 1
    return float(acc[-1, -1]), int(steps[-1, -1])


def dtw_mje(
    pred: PoseSequence | np.ndarray,
    target: PoseSequence | np.ndarray,
    parts: str | Sequence[int] = "all",
) -> float:
    """DTW-aligned mean joint error between two whole-body sequences (canonical units).

    ``parts``: a key of :data:`PARTS` (``"all"``, ``"hands"``, ``"body"``, ``"face"``) or
    explicit joint indices.
    """
    joints = PARTS[parts] if isinstance(parts, str) else np.asarray(parts, np.int64)
    p, t = _xy(pred)[:, joints], _xy(target)[:, joints]
    # cost[i, j] = mean over joints of || p_i - t_j ||, one joint at a time: the full
    # (n, m, joints, 2) difference would take ~0.5 GB for two 500-frame sequences.
    cost = np.zeros((len(p), len(t)))
    for k in range(len(joints)):
        cost += np.hypot(p[:, None, k, 0] - t[None, :, k, 0], p[:, None, k, 1] - t[None, :, k, 1])
    cost /= len(joints)
    total, length = dtw(cost)
    return total / length


def mean_dtw_mje(preds: Sequence[PoseSequence], targets: Sequence[np.ndarray]) -> dict[str, float]:
    """The ``dtw_mje`` and ``dtw_mje_hands`` columns: :func:`dtw_mje` of all joints and of the
    hands, each a mean over sentences (targets read as float32, the precision they are kept in)."""
    pairs = [(p, np.asarray(t, np.float32)) for p, t in zip(preds, targets, strict=True)]
    return {
        "dtw_mje": float(np.mean([dtw_mje(p, t) for p, t in pairs])),
        "dtw_mje_hands": float(np.mean([dtw_mje(p, t, "hands") for p, t in pairs])),
    }


def duration_error(pred_frames: Sequence[int], target_frames: Sequence[int]) -> dict[str, float]:
    """Mean absolute length error in frames and relative to the target length."""
    pred = np.asarray(pred_frames, np.float64)
    target = np.asarray(target_frames, np.float64)
    if pred.shape != target.shape or not len(pred):
        raise ValueError("need equally many (>= 1) predicted and target lengths")
    diff = np.abs(pred - target)
    return {"frames": float(diff.mean()), "relative": float((diff / target).mean())}


class PoseGenerator(Protocol):
    """What :func:`evaluate_g2p` needs: GlossToPose and the baselines all provide it."""

    def generate(self, gloss_lists: Sequence[Sequence[str]]) -> list[PoseSequence]: ...


def camera_view(pose: PoseSequence) -> PoseSequence:
    """``pose`` with confidence 0 for every point outside its canvas: what a camera framing
    that canvas (and a renderer drawing it) can show.

    G2P targets keep exact coordinates for hands resting below the frame (DTW-MJE scores
    them), but SynthSigner labels those points invisible, and the recognizers are trained on
    exactly that. Handing a recognizer canonical poses with such hands "seen" puts it out of
    its training distribution: the ground-truth poses themselves were read at WER 0.309
    (German dev, ``models/recognizer/de``) against 0.104 with this view, and 0.093 for the
    raw SynthSigner poses it was trained on.
    """
    data = pose.data.copy()
    data[..., 2] *= np.all((data[..., :2] >= 0.0) & (data[..., :2] <= 1.0), axis=-1)
    return PoseSequence(data, pose.fps, pose.layout, pose.width, pose.height)


def back_translation(
    recognizer: Any, poses: Sequence[PoseSequence], glosses: Sequence[Sequence[str]]
) -> dict[str, float]:
    """Read glosses back from generated poses with a gloss recognizer (the SLP literature's
    back-translation): WER and BLEU-4 against the glosses that were to be signed.

    DTW-MJE asks "is it the same motion?"; this asks "can the signing be read?" -- a pose
    sequence can be far from the target frame by frame yet still carry the right signs.
    ``recognizer``: a :class:`pgmm.metrics.recognizer.PoseCTCRecognizer` (shoulder-normalised
    input, so canonical poses need no conversion). It reads :func:`camera_view` of each pose.
    """
    from pgmm.metrics.wer import word_error_rate
    from text2pose.t2g import gloss_scores

    samples = [camera_view(p).to_layout("pgmm36").data for p in poses]
    hypotheses = recognizer.recognize_batch(samples)
    references = [list(g) for g in glosses]
    return {
        "bt_wer": float(word_error_rate(references, hypotheses)),
        "bt_bleu4": gloss_scores(hypotheses, references)["bleu4"],
    }


def evaluate_g2p(
    model: PoseGenerator,
    glosses: Sequence[Sequence[str]],
    targets: Sequence[np.ndarray],
    batch_size: int = 16,
    recognizer: Any = None,
) -> dict[str, Any]:
    """Score ``model`` on sentences with canonical xy ``targets`` ``(T, 133, 2)``.

    Returns DTW-MJE over all joints and the hands only (means over sentences), the length
    error, and decode speed (generated frames per second of wall time, generation only);
    with a ``recognizer``, also the back-translation scores (:func:`back_translation`).
    """
    if len(glosses) != len(targets) or not glosses:
        raise ValueError("need equally many (>= 1) gloss sequences and targets")
    preds: list[PoseSequence] = []
    tic = time.perf_counter()
    for start in range(0, len(glosses), batch_size):
        preds += model.generate(list(glosses[start : start + batch_size]))
    seconds = time.perf_counter() - tic
    frames = sum(len(p) for p in preds)
    lengths = duration_error([len(p) for p in preds], [len(t) for t in targets])
    scores = back_translation(recognizer, preds, glosses) if recognizer is not None else {}
    return {
        **scores,
        "sentences": len(glosses),
        **mean_dtw_mje(preds, targets),
        "duration_error_frames": lengths["frames"],
        "duration_error_relative": lengths["relative"],
        "frames_per_second": frames / max(seconds, 1e-9),
    }
