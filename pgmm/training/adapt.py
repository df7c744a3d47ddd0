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
  to the model's resolution. The last ``holdout`` share of the clip is never trained on: it
  validates (pose-driven, the path text uses), picks the best step and stops early.
* Report: L1, SSIM and keypoint agreement on the held-out frames *before* adaptation (the
  SynthSigner model animating the first frame as a photo -- the "one photo only" case) and
  after; keypoints of generated frames are found by MediaPipe again, so the score does not
  depend on our own P_e.

A run folder is resumable (the trainer's checkpoints); :func:`adapt_signer` returns the report
and leaves ``RUN/model`` (the best step) for the signer registry.
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
from pgmm.pose.sequence import PoseSequence
from pgmm.training.config import TrainConfig
from pgmm.training.trainer import PGMMTrainer, pose_heatmaps
from pgmm.video import contact_sheet, iter_frames, probe

__all__ = [
    "AdaptConfig",
    "LabelledClip",
    "adapt_signer",
    "holdout_cut",
    "holdout_scores",
    "person_box",
]

#: Points that bound a signer in the frame: upper body, face and both hands.
_BOX_POINTS = np.r_[0:11, L.FACE.start : L.RIGHT_HAND.stop]


@dataclass
class AdaptConfig:
    """Adaptation hyper-parameters; the defaults fit a few-second clip on a 2-core CPU."""

    steps: int = 300
    batch_size: int = 4
    lr: float = 1e-4  # half the from-scratch rate: the SynthSigner weights are a start point
    holdout: float = 0.2  # tail share of the clip kept for validation
    validate_every: int = 25
    patience: int = 4
    min_frames: int = 40  # below ~1.5 s there are too few poses to learn a person from
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.05 <= self.holdout <= 0.5:
            raise ValueError(f"holdout must be in [0.05, 0.5], got {self.holdout}")
        if self.steps < 1 or self.batch_size < 1 or self.validate_every < 1:
            raise ValueError("steps, batch_size and validate_every must be >= 1")


def holdout_cut(num_frames: int, holdout: float) -> int:
    """First held-out frame: the clip's last ``holdout`` share (at least 4 frames) validates."""
    return num_frames - max(4, round(num_frames * holdout))


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
    """One real clip and its labels: frames ``[0, cut)`` for ``train``, ``[cut, end)`` for
    ``dev``; every frame cropped to the same square around the signer."""

    name = "labelled clip"
    layout = "VIDEO (any PyAV-readable file) + LABELS (.npz PoseSequence, one pose per frame)"

    def __init__(
        self, video: Path, labels: Path, split: str, size: int, cut: int, num_frames: int
    ) -> None:
        self._video, self._labels, self._cut, self._n = Path(video), Path(labels), cut, num_frames
        super().__init__(self._video.parent, split, size)

    def _scan(self) -> list[VideoRecord]:
        pose = PoseSequence.load(self._labels)
        frames = (0, self._cut) if self.split == "train" else (self._cut, self._n)
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


def _animate(model: PGMM, source: np.ndarray, source_pose: np.ndarray, poses: np.ndarray,
             sigma: float) -> torch.Tensor:  # fmt: skip
    """Pose-driven frames (the text path): the source image in every pose of ``poses``."""
    cfg = model.config
    device = next(model.parameters()).device
    maps = pose_heatmaps(torch.from_numpy(poses), cfg.image_size, cfg.heatmap_stride, sigma)
    src_maps = pose_heatmaps(
        torch.from_numpy(source_pose[None]), cfg.image_size, cfg.heatmap_stride, sigma
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
    sigma: float = TrainConfig.heatmap_sigma,
    keypoints: bool = True,
) -> tuple[dict[str, float], np.ndarray]:
    """Scores of ``model`` re-enacting the held-out ``frames`` from their labelled ``poses``.

    Returns the scores and the generated frames (uint8). ``keypoints`` adds MediaPipe's
    agreement between generated and real frames, in shoulder widths (lower is better), and
    the share of generated frames where it finds each hand.
    """
    model.eval()
    generated = _animate(model, source, source_pose, poses, sigma)
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
    run does not label again). ``estimator`` (P_e) only adds its measured PCK to the report.
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
    cut = holdout_cut(n, config.holdout)
    train = LabelledClip(video, labels_path, "train", size, cut, n)
    dev = LabelledClip(video, labels_path, "dev", size, cut, n)
    dev_frames, dev_poses = dev.load_frames(0), dev.load_poses(0).data
    source, source_pose = train.load_frames(0)[0], train.load_poses(0).data[0]

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
        return holdout_scores(model, dev_frames, dev_poses, source, source_pose,
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
    before, before_frames = holdout_scores(base, dev_frames, dev_poses, source, source_pose)
    start = time.perf_counter()
    state = trainer.run()
    seconds = time.perf_counter() - start
    adapted = PGMM.from_pretrained(run_dir / "train" / "model").eval()
    after, after_frames = holdout_scores(adapted, dev_frames, dev_poses, source, source_pose)
    report: dict[str, Any] = {
        "video": str(video),
        "frames": {"train": cut, "holdout": n - cut, "fps": info.fps},
        "steps": state.global_step,
        "stopped_early": state.stopped_early,
        "best_validation_l1": state.best_score,
        "train_seconds": round(seconds, 1),
        "device": device,
        "before": before,
        "after": after,
        "config": dataclasses.asdict(config),
    }
    if estimator is not None:
        report["pe_pck"] = estimator_pck(estimator, dev_frames, dev_poses)
    # Rows: real held-out frames, before, after; each row starts with the source image.
    rows = [
        np.concatenate([source[None], f[:7]]) for f in (dev_frames, before_frames, after_frames)
    ]
    sheet = contact_sheet(np.concatenate(rows), cols=8)
    Image.fromarray(sheet).save(run_dir / "contact_sheet.png")
    report = _json_safe(report)
    (run_dir / "report.json").write_text(json.dumps(report, indent=2))
    return report


def _json_safe(value: Any) -> Any:
    """NaN (a part MediaPipe never found) -> ``None``: strict JSON has no NaN."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, float) and value != value:
        return None
    return value
