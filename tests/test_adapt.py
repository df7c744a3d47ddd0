"""Signer adaptation: the train / validation / test split of the clip, the fine-tuning loop on a
real clip (a few steps of a tiny PGMM) that selects on validation and reports on test frames,
early stopping, bad clips, the registry's adapted signers and the renderer using their
weights."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny import TINY_PGMM

from pgmm.models.config import PGMMConfig
from pgmm.models.pgmm import PGMM
from pgmm.pose.sequence import PoseSequence
from pgmm.training.adapt import (
    AdaptConfig,
    LabelledClip,
    adapt_signer,
    holdout_cut,
    holdout_scores,
    person_box,
    source_signer,
    split_clip,
)
from pgmm.video import VideoError, write_video
from slp_pipeline.cli import main as slp
from slp_pipeline.signers import SignerExists, SignerProtected, SignerRegistry
from slp_pipeline.stages import PGMMRenderer

STEPS = 4


def _tiny(seed: int) -> PGMM:
    torch.manual_seed(seed)
    return PGMM(PGMMConfig(variant="full", image_size=128, **TINY_PGMM)).eval()


@pytest.fixture(scope="module")
def clip(shared_data: Path) -> tuple[Path, PoseSequence]:
    """The ASL clip (107 frames) and its shipped MediaPipe labels: no labelling run needed."""
    folder = shared_data / "video" / "asl-what-is-your-name"
    return folder / "what-is-your-name.mp4", PoseSequence.load_pose(
        folder / "what-is-your-name.pose"
    )


@pytest.fixture(scope="module")
def adapted(clip, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, PGMM]:
    pytest.importorskip("mediapipe")  # the report scores generated frames with MediaPipe
    video, labels = clip
    run = tmp_path_factory.mktemp("adapt")
    base = _tiny(0)
    config = AdaptConfig(steps=STEPS, validate_every=2, batch_size=2)
    report = adapt_signer(video, base, run, labels=labels, config=config, progress=False)
    return run, report, base


@pytest.mark.parametrize("frames", [40, 41, 107, 135, 1000])
def test_split_is_disjoint_consecutive_and_keeps_test_last(frames: int) -> None:
    split = split_clip(frames, AdaptConfig.holdout)
    parts = [split.train, split.validation, split.test]
    assert [p.start for p in parts] == [0, split.train.stop, split.validation.stop]
    assert split.test.stop == frames and all(len(p) >= 4 for p in parts)
    seen = [set(p) for p in parts]
    assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])
    assert set().union(*seen) == set(range(frames))
    assert split.train.stop == holdout_cut(frames, AdaptConfig.holdout, minimum=8)
    assert split.to_dict()["test"] == [split.test.start, frames]


def test_split_of_a_clip_too_short_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="no training frames"):
        split_clip(8, 0.2)


def _scores(model: PGMM, run: Path, video: Path, part: range, split: str) -> dict[str, float]:
    """``model``'s L1/SSIM re-enacting ``part`` of the clip, computed here independently."""
    labels = run / "labels.npz"
    train = LabelledClip(video, labels, "train", 128, range(0, 1))
    frames = LabelledClip(video, labels, split, 128, part)
    source, source_pose = train.load_frames(0)[0], train.load_poses(0).data[0]
    args = (frames.load_frames(0), frames.load_poses(0).data, source, source_pose)
    return holdout_scores(model, *args, keypoints=False)[0]


def test_adaptation_selects_on_validation_and_reports_on_test_frames(adapted, clip) -> None:
    run, report, base = adapted
    video, _ = clip
    split = split_clip(107, AdaptConfig.holdout)
    assert report["steps"] == STEPS and report["scored_on"] == "test"
    assert report["frames"] == {"train": [0, 86], "validation": [86, 96], "test": [96, 107],
                                "fps": 25.0}  # fmt: skip
    assert report["frames"] == {**split.to_dict(), "fps": 25.0}
    rows = list(csv.DictReader((run / "train" / "validation.csv").open()))
    assert [int(r["step"]) for r in rows] == [2, 4]
    best = min(float(r["score"]) for r in rows)
    assert report["best_validation_l1"] == pytest.approx(best, abs=1e-6)
    tuned = PGMM.from_pretrained(run / "train" / "model")
    # The registered model is the best step: the selection's L1 on the validation frames ...
    validation = _scores(tuned, run, video, split.validation, "dev")
    assert validation["l1"] == pytest.approx(best, abs=1e-5)
    # ... while "before" and "after" are the base's and its scores on the test frames.
    after = _scores(tuned, run, video, split.test, "test")
    before = _scores(base, run, video, split.test, "test")
    for key in ("l1", "ssim"):
        assert report["after"][key] == pytest.approx(after[key], abs=1e-5)
        assert report["before"][key] == pytest.approx(before[key], abs=1e-5)
    assert abs(report["after"]["l1"] - best) > 1e-4  # other frames, another number
    for key in ("l1", "ssim", "ke_upper_body", "left_hand_found"):
        assert key in report["before"] and key in report["after"]
    assert any(not torch.equal(v, base.state_dict()[k]) for k, v in tuned.state_dict().items())
    assert json.loads((run / "report.json").read_text())["steps"] == STEPS
    assert json.loads((run / "split.json").read_text()) == split.to_dict()
    assert (run / "contact_sheet.png").is_file()


def test_a_run_folder_of_another_split_is_refused(clip, tmp_path: Path) -> None:
    """A folder trained before the three-way split chose its best step on today's test frames:
    resuming it would report numbers its selection has seen."""
    video, labels = clip
    (tmp_path / "train" / "checkpoints").mkdir(parents=True)
    with pytest.raises(ValueError, match="another train/validation/test split.*new work folder"):
        adapt_signer(video, _tiny(0), tmp_path, labels=labels, progress=False)


def test_early_stopping_stops_after_patience(clip, tmp_path: Path) -> None:
    """A validator that never improves after its first score stops the run after `patience`
    further validations, and a re-run of the finished folder does not train again."""
    from pgmm.training.config import TrainConfig
    from pgmm.training.trainer import PGMMTrainer

    video, labels = clip
    labels.save(tmp_path / "labels.npz")
    data = LabelledClip(video, tmp_path / "labels.npz", "train", 128, range(0, 80))
    scores = iter([1.0, 2.0, 3.0, 4.0, 5.0])
    cfg = PGMMConfig(variant="full", image_size=128, **TINY_PGMM)
    cfg.loss_weights["pose_distance"] = 0.0
    tcfg = TrainConfig(epochs=10, pairs_per_video=2, batch_size=2, max_steps=10, log_every=1)

    def trainer(validator) -> PGMMTrainer:
        return PGMMTrainer(cfg, tcfg, data, tmp_path / "run", progress=False,
                           validator=validator, validate_every=1, patience=2)  # fmt: skip

    state = trainer(lambda m: next(scores)).run()
    assert state.stopped_early and state.global_step == 3 and state.best_score == 1.0
    assert trainer(lambda m: 0.0).run().global_step == 3


def test_too_short_and_unreadable_clips_are_clear_errors(clip, tmp_path: Path) -> None:
    video, labels = clip
    with pytest.raises(ValueError, match="too short to adapt to.*at least 40 frames"):
        adapt_signer(video, _tiny(0), tmp_path / "a", labels=labels[:20], progress=False)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(VideoError, match="bad.mp4"):
        adapt_signer(bad, _tiny(0), tmp_path / "b", labels=labels, progress=False)


def test_clip_without_a_person_is_a_clear_error(tmp_path: Path) -> None:
    pytest.importorskip("mediapipe")
    from pgmm.pose.mediapipe_labels import NoPersonError

    video = write_video(tmp_path / "wall.mp4", np.full((8, 96, 96, 3), 90, np.uint8))
    with pytest.raises(NoPersonError, match="found a person in only 0 of 8"):
        adapt_signer(video, _tiny(0), tmp_path / "run", progress=False)


def test_cli_adapt_rejects_bad_input(tmp_path: Path, capsys) -> None:
    assert slp(["signers", "adapt", str(tmp_path / "none.mp4"), "--name", "x"]) == 2
    assert slp(["signers", "adapt", str(tmp_path / "none.mp4"), "--name", "default"]) == 2
    assert slp(["signers", "adapt", str(tmp_path / "none.mp4"), "--name", "Bad Name"]) == 2
    err = capsys.readouterr().err
    assert "none.mp4" in err and "built in" in err and "invalid signer name" in err


def test_person_box_and_source_crop(clip) -> None:
    video, labels = clip
    x0, y0, x1, y1 = person_box(labels)
    assert 0 <= x0 < x1 <= 1.2 and y0 < y1
    image, pose = source_signer(video, labels, 256)
    assert image.shape == (256, 256, 3)
    shoulders = pose[[5, 6], :2]
    assert ((shoulders > 0) & (shoulders < 1)).all()  # the crop keeps the body in frame


def test_registry_and_renderer_use_the_signers_own_weights(adapted, tmp_path: Path) -> None:
    run, _, base = adapted
    registry = SignerRegistry(tmp_path / "signers")
    default = registry.get("default")
    person = registry.add_adapted("real", default.image, default.pose, run / "train" / "model", {})
    assert person.model_dir is not None and registry.get("real").key == person.key
    with pytest.raises(SignerProtected):
        registry.add_adapted("default", default.image, default.pose, run / "train" / "model", {})
    png = io.BytesIO()
    Image.fromarray(default.image).save(png, format="PNG")
    registry.add("photo", png.getvalue(), lambda image: default.pose)
    with pytest.raises(SignerExists):  # an uploaded signer is never silently replaced
        registry.add_adapted("photo", default.image, default.pose, run / "train" / "model", {})
    again = registry.add_adapted("real", default.image, default.pose, run / "train" / "model", {})
    assert again.key == person.key  # same content, same cache key
    with pytest.raises(ValueError, match="square RGB"):  # a bad call keeps the old signer
        registry.add_adapted("real", default.image[:100], default.pose, run / "train" / "model", {})
    assert registry.get("real").key == person.key

    stage = PGMMRenderer("full", base)
    own, plain = stage.prepare(registry.get("real")), stage.prepare(default)
    assert own.model is not stage.model and plain.model is stage.model
    chunk = PoseSequence(np.repeat(default.pose[None], 3, 0))
    mixed = stage.render([own, plain], [chunk, chunk])
    alone_own = stage.render([own], [chunk])[0]
    alone_plain = stage.render([plain], [chunk])[0]
    np.testing.assert_array_equal(mixed[0], alone_own)
    np.testing.assert_array_equal(mixed[1], alone_plain)
    assert np.abs(alone_own.astype(int) - alone_plain.astype(int)).mean() > 0.5
