"""The PGMM paper's evaluation tasks: self-reconstruction and cross-person animation.

Tasks (``evaluate(task=...)``):

* ``"reconstruction"`` -- the paper's protocol: for every test video the *first frame* is the
  source and *every* frame (the first included) is a driving frame; the generated video is
  compared with the real one pixel by pixel. With ``drive="image"`` the model sees the driving
  image (:meth:`PGMM.reconstruct`, the paper's setting) plus the driving heatmaps; with
  ``drive="pose"`` it sees only the driving heatmaps (:meth:`PGMM.animate`, our text-to-video
  path, where no driving image exists).
* ``"cross-person"`` -- the source is a signer who never signed the driving video: on
  SynthSigner the first frame of the *same sentence* rendered for a held-out identity (10 and
  11 alternate over the videos; the corpus videos use identities 0-9, so the driving signer
  always differs), on other datasets the first frame of the next video by a different signer.
  On SynthSigner the exact target exists -- the driving poses drawn in the source's look --
  so L1, SSIM, LPIPS and TCD compare with it: without them the hand columns reward a renderer
  that draws the hands in place but drops the source's look (a pale, generic figure is read
  *better* than identity 11 itself, docs/results.md). On other datasets no video of the source
  person performing the driving motion exists, and those columns are ``"n/a (...)"``. Pose
  fidelity is measured against the driving poses, FVD against the real driving videos (a
  distribution comparison that needs no pairing) and WER against the driving video's glosses.

Heatmaps: from the dataset's ground-truth poses when it has them (rendered with
:func:`pgmm.pose.heatmaps.pose_heatmaps`, the exact maps the model was trained on), else
from the pose estimator ``P_e`` -- as in training.

Two pose networks, never one: ``estimator`` (``P_e``, the network ``L_pd`` trains the renderer
against) only supplies driving heatmaps where a dataset has no poses; ``evaluator`` -- a pose
estimator trained independently (another seed and architecture, ``models/evaluator``) -- reads
every *generated* frame for the keypoint columns and the WER proxy. Scoring with ``P_e`` would
reward a renderer for pleasing its own examiner rather than for drawing the hands where the
pose says, so :func:`evaluate` refuses an evaluator with ``P_e``'s weights.

Metrics, in the paper's column order (:data:`METRIC_COLUMNS`): L1, SSIM, LPIPS, FVD, TCD, WER,
then our pose-fidelity columns (keypoint error of ``evaluator(generated)`` for the hands and
the whole body, PCK@0.05 of the hands). A metric that cannot be computed is the string
``"n/a (reason)"`` -- missing weights are shown by :func:`pgmm.metrics.report` -- never a
number computed some other way. Frame metrics are running sums over batches of frames, so only
one video (and one batch of model activations) is in memory at a time.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pgmm.console import progress as progress_bar
from pgmm.data.loaders import SignVideoDataset
from pgmm.data.synth.dataset import RenderedSynthSigner
from pgmm.data.synth.identity import HELD_OUT_IDENTITIES
from pgmm.data.synth.signer import to_pose_sequence
from pgmm.metrics import LPIPS, MetricWeightsMissing, report
from pgmm.metrics.fvd import I3D, frechet_distance, i3d_features
from pgmm.metrics.image import l1, ssim
from pgmm.metrics.keypoints import keypoint_error, pck
from pgmm.metrics.recognizer import PoseCTCRecognizer, VideoGlossRecognizer
from pgmm.metrics.tcd import tcd
from pgmm.metrics.wer import GlossRecognizer, word_error_rate
from pgmm.models.pgmm import PGMM
from pgmm.models.pose_estimator import PoseEstimator
from pgmm.pose.heatmaps import pose_heatmaps
from pgmm.pose.sequence import PoseSequence
from pgmm.report import md_table
from pgmm.video import VideoWriter, atomic_target

__all__ = [
    "BATCH_SIZE",
    "COLUMN_DEFINITIONS",
    "DRIVES",
    "FVD_CLIP_FRAMES",
    "METRIC_COLUMNS",
    "TASKS",
    "MetricAccumulator",
    "atomic_write_text",
    "evaluate",
    "markdown_report",
    "markdown_table",
    "network_digest",
    "not_available",
    "write_doc_block",
    "write_results",
]

TASKS = ("reconstruction", "cross-person")
DRIVES = ("image", "pose")

#: JSON key -> table header, in the paper's column order (then our pose-fidelity columns).
METRIC_COLUMNS: dict[str, str] = {
    "l1": "L1 ↓",
    "ssim": "SSIM ↑",
    "lpips": "LPIPS ↓",
    "fvd": "FVD ↓",
    "tcd": "TCD ↓",
    "wer": "WER ↓",
    "ke_hands": "KE hands ↓",
    "ke_body": "KE body ↓",
    "pck_hands": "PCK@0.05 hands ↑",
}

_RECON = {
    "l1": "mean |generated - real| over pixels, channels and frames (values in [0, 1])",
    "ssim": "SSIM (Gaussian 11x11, sigma 1.5) of generated vs real frames, mean over frames",
    "lpips": "LPIPS v0.1 distance of generated vs real frames, mean over frames",
    "fvd": "Frechet distance of I3D logits of 16-frame clips: generated vs real videos",
    "tcd": "share of pixels whose change w.r.t. the real neighbour frames disagrees by > 0.5",
    "wer": "word error rate of the gloss recogniser on generated videos vs reference glosses "
    "(a pose recogniser reads the evaluator's keypoints)",
    "ke_hands": "mean distance (fraction of frame size) of evaluator(generated) to the true hand "
    "points",
    "ke_body": "mean distance (fraction of frame size) of evaluator(generated) to all 36 true "
    "points",
    "pck_hands": "share of visible hand points of evaluator(generated) within 0.05 of the truth",
}
_NO_PIXELS = "not defined: no ground-truth video of the source person doing the driving motion"
_CROSS = {
    **_RECON,
    "l1": _NO_PIXELS,
    "ssim": _NO_PIXELS,
    "lpips": _NO_PIXELS,
    "tcd": _NO_PIXELS + " (TCD against the driving signer would mostly measure identity)",
    "fvd": "Frechet distance of I3D logits of 16-frame clips: generated vs the real driving "
    "videos (distribution level, no pairing needed)",
    "ke_hands": "mean distance of evaluator(generated) to the driving signer's hand points "
    "(includes body-proportion differences between the two people)",
    "ke_body": "mean distance of evaluator(generated) to the driving signer's 36 points "
    "(includes body-proportion differences between the two people)",
    "pck_hands": "share of the driving signer's visible hand points that evaluator(generated) "
    "finds within 0.05",
}
_EXACT = "SynthSigner's drawing of the driving poses in the source person's look (exact)"
_CROSS_SYNTH = {
    **_CROSS,
    "l1": f"mean |generated - target| over pixels, channels and frames; target: {_EXACT}",
    "ssim": f"SSIM (Gaussian 11x11, sigma 1.5) of generated vs target frames; target: {_EXACT}",
    "lpips": f"LPIPS v0.1 distance of generated vs target frames; target: {_EXACT}",
    "tcd": "share of pixels whose change w.r.t. the target's neighbour frames disagrees by > 0.5;"
    f" target: {_EXACT}",
}
#: What each column means, per task (also written into ``metrics.json`` and ``metrics.md``).
#: ``"cross-person"`` on SynthSigner has an exact target video, elsewhere none.
COLUMN_DEFINITIONS: dict[str, dict[str, str]] = {
    "reconstruction": _RECON,
    "cross-person": _CROSS,
    "cross-person (SynthSigner)": _CROSS_SYNTH,
}

BATCH_SIZE = 16  # frames per model call: bounds activation memory at 256^2 on CPU
FVD_CLIP_FRAMES = 16  # the clip length of the FVD reference implementation
PCK_THRESHOLD = 0.05
COMPARISON_VIDEOS = 4

_NO_GT_REASON = "cross-person: no ground-truth video"


def not_available(reason: str) -> str:
    """The one spelling of a missing metric in tables and JSON: ``"n/a (reason)"``."""
    return f"n/a ({reason})"


def network_digest(network: torch.nn.Module) -> str:
    """A short content hash of a network's weights (parameters and buffers).

    Results record it so that a number always says which evaluator read the frames, and two
    networks can be told apart (or found identical) whatever folder they were loaded from.
    """
    h = hashlib.sha256()
    for key, value in sorted(network.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _video_recognizer(
    recognizer: GlossRecognizer | PoseCTCRecognizer | None, evaluator: PoseEstimator | None
) -> GlossRecognizer | None:
    """The WER recogniser of generated videos: a pose recogniser reads the *evaluator's*
    keypoints, never those of the ``P_e`` the renderer was trained against."""
    if isinstance(recognizer, PoseCTCRecognizer):
        if evaluator is None:
            raise ValueError("a pose recogniser reads keypoints of the frames: pass an evaluator")
        return VideoGlossRecognizer(recognizer, evaluator)
    if isinstance(recognizer, VideoGlossRecognizer) and (
        evaluator is None or network_digest(recognizer.estimator) != network_digest(evaluator)
    ):
        raise ValueError(
            "the recogniser reads keypoints with another network than the evaluator: pass the "
            "PoseCTCRecognizer itself, evaluate() attaches the evaluator"
        )
    return recognizer


# --------------------------------------------------------------------------- accumulation
class MetricAccumulator:
    """Running sums for every metric column, fed batch by batch and video by video.

    Why sums rather than a list of per-video means: the paper averages L1/SSIM/LPIPS over all
    frames (long videos weigh more), TCD over all interior frames, keypoint errors over all
    visible points and WER over all reference glosses; sums keep those weights exact while
    never holding more than one batch. Keypoints (36 x 3 floats per frame) and I3D features
    (400 floats per clip) are small, so they are kept and scored once at the end.

    ``unavailable`` maps a column to the reason it cannot be computed (e.g. no ground truth in
    the cross-person task); such a column ignores data and reports ``"n/a (reason)"``.
    """

    def __init__(
        self,
        lpips: LPIPS | MetricWeightsMissing | None = None,
        i3d: I3D | MetricWeightsMissing | None = None,
        recognizer: GlossRecognizer | None = None,
        evaluator_given: bool = True,
        unavailable: Mapping[str, str] | None = None,
    ) -> None:
        if isinstance(i3d, I3D) and i3d.weights_path is None:
            i3d = MetricWeightsMissing("<none loaded: call I3D.load_weights(path)>", "I3D weights")
        self.reasons: dict[str, str] = {}
        for key, metric, what in (("lpips", lpips, "LPIPS weights"), ("fvd", i3d, "I3D weights")):
            if metric is None or isinstance(metric, MetricWeightsMissing):
                self.reasons[key] = report(metric or MetricWeightsMissing("<none given>", what))
        self.lpips = lpips if isinstance(lpips, LPIPS) else None
        self.i3d = i3d if isinstance(i3d, I3D) else None
        self.recognizer = recognizer
        if recognizer is None:
            self.reasons["wer"] = not_available("no gloss recognizer given")
        if not evaluator_given:
            for key in ("ke_hands", "ke_body", "pck_hands"):
                self.reasons[key] = not_available("no evaluator given")
        for key, reason in (unavailable or {}).items():
            if key not in METRIC_COLUMNS:
                raise ValueError(f"unknown metric column {key!r}; known: {list(METRIC_COLUMNS)}")
            self.reasons[key] = not_available(reason)
        self.frames = 0
        self._l1 = self._ssim = self._lpips = 0.0
        self._tcd, self._tcd_frames = 0.0, 0
        self._real_feats: list[np.ndarray] = []
        self._fake_feats: list[np.ndarray] = []
        self._pred_points: list[np.ndarray] = []
        self._gt_points: list[np.ndarray] = []
        self._references: list[list[str]] = []
        self._hypotheses: list[list[str]] = []

    def wants(self, key: str) -> bool:
        """Whether column ``key`` is computed (callers skip expensive work otherwise)."""
        return key not in self.reasons

    def add_frames(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """L1, SSIM and LPIPS of a batch ``(N, 3, H, W)`` in [0, 1], weighted by its frames."""
        n = pred.shape[0]
        if self.wants("l1"):
            self._l1 += l1(pred, target) * n
        if self.wants("ssim"):
            self._ssim += ssim(pred, target) * n
        if self.lpips is not None and self.wants("lpips"):
            device = next(self.lpips.parameters()).device
            with torch.no_grad():
                self._lpips += float(self.lpips(pred.to(device), target.to(device)).sum())
        self.frames += n

    def add_tcd(
        self, pred: torch.Tensor, target: torch.Tensor, batch_size: int = BATCH_SIZE
    ) -> None:
        """TCD of one whole video ``(T, 3, H, W)``, computed in overlapping windows.

        Each window holds ``batch_size`` interior frames plus their two neighbours, so the
        float64 intermediates stay bounded for long videos; weighting every window by its
        interior frames gives exactly :func:`pgmm.metrics.tcd` of the whole video.
        """
        if not self.wants("tcd") or pred.shape[0] < 3:
            return
        t = pred.shape[0]
        for start in range(1, t - 1, batch_size):
            end = min(start + batch_size, t - 1)
            window = slice(start - 1, end + 1)
            self._tcd += tcd(pred[window], target[window]) * (end - start)
            self._tcd_frames += end - start

    def add_fvd(self, real: torch.Tensor, fake: torch.Tensor) -> None:
        """I3D features of the non-overlapping 16-frame clips of one real/generated video pair.

        Frames past the last full clip are dropped (FVD compares equal-length clips).
        """
        if self.i3d is None or not self.wants("fvd"):
            return
        n = min(real.shape[0], fake.shape[0]) // FVD_CLIP_FRAMES
        if n == 0:
            return
        for video, store in ((real, self._real_feats), (fake, self._fake_feats)):
            clips = video[: n * FVD_CLIP_FRAMES].reshape(n, FVD_CLIP_FRAMES, *video.shape[1:])
            store.append(i3d_features(clips, self.i3d))

    def add_keypoints(self, pred: torch.Tensor, truth: torch.Tensor) -> None:
        """``(N, 36, 2|3)`` points of ``evaluator(generated)`` and the reference ``(N, 36, 3)``."""
        if pred.shape[:-1] != truth.shape[:-1]:
            raise ValueError(f"keypoint shapes differ: {tuple(pred.shape)} vs {tuple(truth.shape)}")
        self._pred_points.append(pred[..., :2].detach().cpu().double().numpy())
        self._gt_points.append(truth.detach().cpu().double().numpy())

    def add_glosses(self, hypothesis: Sequence[str], reference: Sequence[str]) -> None:
        self._hypotheses.append(list(hypothesis))
        self._references.append(list(reference))

    def recognize(self, video: torch.Tensor, reference: Sequence[str]) -> None:
        """Run the recogniser on a generated video ``(T, 3, H, W)`` and keep its glosses."""
        if self.recognizer is not None and self.wants("wer"):
            self.add_glosses(self.recognizer.recognize(video), reference)

    # ------------------------------------------------------------------ result
    def _mean(self, key: str, total: float, count: int, empty: str) -> float | str:
        if key in self.reasons:
            return self.reasons[key]
        return total / count if count else not_available(empty)

    def _fvd(self) -> float | str:
        if "fvd" in self.reasons:
            return self.reasons["fvd"]
        clips = sum(len(f) for f in self._fake_feats)
        if clips < 2:
            return not_available(f"needs >= 2 clips of {FVD_CLIP_FRAMES} frames, got {clips}")
        stats = []
        for feats in (np.concatenate(self._real_feats), np.concatenate(self._fake_feats)):
            stats.append((feats.mean(axis=0), np.cov(feats, rowvar=False)))
        (mu1, s1), (mu2, s2) = stats
        return frechet_distance(mu1, s1, mu2, s2)

    def _keypoints(self) -> dict[str, float | str]:
        keys = ("ke_hands", "ke_body", "pck_hands")
        values: dict[str, float | str] = dict.fromkeys(keys, not_available("no frames scored"))
        if self._pred_points:
            pred, truth = np.concatenate(self._pred_points), np.concatenate(self._gt_points)
            visible = truth[..., 2] > 0
            errors = keypoint_error(pred, truth, visible)
            correct = pck(pred, truth, visible, threshold=PCK_THRESHOLD)
            scores = (errors["hands"], errors["whole_body"], correct["hands"])
            # NaN = no visible point of that group: not a score, and not valid JSON.
            values = {
                k: not_available("no visible keypoints") if math.isnan(v) else v
                for k, v in zip(keys, scores, strict=True)
            }
        return {k: self.reasons.get(k, values[k]) for k in keys}

    def result(self) -> dict[str, float | str]:
        """Every column of :data:`METRIC_COLUMNS`, in order: a float or ``"n/a (reason)"``."""
        if "wer" in self.reasons:
            wer: float | str = self.reasons["wer"]
        elif any(self._references):
            wer = word_error_rate(self._references, self._hypotheses)
        else:
            wer = not_available("no reference glosses")
        values: dict[str, float | str] = {
            "l1": self._mean("l1", self._l1, self.frames, "no frames"),
            "ssim": self._mean("ssim", self._ssim, self.frames, "no frames"),
            "lpips": self._mean("lpips", self._lpips, self.frames, "no frames"),
            "fvd": self._fvd(),
            "tcd": self._mean("tcd", self._tcd, self._tcd_frames, "videos under 3 frames"),
            "wer": wer,
            **self._keypoints(),
        }
        return {key: values[key] for key in METRIC_COLUMNS}


# --------------------------------------------------------------------------- data helpers
def _to_tensor(frames: np.ndarray) -> torch.Tensor:
    """``(T, H, W, 3)`` uint8 -> ``(T, 3, H, W)`` float in [0, 1]."""
    # A copy: rendered frames can be read-only views, which torch.from_numpy warns about.
    return torch.from_numpy(np.array(frames, dtype=np.uint8)).permute(0, 3, 1, 2).float() / 255


def _to_uint8(frames: torch.Tensor) -> np.ndarray:
    """``(T, 3, H, W)`` float -> ``(T, H, W, 3)`` uint8 for the comparison video."""
    return (frames.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()


def _points36(poses: PoseSequence | None) -> torch.Tensor | None:
    """PGMM36 ``(T, 36, 3)`` points of a pose sequence (any layout convertible to it)."""
    if poses is None:
        return None
    return torch.from_numpy(poses.to_layout("pgmm36").data.copy())


def _load_video(
    dataset: SignVideoDataset, i: int, max_frames: int | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Frames ``(T, 3, H, W)`` and PGMM36 poses ``(T, 36, 3)`` (or None) of video ``i``."""
    frames, poses = dataset.load_video(i)
    points = _points36(poses)
    if max_frames is not None:
        frames = frames[:max_frames]
        points = None if points is None else points[:max_frames]
    return _to_tensor(frames), points


def _held_out_identity(dataset: RenderedSynthSigner, i: int) -> int:
    """The held-out identity whose picture is video ``i``'s cross-person source: 10 and 11 in
    turn, skipping one the dataset itself is forced to."""
    held = [h for h in HELD_OUT_IDENTITIES if h != dataset.identity]
    return held[i % len(held)]


def _has_pixel_target(task: str, dataset: SignVideoDataset) -> bool:
    """Whether the pixel columns have frames to compare with: the real video for
    reconstruction, the exact drawing for cross-person on SynthSigner, none otherwise."""
    return task == "reconstruction" or isinstance(dataset, RenderedSynthSigner)


def _cross_person_target(dataset: RenderedSynthSigner, i: int, frames: int) -> torch.Tensor:
    """The exact cross-person target of video ``i``: its driving poses drawn in the look of
    the held-out identity that is its source (the first ``frames`` frames)."""
    drawn = dataset.load_frames(i, look_of=_held_out_identity(dataset, i))
    return _to_tensor(drawn[:frames])


def _cross_person_source(
    dataset: SignVideoDataset, i: int
) -> tuple[torch.Tensor, torch.Tensor | None, str]:
    """Source image ``(1, 3, H, W)``, its PGMM36 points ``(1, 36, 3)`` and who it shows.

    SynthSigner: the first frame of the same sentence rendered for a held-out identity
    (alternating 10/11, skipping one that the dataset itself is forced to), so appearance is
    unseen in training and the driving signer is always someone else. Other datasets: the
    first frame of the next video (cyclically) whose signer differs from video ``i``'s.
    """
    if isinstance(dataset, RenderedSynthSigner):
        identity = _held_out_identity(dataset, i)
        sentence = dataset.sentences[i]
        pose = dataset.signer.pose(sentence, identity)
        look = dataset.signer.identity_for(sentence, identity)
        frame = next(iter(dataset.signer.render(pose, look, dataset.size)))
        points = _points36(to_pose_sequence(pose, dataset.size)[0:1])
        return _to_tensor(frame[None]), points, f"identity {identity}"
    signer = dataset.records[i].signer
    n = len(dataset)
    for step in range(1, n):
        j = (i + step) % n
        if dataset.records[j].signer != signer:
            frames = dataset.load_frames(j)
            poses = dataset.load_poses(j)
            points = None if poses is None else _points36(poses[0:1])
            return _to_tensor(frames[:1]), points, f"signer {dataset.records[j].signer}"
    raise ValueError(
        f"cross-person evaluation needs videos of at least two signers; all {n} videos of "
        f"{dataset.name} ({dataset.split}) are by signer {signer!r}"
    )


# --------------------------------------------------------------------------- evaluation
def _check_arguments(
    model: PGMM,
    dataset: SignVideoDataset,
    task: str,
    drive: str,
    estimator: PoseEstimator | None,
    max_videos: int | None,
    max_frames: int | None,
    batch_size: int,
) -> None:
    """Refuse a run that could only give wrong numbers (or none) before any frame is drawn:
    a frame size or heatmap stride the model was not trained with would still produce videos,
    just meaningless ones."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if drive not in DRIVES:
        raise ValueError(f"drive must be one of {DRIVES}, got {drive!r}")
    for arg, value in (("max_videos", max_videos), ("max_frames", max_frames)):
        if value is not None and value < 1:
            raise ValueError(f"{arg} must be >= 1 or None, got {value}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    cfg = model.config
    if dataset.size != cfg.image_size:
        raise ValueError(f"dataset frames are {dataset.size}px but the model is {cfg.image_size}px")
    if estimator is not None and estimator.heatmap_stride != cfg.heatmap_stride:
        raise ValueError(
            f"P_e has heatmap stride {estimator.heatmap_stride}, the model {cfg.heatmap_stride}"
        )


def _check_independent_evaluator(
    estimator: PoseEstimator | None, evaluator: PoseEstimator | None
) -> None:
    """The evaluator must not be the ``P_e`` the renderer was trained against (see the module
    docstring): a renderer would be scored by its own examiner."""
    if (
        estimator is not None
        and evaluator is not None
        and network_digest(estimator) == network_digest(evaluator)
    ):
        raise ValueError(
            "the evaluator has the weights of the P_e given for heatmaps: score generated frames "
            "with a pose estimator the renderer was not trained against (models/evaluator)"
        )


@dataclass
class _EvaluationRun:
    """One evaluation of one model on one dataset: the per-video protocol of a task, and what
    the result row records about how the numbers were made (heatmap and keypoint sources,
    source people, frames).

    A video is generated batch by batch (:meth:`generate`); each batch is scored at once
    (:meth:`score_frames`: L1/SSIM/LPIPS, keypoint error and PCK) and the whole video after
    (:meth:`score_video`: TCD, FVD clips, WER), so only one video is held in memory.
    """

    model: PGMM
    dataset: SignVideoDataset
    task: str
    drive: str
    estimator: PoseEstimator | None
    evaluator: PoseEstimator | None
    metrics: MetricAccumulator
    batch_size: int
    heatmap_sources: set[str] = field(default_factory=set)
    keypoint_references: set[str] = field(default_factory=set)
    sources: list[str] = field(default_factory=list)
    frames: int = 0

    def __post_init__(self) -> None:
        self.device = next(self.model.parameters()).device
        exact = self.task == "cross-person" and _has_pixel_target(self.task, self.dataset)
        self.definitions = "cross-person (SynthSigner)" if exact else self.task
        self.needs_heatmaps = self.model.config.uses_pose or self.drive == "pose"

    def heatmaps(self, points: torch.Tensor | None, images: torch.Tensor) -> torch.Tensor:
        """Heatmaps as in training: drawn from the dataset's poses with the model's own stride
        and sigma, else read from ``images`` by ``P_e``."""
        cfg = self.model.config
        if points is not None:
            return pose_heatmaps(
                points.to(self.device), cfg.image_size, cfg.heatmap_stride, cfg.heatmap_sigma
            )
        if self.estimator is None:
            raise ValueError(
                f"{self.dataset.name} has no poses: pass a pose estimator (P_e) for the heatmaps"
            )
        with torch.no_grad():
            return self.estimator(images.to(self.device)).clamp(min=0)

    def source(
        self, i: int, target: torch.Tensor, points: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The source image ``(1, 3, H, W)`` of video ``i`` and its points: the video's own
        first frame for reconstruction, another person for cross-person animation."""
        if self.task == "reconstruction":
            self.sources.append("first frame")
            return target[:1], None if points is None else points[:1]
        source, source_points, who = _cross_person_source(self.dataset, i)
        self.sources.append(who)
        return source, source_points

    def generate(
        self,
        source: torch.Tensor,
        source_points: torch.Tensor | None,
        target: torch.Tensor,
        points: torch.Tensor | None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]]:
        """``(driving, driving points, generated)`` batches of one video, generated frames in
        [0, 1] on the CPU. ``drive="pose"`` encodes the source once and animates it from the
        heatmaps alone (our text-to-video path); ``"image"`` also shows the model the driving
        frames (:meth:`PGMM.reconstruct`, the paper's setting)."""
        source = source.to(self.device)
        state = None
        if self.drive == "pose":
            state = self.model.encode_source(source, self.heatmaps(source_points, source))
        for start in range(0, target.shape[0], self.batch_size):
            driving = target[start : start + self.batch_size]
            batch_points = None if points is None else points[start : start + self.batch_size]
            maps = None
            if self.needs_heatmaps:
                maps = self.heatmaps(batch_points, driving)
                self.heatmap_sources.add("P_e" if batch_points is None else "ground-truth poses")
            if state is not None:
                assert maps is not None
                pred = self.model.animate(state, maps)
            else:
                src = source.expand(driving.shape[0], -1, -1, -1)
                pred = self.model.reconstruct(src, driving.to(self.device), maps)
            yield driving, batch_points, pred.float().clamp(0, 1).cpu()

    def target(self, i: int, driving: torch.Tensor) -> torch.Tensor | None:
        """The frames the pixel columns compare video ``i`` with: the real video for
        reconstruction; for cross-person on SynthSigner its exact drawing in the source's look
        (:func:`_cross_person_target`); elsewhere none exists."""
        if not _has_pixel_target(self.task, self.dataset):
            return None
        if self.task == "reconstruction":
            return driving
        assert isinstance(self.dataset, RenderedSynthSigner)
        return _cross_person_target(self.dataset, i, len(driving))

    def score_frames(
        self,
        pred: torch.Tensor,
        driving: torch.Tensor,
        points: torch.Tensor | None,
        target: torch.Tensor | None,
    ) -> None:
        """Per-frame columns of one batch: L1, SSIM and LPIPS against the target frames (where
        the task has them, :meth:`target`), and the evaluator's keypoints of the generated
        frames against the driving poses -- or, without poses, against its own reading of the
        real frames -- for keypoint error and PCK."""
        if target is not None:
            self.metrics.add_frames(pred, target)
        if self.evaluator is None:
            return
        found = self.evaluator.keypoints(pred.to(self.device)).cpu()
        if points is not None:
            truth, reference = points, "ground-truth poses"
        else:
            truth = self.evaluator.keypoints(driving.to(self.device)).cpu()
            reference = "evaluator(driving)"
        self.keypoint_references.add(reference)
        self.metrics.add_keypoints(found, truth)

    def score_video(
        self,
        video: torch.Tensor,
        driving: torch.Tensor,
        target: torch.Tensor | None,
        glosses: list[str],
    ) -> None:
        """Whole-video columns: TCD against the target video (where there is one), the FVD
        clips of the real driving and the generated videos, and WER against the video's
        glosses."""
        if target is not None:
            self.metrics.add_tcd(video, target, self.batch_size)
        self.metrics.add_fvd(driving, video)
        self.metrics.recognize(video, glosses)
        self.frames += len(video)

    def evaluate_video(self, i: int, max_frames: int | None, writer: VideoWriter | None) -> None:
        """Generate and score video ``i``; with ``writer``, append its source | driving |
        generated frames to the comparison video."""
        real, points = _load_video(self.dataset, i, max_frames)
        source, source_points = self.source(i, real, points)
        target = self.target(i, real)
        generated: list[torch.Tensor] = []
        done = 0  # frames generated so far: where this batch's target frames start
        for driving, batch_points, pred in self.generate(source, source_points, real, points):
            batch_target = None if target is None else target[done : done + len(pred)]
            done += len(pred)
            generated.append(pred)
            self.score_frames(pred, driving, batch_points, batch_target)
            if writer is not None:
                tile = source.cpu().expand(driving.shape[0], -1, -1, -1)
                writer.write(_to_uint8(torch.cat([tile, driving, pred], dim=3)))
        glosses = self.dataset.records[i].gloss.split()
        self.score_video(torch.cat(generated), real, target, glosses)

    def row(self, label: str, videos: int, max_frames: int | None) -> dict[str, Any]:
        """The result row (see :func:`evaluate`), with the settings a reader needs to know
        what the numbers measured."""
        cfg = self.model.config
        return {
            "model": label,
            "variant": cfg.variant,
            "task": self.task,
            "drive": self.drive,
            "dataset": self.dataset.name,
            "split": self.dataset.split,
            "videos": videos,
            "frames": self.frames,
            "metrics": self.metrics.result(),
            "definitions": dict(COLUMN_DEFINITIONS[self.definitions]),
            "settings": {
                "image_size": cfg.image_size,
                "max_frames": max_frames,
                "batch_size": self.batch_size,
                "heatmaps": sorted(self.heatmap_sources) or None,
                "heatmap_sigma": cfg.heatmap_sigma,
                "keypoint_reference": sorted(self.keypoint_references) or None,
                "evaluator": None if self.evaluator is None else network_digest(self.evaluator),
                "sources": sorted(set(self.sources)),
                "fvd_clip_frames": FVD_CLIP_FRAMES,
                "pck_threshold": PCK_THRESHOLD,
            },
        }


def evaluate(
    model: PGMM,
    dataset: SignVideoDataset,
    task: str = "reconstruction",
    estimator: PoseEstimator | None = None,
    recognizer: GlossRecognizer | PoseCTCRecognizer | None = None,
    lpips: LPIPS | MetricWeightsMissing | None = None,
    i3d: I3D | MetricWeightsMissing | None = None,
    max_videos: int | None = None,
    max_frames: int | None = None,
    out_dir: str | Path | None = None,
    drive: str = "image",
    *,
    evaluator: PoseEstimator | None = None,
    name: str | None = None,
    batch_size: int = BATCH_SIZE,
    comparison_videos: int = COMPARISON_VIDEOS,
    fps: float = 25.0,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate ``model`` on ``dataset`` for one of :data:`TASKS`; returns one result row.

    The row is ``{"model", "variant", "task", "drive", "dataset", "split", "videos", "frames",
    "metrics": {column: float | "n/a (...)"} in METRIC_COLUMNS order, "definitions",
    "settings"}``. ``lpips``/``i3d`` may be a loaded metric, ``None`` or the
    :class:`MetricWeightsMissing` raised while loading it (so the table names the missing
    path). ``estimator`` (``P_e``) only supplies driving heatmaps when the dataset has no
    poses. ``evaluator`` -- an independent pose estimator, never ``P_e`` -- reads the generated
    frames (and, without dataset poses, the real ones) for the keypoint columns. ``recognizer``
    gives WER: a :class:`PoseCTCRecognizer` reads the evaluator's keypoints of each generated
    video, any other :class:`GlossRecognizer` reads the video itself (a
    :class:`VideoGlossRecognizer` must hold the evaluator). Heatmaps are drawn with the sigma
    saved in the model's config, the one it was trained with. With ``out_dir``:
    ``metrics.json``, ``metrics.md`` and ``comparison.mp4`` (source | driving | generated of
    the first ``comparison_videos`` videos, one after the other), each written atomically.

    ``max_frames`` truncates every video (for quick runs); WER then compares a truncated
    video with the full gloss sequence, so only full-length runs give a meaningful WER.
    """
    _check_arguments(model, dataset, task, drive, estimator, max_videos, max_frames, batch_size)
    recognizer = _video_recognizer(recognizer, evaluator)
    _check_independent_evaluator(estimator, evaluator)
    num_videos = min(len(dataset), max_videos or len(dataset))
    if num_videos == 0:
        raise ValueError(f"{dataset.name} ({dataset.split}) has no videos to evaluate")
    model.eval()
    for network in (estimator, evaluator):
        if network is not None:
            network.eval()
    no_ground_truth = {k: _NO_GT_REASON for k in ("l1", "ssim", "lpips", "tcd")}
    metrics = MetricAccumulator(
        lpips,
        i3d,
        recognizer,
        evaluator_given=evaluator is not None,
        unavailable=None if _has_pixel_target(task, dataset) else no_ground_truth,
    )
    run = _EvaluationRun(model, dataset, task, drive, estimator, evaluator, metrics, batch_size)
    out = Path(out_dir) if out_dir is not None else None
    label = name or model.config.variant
    with ExitStack() as stack:
        writer = None
        if out is not None and comparison_videos > 0:
            out.mkdir(parents=True, exist_ok=True)
            writer = stack.enter_context(VideoWriter(out / "comparison.mp4", fps=fps))
        bar = progress_bar(
            range(num_videos), desc=f"eval {label} ({task})", unit="video", disable=not progress
        )
        for i in bar:
            run.evaluate_video(i, max_frames, writer if i < comparison_videos else None)
    result = run.row(label, num_videos, max_frames)
    if out is not None:  # after the video is complete: metrics.json marks a finished run
        write_results(out, [result])
    return result


def keypoint_ceiling(
    dataset: RenderedSynthSigner,
    task: str,
    evaluator: PoseEstimator,
    max_videos: int | None = None,
    max_frames: int | None = None,
    batch_size: int = BATCH_SIZE,
) -> dict[str, float | str]:
    """The keypoint columns (hand and body keypoint error, hand PCK) that a *perfect* renderer
    would get on ``task``: ``evaluator`` reading SynthSigner's own drawing of each video's
    driving poses -- the real video for reconstruction; for cross-person the same poses drawn
    in the look of the held-out identity that :func:`evaluate` uses as the source.

    Why: those columns measure the renderer through the evaluator, and the evaluator reads some
    looks far worse than others (its card: hand PCK@0.05 0.90 on identity 10, 0.53 on 11), so
    a goal on them is only reachable up to this figure. Same videos, frames and scoring as
    :func:`evaluate` with ``drive="pose"`` (``max_videos`` / ``max_frames`` as there).
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    metrics = MetricAccumulator()
    evaluator.eval()
    device = next(evaluator.parameters()).device
    for i in range(min(len(dataset), max_videos or len(dataset))):
        frames, points = _load_video(dataset, i, max_frames)
        if points is None:
            raise ValueError(f"{dataset.name} video {i} has no poses to score against")
        if task == "cross-person":
            frames = _cross_person_target(dataset, i, len(points))
        for start in range(0, len(points), batch_size):
            with torch.no_grad():
                found = evaluator.keypoints(frames[start : start + batch_size].to(device))
            metrics.add_keypoints(found.cpu(), points[start : start + batch_size])
    return {k: metrics.result()[k] for k in ("ke_hands", "ke_body", "pck_hands")}


# --------------------------------------------------------------------------- reporting
def _cell(value: Any) -> str:
    """A metric value for a markdown cell: numbers via :func:`report`, strings escaped."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return report(value)
    return str(value).replace("|", "\\|")


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """One markdown table of several evaluation rows (models, variants, tasks), paper order.

    Rows are the dicts returned by :func:`evaluate` (or read back from ``metrics.json``);
    a column a row lacks shows as ``n/a (not evaluated)``, so results of different runs can be
    merged into one table (docs/results.md).
    """
    header = ["Model", "Variant", "Task", "Drive", *METRIC_COLUMNS.values()]
    table = []
    for row in rows:
        metrics = row.get("metrics", {})
        cells = [_cell(row.get(k, "")) for k in ("model", "variant", "task", "drive")]
        cells += [_cell(metrics.get(k, not_available("not evaluated"))) for k in METRIC_COLUMNS]
        table.append(cells)
    return md_table(header, table) + "\n"


def markdown_report(rows: Sequence[Mapping[str, Any]]) -> str:
    """``metrics.md``: the table plus what every column means for the tasks it contains."""
    parts = ["# PGMM evaluation\n", markdown_table(rows)]
    explained: list[Mapping[str, str]] = []
    for row in rows:  # a row's own definitions: cross-person has two sets (exact target or not)
        task = row.get("task", "")
        definitions = row.get("definitions") or COLUMN_DEFINITIONS.get(task)
        if not definitions or definitions in explained:
            continue
        explained.append(definitions)
        parts.append(f"\n**{task}** columns:\n")
        for key, label in METRIC_COLUMNS.items():
            parts.append(f"- {label}: {definitions[key]}\n")
    return "".join(parts)


def atomic_write_text(path: Path, text: str) -> None:
    """Readers (docs build, dashboards) never see a half-written file."""
    with atomic_target(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_doc_block(path: str | Path, begin: str, end: str, body: str) -> None:
    """Replace only the generated block between the markers ``begin`` and ``end`` of a
    document (appended when the document has none yet), so that hand-written text around it
    -- the reading of a table, other sections -- survives every re-run of the command."""
    path = Path(path)
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    block = f"{begin}\n{body.strip()}\n{end}"
    if begin in text and end in text.split(begin, 1)[1]:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = (text.rstrip() + "\n\n" if text.strip() else "") + block + "\n"
    atomic_write_text(path, text)


def write_results(out_dir: str | Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write ``metrics.json`` (``{"columns", "results"}``) and ``metrics.md`` atomically.

    The JSON is strict (no NaN): every metric is a finite number or an ``"n/a (...)"`` string.
    """
    out = Path(out_dir)
    payload = {"columns": list(METRIC_COLUMNS), "results": list(rows)}
    atomic_write_text(
        out / "metrics.json", json.dumps(payload, indent=2, ensure_ascii=False, allow_nan=False)
    )
    atomic_write_text(out / "metrics.md", markdown_report(rows))
