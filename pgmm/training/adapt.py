"""Signer adaptation: fine-tune PGMM on one short real clip of a person (self-reenactment).

No pretrained model for real people exists here, and the shipped PGMM only ever saw
SynthSigner. What makes a real person renderable is the paper's own training signal applied to
that person: random (source, driving) frame pairs of *their* clip, driving poses from real
labels. The recipe, and why:

* Labels: MediaPipe Holistic (:mod:`pgmm.pose.mediapipe_labels`) replaces P_e. Our P_e is a
  SynthSigner model; on real frames its keypoints are measured (``pe_pck`` in the report) to be
  far worse than MediaPipe's, so the driving and source heatmaps come from the labels, and
  L_pd -- which needs P_e on the *generated* frame -- is switched off for adaptation.
* Frames: a square crop around the person (from the labels, the same for every frame), resized
  to the model's resolution. The clip is split three ways in time (:func:`split_clip`): the
  first frames train; the last ``holdout`` share is never trained on and is cut in two --
  *validation* frames (re-enacted pose-driven, the path text uses) pick the best step and stop
  early, and the final *test* frames are scored only once, for the report, so the reported
  numbers are not chosen on the frames they are measured on.
* Report: L1, SSIM and keypoint agreement on the test frames *before* adaptation (the
  SynthSigner model animating the first frame as a photo -- the "one photo only" case) and
  after; keypoints of generated frames are found by MediaPipe again, so the score does not
  depend on our own P_e. ``frames`` gives each part's ``[start, stop)`` frame indices.

A run folder is resumable (the trainer's checkpoints; Ctrl-C / SIGTERM stops it with a
checkpoint); :func:`adapt_signer` returns the report and leaves ``RUN/model`` (the best step)
for the signer registry.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from pgmm.data.loaders import SignVideoDataset, VideoRecord, crop_resize, square_crop_box
from pgmm.metrics.image import l1, ssim
from pgmm.metrics.keypoints import pck
from pgmm.models.pgmm import PGMM
from pgmm.models.pose_estimator import PoseEstimator
from pgmm.pose import layout as L
from pgmm.pose.agreement import part_distances
from pgmm.pose.heatmaps import pose_heatmaps
from pgmm.pose.sequence import PoseSequence
from pgmm.training.config import TrainConfig
from pgmm.training.trainer import PGMMTrainer
from pgmm.video import contact_sheet, iter_frames, probe

__all__ = [
    "AdaptConfig",
    "ClipSplit",
    "LabelledClip",
    "adapt_signer",
    "holdout_cut",
    "holdout_scores",
    "person_box",
    "split_clip",
]

#: Points that bound a signer in the frame: upper body, face and both hands.
_BOX_POINTS = np.r_[0:11, L.FACE.start : L.RIGHT_HAND.stop]


@dataclass
class AdaptConfig:
    """Adaptation hyper-parameters; the defaults fit a few-second clip on a 2-core CPU."""

    steps: int = 300
    batch_size: int = 4
    lr: float = 1e-4  # half the from-scratch rate: the SynthSigner weights are a start point
    holdout: float = 0.2  # tail share of the clip never trained on: validation, then test
    validate_every: int = 25
    patience: int = 4
    min_frames: int = 40  # below ~1.5 s there are too few poses to learn a person from
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.05 <= self.holdout <= 0.5:
            raise ValueError(f"holdout must be in [0.05, 0.5], got {self.holdout}")
        if self.steps < 1 or self.batch_size < 1 or self.validate_every < 1:
            raise ValueError("steps, batch_size and validate_every must be >= 1")


def holdout_cut(num_frames: int, holdout: float, minimum: int = 4) -> int:
    """First held-out frame: the clip's last ``holdout`` share (at least ``minimum`` frames)."""
    return num_frames - max(minimum, round(num_frames * holdout))


@dataclass(frozen=True)
class ClipSplit:
    """Consecutive frame ranges of one clip: train, then validation, then test."""

    train: range
    validation: range
    test: range

    def to_dict(self) -> dict[str, list[int]]:
        """``{"train": [start, stop], ...}``: half-open frame index ranges, for the report."""
        return {name: [part.start, part.stop] for name, part in dataclasses.asdict(self).items()}


def split_clip(num_frames: int, holdout: float) -> ClipSplit:
    """Train on the first frames; the held-out tail (:func:`holdout_cut`, at least 8 frames)
    is halved into validation (best step, early stopping) and, last, test (reported).

    The test frames come last so they are the furthest in time from anything trained on or
    selected with; the validation frames sit between them and the training frames.
    """
    cut = holdout_cut(num_frames, holdout, minimum=8)
    if cut < 1:
        raise ValueError(f"a clip of {num_frames} frames leaves no training frames")
    middle = cut + (num_frames - cut) // 2
    return ClipSplit(range(0, cut), range(cut, middle), range(middle, num_frames))


def person_box(labels: PoseSequence) -> tuple[float, float, float, float]:
    """Normalised ``(x0, y0, x1, y1)`` around the signer over the whole clip, with margins.

    Percentiles (2-98) of the labelled points, so one misplaced hand does not widen the crop;
    the top grows by a quarter of the face height because the face points stop at the brows.
    """
    pts = labels.data[:, _BOX_POINTS]
    ok = pts[..., 2] > 0
    if not ok.any():
        raise ValueError("the labels mark no point of the signer")
    xs, ys = pts[..., 0][ok], pts[..., 1][ok]
    x0, x1 = np.percentile(xs, [2, 98])
    y0, y1 = np.percentile(ys, [2, 98])
    face = labels.data[:, L.FACE]
    face_ok = face[..., 2] > 0
    face_h = np.ptp(face[..., 1][face_ok]) if face_ok.sum() > 2 else 0.1
    pad = 0.08 * max(x1 - x0, y1 - y0)
    return (
        float(x0 - pad),
        float(y0 - pad - 0.25 * face_h),
        float(x1 + pad),
        float(y1 + pad),
    )


class LabelledClip(SignVideoDataset):
    """The ``frames`` of one real clip and their labels as a one-video dataset; every frame
    cropped to the same square around the signer. ``split`` (train, dev or test) only names
    them: adaptation's validation frames are its ``dev``."""

    name = "labelled clip"
    layout = "VIDEO (any PyAV-readable file) + LABELS (.npz PoseSequence, one pose per frame)"

    def __init__(self, video: Path, labels: Path, split: str, size: int, frames: range) -> None:
        if not len(frames) or frames.step != 1:
            raise ValueError(f"{split}: frames must be a non-empty contiguous range, got {frames}")
        self._video, self._labels, self._frames = Path(video), Path(labels), frames
        super().__init__(self._video.parent, split, size)

    def _scan(self) -> list[VideoRecord]:
        pose = PoseSequence.load(self._labels)
        frames = (self._frames.start, self._frames.stop)
        return [
            VideoRecord(
                id=f"{self._video.stem}:{self.split}",
                split=self.split,
                source=self._video,
                signer=self._video.stem,
                gloss="",
                text="",
                language="",
                num_frames=frames[1] - frames[0],
                bbox=person_box(pose),
                frame_range=frames,
                pose_path=self._labels,
            )
        ]


def source_signer(video: Path, labels: PoseSequence, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The signer's source image (first frame, cropped, ``size``\\ :sup:`2`) and its pose in
    the crop's coordinates -- what the registry stores and PGMM animates."""
    first = next(iter(iter_frames(video)))
    height, width = first.shape[:2]
    left, top, side = square_crop_box(width, height, person_box(labels))
    pose = labels.data[0].copy()
    pose[:, 0] = (pose[:, 0] * width - left) / side
    pose[:, 1] = (pose[:, 1] * height - top) / side
    return crop_resize(first, (left, top, side), size), pose


def _to_tensor(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div(255)


def _animate(
    model: PGMM, source: np.ndarray, source_pose: np.ndarray, poses: np.ndarray
) -> torch.Tensor:
    """Pose-driven frames (the text path): the source image in every pose of ``poses``, with
    the heatmaps drawn as the model was trained (its config's stride and sigma)."""
    cfg, device = model.config, next(model.parameters()).device
    maps, src_maps = (
        pose_heatmaps(torch.from_numpy(p), cfg.image_size, cfg.heatmap_stride, cfg.heatmap_sigma)
        for p in (poses, source_pose[None])
    )
    with torch.no_grad():
        state = model.encode_source(_to_tensor(source[None]).to(device), src_maps.to(device))
        frames = [model.animate(state, m.to(device)).float().cpu() for m in maps.split(8)]
    return torch.cat(frames).clamp(0, 1)


def _mediapipe_keypoints(frames: torch.Tensor) -> np.ndarray:
    """MediaPipe on generated frames (upscaled to 256 px: it misses small bodies)."""
    from pgmm.pose.mediapipe_labels import holistic, label_frame

    images = (frames.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    with holistic(static_image_mode=True) as graph:
        return np.stack(
            [
                label_frame(graph, np.asarray(Image.fromarray(im).resize((256, 256), 3)))
                for im in images
            ]
        )


def holdout_scores(
    model: PGMM,
    frames: np.ndarray,
    poses: np.ndarray,
    source: np.ndarray,
    source_pose: np.ndarray,
    keypoints: bool = True,
) -> tuple[dict[str, float], np.ndarray]:
    """Scores of ``model`` re-enacting the held-out ``frames`` from their labelled ``poses``.

    Returns the scores and the generated frames (uint8). ``keypoints`` adds MediaPipe's
    agreement between generated and real frames, in shoulder widths (lower is better), and
    the share of generated frames where it finds each hand.
    """
    model.eval()
    generated = _animate(model, source, source_pose, poses)
    real = _to_tensor(frames)
    scores = {"l1": l1(generated, real), "ssim": ssim(generated, real)}
    if keypoints:
        found = _mediapipe_keypoints(generated)
        for part, d in part_distances(found, poses).items():
            scores[f"ke_{part.replace(' ', '_')}"] = d["mean"]
        for side, hand in (("left", L.LEFT_HAND), ("right", L.RIGHT_HAND)):
            scores[f"{side}_hand_found"] = float((found[:, hand, 2] > 0).any(axis=1).mean())
    out = (generated.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    return scores, out


def estimator_pck(estimator: PoseEstimator, frames: np.ndarray, poses: np.ndarray) -> dict:
    """PCK@0.05 of P_e on real frames against the MediaPipe labels (PGMM-36 points)."""
    device = next(estimator.parameters()).device
    found = estimator.keypoints(_to_tensor(frames).to(device)).cpu().numpy()
    truth = L.wholebody_to_pgmm36(poses)
    return pck(found, truth, truth[..., 2] > 0)


def adapt_signer(
    video: str | Path,
    base: PGMM,
    run_dir: str | Path,
    labels: PoseSequence | None = None,
    config: AdaptConfig | None = None,
    estimator: PoseEstimator | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """Fine-tune ``base`` on ``video``; returns the report (also ``RUN/report.json``).

    ``labels`` defaults to MediaPipe's (computed once, kept in ``RUN/labels.npz``, so a resumed
    run does not label again). ``estimator`` (P_e) only adds its measured PCK (on the test
    frames) to the report. The split is kept in ``RUN/split.json``; a run folder trained with
    another split is refused rather than resumed.
    """
    config = config or AdaptConfig()
    video, run_dir = Path(video), Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    labels_path = run_dir / "labels.npz"
    if labels is None and labels_path.exists():
        labels = PoseSequence.load(labels_path)
    if labels is None:
        from pgmm.pose.mediapipe_labels import label_video

        labels = label_video(video, progress=progress)
    info = probe(video)
    n = min(len(labels), info.num_frames)
    if n < config.min_frames:
        raise ValueError(
            f"{video}: {n} frames is too short to adapt to; give a clip of at least "
            f"{config.min_frames} frames ({config.min_frames / info.fps:.1f} s at {info.fps:g} fps)"
        )
    labels = labels[:n]
    labels.save(labels_path)
    size = base.config.image_size
    split = split_clip(n, config.holdout)
    _check_split(run_dir, split)
    train = LabelledClip(video, labels_path, "train", size, split.train)
    val = LabelledClip(video, labels_path, "dev", size, split.validation)
    test = LabelledClip(video, labels_path, "test", size, split.test)
    val_frames, val_poses = val.load_frames(0), val.require_poses(0).data
    test_frames, test_poses = test.load_frames(0), test.require_poses(0).data
    source, source_pose = train.load_frames(0)[0], train.require_poses(0).data[0]

    mcfg = dataclasses.replace(
        base.config, loss_weights={**base.config.loss_weights, "pose_distance": 0.0}
    )
    pairs = config.batch_size * config.validate_every  # one epoch = one validation period
    tcfg = TrainConfig(
        epochs=-(-config.steps // config.validate_every),
        pairs_per_video=pairs,
        batch_size=config.batch_size,
        lr=config.lr,
        dropout_start_p=0.0,  # TPS dropout helps from scratch; it only blurs a fine-tune
        dropout_max_p=0.0,
        max_steps=config.steps,
        log_every=5,
        sample_every=config.validate_every,
        checkpoint_every=config.validate_every,
        amp=False,
        seed=config.seed,
    )

    def validate(model: PGMM) -> float:
        return holdout_scores(model, val_frames, val_poses, source, source_pose,
                              keypoints=False)[0]["l1"]  # fmt: skip

    trainer = PGMMTrainer(
        mcfg,
        tcfg,
        train,
        run_dir / "train",
        device=device,
        progress=progress,
        init_from=base,
        validator=validate,
        validate_every=config.validate_every,
        patience=config.patience,
    )
    start = time.perf_counter()
    state = trainer.run()
    seconds = time.perf_counter() - start
    # Scored once, after training: nothing above has seen the test frames.
    before, before_frames = holdout_scores(base, test_frames, test_poses, source, source_pose)
    adapted = PGMM.from_pretrained(run_dir / "train" / "model").eval()
    after, after_frames = holdout_scores(adapted, test_frames, test_poses, source, source_pose)
    report: dict[str, Any] = {
        "video": str(video),
        # [start, stop) frame indices: trained on, best step chosen on, scored on.
        "frames": {**split.to_dict(), "fps": info.fps},
        "steps": state.global_step,
        "stopped_early": state.stopped_early,
        "best_validation_l1": state.best_score,  # on the validation frames
        "scored_on": "test",
        "train_seconds": round(seconds, 1),
        "device": device,
        "before": before,
        "after": after,
        "config": dataclasses.asdict(config),
    }
    if estimator is not None:
        report["pe_pck"] = estimator_pck(estimator, test_frames, test_poses)
    # Rows: real test frames, before, after; each row starts with the source image.
    rows = [
        np.concatenate([source[None], f[:7]]) for f in (test_frames, before_frames, after_frames)
    ]
    sheet = contact_sheet(np.concatenate(rows), cols=8)
    Image.fromarray(sheet).save(run_dir / "contact_sheet.png")
    report = _json_safe(report)
    (run_dir / "report.json").write_text(json.dumps(report, indent=2))
    return report


def _check_split(run_dir: Path, split: ClipSplit) -> None:
    """Record the split in ``RUN/split.json``; refuse a training folder made with another one.

    Resuming a run whose best step was chosen on other frames (an older version validated and
    scored on one held-out tail) would report test numbers that the selection has seen.
    """
    path, wanted = run_dir / "split.json", split.to_dict()
    trained = (run_dir / "train" / "checkpoints").exists()
    recorded = json.loads(path.read_text()) if path.exists() else None
    if trained and recorded != wanted:
        raise ValueError(
            f"{run_dir} was trained with another train/validation/test split "
            f"({recorded or 'one held-out tail, before the three-way split'}); use a new work "
            "folder"
        )
    path.write_text(json.dumps(wanted))


def _json_safe(value: Any) -> Any:
    """NaN (a part MediaPipe never found) -> ``None``: strict JSON has no NaN."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, float) and value != value:
        return None
    return value
