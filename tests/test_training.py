"""A tiny real PGMM training run, bit-exact resume, the P_e trainer and the train CLI."""

from __future__ import annotations

import csv
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from tiny import TINY_PGMM, TINY_TRAIN

from pgmm.data.synth.dataset import RenderedSynthSigner
from pgmm.data.synth.signer import SynthSigner
from pgmm.models.config import PGMMConfig
from pgmm.models.pgmm import PGMM
from pgmm.models.pose_estimator import HRNetLite, HRNetLiteConfig, heatmap_loss
from pgmm.training import pose_estimator as pose_estimator_training
from pgmm.training.config import TrainConfig
from pgmm.training.pose_estimator import evaluate_pck, train_pose_estimator
from pgmm.training.trainer import (
    PGMMTrainer,
    cpu_computes_bf16,
    float32_islands,
    sample_sheet,
)
from slp_pipeline.cli import main

TINY = TINY_PGMM


@pytest.fixture(scope="module")
def data(shared_data: Path) -> RenderedSynthSigner:
    signer = SynthSigner(data_dir=shared_data)
    return RenderedSynthSigner("dev", 128, max_videos=2, signer=signer)


def _trainer(data, run: Path, max_steps: int, variant: str = "full") -> PGMMTrainer:
    mcfg = PGMMConfig(variant=variant, image_size=128, **TINY)
    tcfg = TrainConfig(**TINY_TRAIN, max_steps=max_steps)
    torch.manual_seed(0)
    estimator = HRNetLite(HRNetLiteConfig(widths=(8, 16)))
    return PGMMTrainer(mcfg, tcfg, data, run, estimator=estimator, progress=False)


def test_tiny_training_run_end_to_end(data, tmp_path: Path) -> None:
    trainer = _trainer(data, tmp_path, max_steps=4)
    state = trainer.run()
    assert state.global_step == 4
    rows = list(csv.DictReader((tmp_path / "log.csv").open()))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    for key in ("perceptual", "equivariance", "warp", "pose_distance", "align", "total"):
        assert all(float(r[key]) >= 0 for r in rows), key
    assert len(list((tmp_path / "samples").glob("*.png"))) == 2
    assert (tmp_path / "tensorboard").is_dir()
    model = PGMM.from_pretrained(tmp_path / "model", variant="full")
    assert torch.equal(
        model.state_dict()["encoder.stem.0.weight"],
        trainer.model.state_dict()["encoder.stem.0.weight"],
    )
    assert not list((tmp_path / "checkpoints").glob(".*"))


def test_resume_continues_exactly(data, tmp_path: Path) -> None:
    straight = _trainer(data, tmp_path / "a", max_steps=4)
    straight.run()
    interrupted = _trainer(data, tmp_path / "b", max_steps=2)
    interrupted.run()
    resumed = _trainer(data, tmp_path / "b", max_steps=4)
    state = resumed.run()
    assert state.global_step == 4 and state.epoch == 1
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.optimizer.param_groups[0]["lr"] == straight.optimizer.param_groups[0]["lr"]
    opt_a, opt_b = straight.optimizer.state_dict(), resumed.optimizer.state_dict()
    assert opt_a["state"].keys() == opt_b["state"].keys()
    for key, moments in opt_a["state"].items():  # Adam step count and both moments
        assert all(torch.equal(moments[n], opt_b["state"][key][n]) for n in moments), key
    steps = [int(r["step"]) for r in csv.DictReader((tmp_path / "b" / "log.csv").open())]
    assert steps == [1, 2, 3, 4]


def test_resume_refuses_a_different_config(data, tmp_path: Path) -> None:
    _trainer(data, tmp_path, max_steps=2).run()
    with pytest.raises(ValueError, match="different|requested"):
        _trainer(data, tmp_path, max_steps=3, variant="pfm").run()


def _trainer_with(data, run: Path, max_steps: int, **train: object) -> PGMMTrainer:
    mcfg = PGMMConfig(variant="full", image_size=128, **TINY)
    tcfg = TrainConfig(**{**TINY_TRAIN, **train}, max_steps=max_steps)
    torch.manual_seed(0)
    estimator = HRNetLite(HRNetLiteConfig(widths=(8, 16)))
    return PGMMTrainer(mcfg, tcfg, data, run, estimator=estimator, progress=False)


def test_frame_cache_renders_each_video_once_per_run(data, tmp_path: Path, monkeypatch) -> None:
    rendered: list[int] = []
    original = data.load_frames
    monkeypatch.setattr(
        data, "load_frames", lambda i, size=None: rendered.append(i) or original(i, size)
    )
    trainer = _trainer_with(data, tmp_path, max_steps=6, frame_cache_gib=1.0)
    assert trainer.run().epoch == 2  # two epochs of 3 steps
    assert sorted(rendered) == [0, 1]  # the second epoch read the cache
    assert len(list((tmp_path / "frames").glob("*/*.npy"))) == 2
    uncached = _trainer_with(data, tmp_path / "plain", max_steps=6)
    uncached.run()
    a, b = trainer.model.state_dict(), uncached.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # the same frames, the same training


def test_init_from_a_transposed_checkpoint_warm_starts_a_bilinear_pose_net(
    data, tmp_path: Path
) -> None:
    old = PGMM(PGMMConfig(variant="full", image_size=128, **TINY))
    mcfg = PGMMConfig(variant="full", image_size=128, pose_upsample="bilinear", **TINY)
    estimator = HRNetLite(HRNetLiteConfig(widths=(8, 16)))
    trainer = PGMMTrainer(
        mcfg, TrainConfig(**TINY_TRAIN), data, tmp_path, estimator=estimator, init_from=old
    )
    kernel = old.posenet.up[0][0].weight
    assert torch.equal(trainer.model.posenet.up[0][0].weight, kernel.transpose(0, 1).flip(-2, -1))
    assert torch.equal(trainer.model.encoder.stem[0].weight, old.encoder.stem[0].weight)


def test_float32_islands_only_inside_the_step() -> None:
    linear, other = torch.nn.Linear(4, 2), torch.nn.Linear(4, 2)
    x = torch.randn(3, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16), float32_islands([linear], "cpu"):
        assert linear(other(x).repeat(1, 2)[:, :4]).dtype == torch.float32
        assert other(x).dtype == torch.bfloat16  # autocast is back after the island
    assert not linear._forward_hooks and not linear._forward_pre_hooks


@pytest.mark.skipif(not cpu_computes_bf16(), reason="this CPU has no bf16 instructions")
def test_cpu_bf16_training_keeps_coordinates_in_float32(data, tmp_path: Path) -> None:
    trainer = _trainer_with(data, tmp_path, max_steps=2, cpu_bf16=True)
    assert trainer.autocast_dtype == torch.bfloat16
    keypoints: list[torch.dtype] = []
    features: list[torch.dtype] = []
    trainer.model.kp_detector.register_forward_hook(lambda m, i, o: keypoints.append(o.dtype))
    trainer.model.generator.register_forward_hook(
        lambda m, i, o: features.append(o.intermediates[0].dtype)
    )
    trainer.run()
    assert set(keypoints) == {torch.float32} and set(features) == {torch.bfloat16}
    rows = list(csv.DictReader((tmp_path / "log.csv").open()))
    assert all(float(r["total"]) > 0 for r in rows)


def _interrupt_after(monkeypatch, steps: int) -> None:
    """Press Ctrl-C (SIGINT to this process) during the P_e trainer's step number ``steps``."""
    calls = {"n": 0}

    def loss(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == steps:
            os.kill(os.getpid(), signal.SIGINT)
        return heatmap_loss(*args, **kwargs)

    monkeypatch.setattr(pose_estimator_training, "heatmap_loss", loss)


def _checkpoint(run: Path) -> tuple[dict, dict[str, torch.Tensor], dict]:
    """(state.json, weights, optimizer state dict) of a P_e run's ``checkpoints/last``."""
    ckpt = run / "checkpoints" / "last"
    weights = HRNetLite.from_pretrained(ckpt).state_dict()
    optimizer = torch.load(ckpt / "optimizer.pt", weights_only=True)
    return json.loads((ckpt / "state.json").read_text()), weights, optimizer


def test_pose_estimator_training_resumes_from_the_saved_step(
    data, tmp_path: Path, monkeypatch
) -> None:
    cfg = HRNetLiteConfig(widths=(8, 16))
    kwargs = dict(steps=6, batch_size=4, lr=1e-3, progress=False)
    # 3 steps of a 6-step run, stopped by Ctrl-C: the step in flight finishes, then it saves.
    with monkeypatch.context() as m, pytest.raises(KeyboardInterrupt):
        _interrupt_after(m, 3)
        train_pose_estimator(data, tmp_path / "a", cfg, **kwargs)
    state, weights, optimizer = _checkpoint(tmp_path / "a")
    assert state["step"] == 3
    assert all(int(s["step"]) == 3 for s in optimizer["state"].values())  # Adam saw 3 steps
    # The lr follows the cosine schedule of the whole 6-step run: factor at step 3 is 0.525.
    assert optimizer["param_groups"][0]["lr"] == pytest.approx(1e-3 * (0.05 + 0.95 * 0.5))
    # The same interruption again is deterministic: identical weights at step 3.
    with monkeypatch.context() as m, pytest.raises(KeyboardInterrupt):
        _interrupt_after(m, 3)
        train_pose_estimator(data, tmp_path / "b", cfg, **kwargs)
    _, again, _ = _checkpoint(tmp_path / "b")
    assert all(torch.equal(weights[k], again[k]) for k in weights)
    # Resuming with nothing left to do returns exactly the saved model: it was loaded.
    same = train_pose_estimator(data, tmp_path / "b", cfg, **{**kwargs, "steps": 3})
    assert all(torch.equal(weights[k], v) for k, v in same.state_dict().items())
    # Resuming to 6 continues from step 3 with the saved Adam moments, not from scratch.
    resumed = train_pose_estimator(data, tmp_path / "b", cfg, **kwargs)
    state, final, final_opt = _checkpoint(tmp_path / "b")
    assert state["step"] == 6
    assert all(int(s["step"]) == 6 for s in final_opt["state"].values())
    assert final_opt["param_groups"][0]["lr"] == pytest.approx(1e-3 * 0.05)  # end of cosine
    assert all(torch.equal(final[k], v) for k, v in resumed.state_dict().items())
    assert any(not torch.equal(weights[k], final[k]) for k in weights)  # it did train on
    # ... exactly as an uninterrupted 6-step run: same batches, augmentation and Adam state.
    straight = train_pose_estimator(data, tmp_path / "c", cfg, **kwargs)
    assert all(torch.equal(final[k], v) for k, v in straight.state_dict().items())
    _, _, straight_opt = _checkpoint(tmp_path / "c")
    for key, moments in straight_opt["state"].items():
        assert all(torch.equal(moments[n], final_opt["state"][key][n]) for n in moments), key


def test_pose_estimator_training_logs_and_reports_pck(data, tmp_path: Path) -> None:
    cfg = HRNetLiteConfig(widths=(8, 16))
    model = train_pose_estimator(data, tmp_path, cfg, steps=20, batch_size=2, progress=False)
    assert (tmp_path / "model" / "model.safetensors").exists()
    rows = list(csv.reader((tmp_path / "log.csv").open()))
    assert [int(r[0]) for r in rows] == [20] and float(rows[0][1]) > 0  # logs every 20 steps
    result = evaluate_pck(model, data, frames_per_video=2)
    assert 0.0 <= result["pck"] <= 1.0 and result["frames"] == 4


def test_train_cli_runs_and_reports_bad_config(
    tmp_path: Path, shared_data: Path, monkeypatch
) -> None:
    monkeypatch.setenv("SLP_SHARED_DATA", str(shared_data))
    config = tmp_path / "tiny.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model": {"variant": "tpsmm", "image_size": 128, **TINY},
                "train": {"batch_size": 2, "pairs_per_video": 2, "log_every": 1},
            }
        )
    )
    rc = main(
        [
            "train",
            "pgmm",
            "--config",
            str(config),
            "--out",
            str(tmp_path / "run"),
            "--max-videos",
            "1",
            "--max-steps",
            "2",
        ]
    )
    assert rc == 0 and (tmp_path / "run" / "model" / "config.json").exists()
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"model": {"variant": "nope"}}))
    assert main(["train", "pgmm", "--config", str(bad), "--out", str(tmp_path / "x")]) == 2


def test_pose_estimator_augmentation_moves_keypoints_with_pixels() -> None:
    from pgmm.pose.heatmaps import argmax_decode, render_heatmaps
    from pgmm.training.pose_estimator import augment

    points = torch.tensor([[[0.3, 0.4, 1.0]], [[0.6, 0.55, 1.0]]])
    images = render_heatmaps(points, (64, 64), sigma=2.0).expand(2, 3, 64, 64).clone()
    moved, new_points = augment(images, points, torch.Generator().manual_seed(3))
    found = argmax_decode(moved[:, :1])[:, 0, :2]
    assert (found - new_points[:, 0, :2]).abs().max() * 64 < 0.5  # same place, < 0.5 px
    assert not torch.allclose(new_points, points)


class _OnDevice(torch.Tensor):
    """A CPU tensor posing as one on an accelerator: an op that mixes it with a plain (host)
    tensor fails as it would with a CUDA tensor; ``.cpu()`` brings it back to the host."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func is torch.Tensor.cpu:
            with torch._C.DisableTorchFunctionSubclass():
                return args[0].clone()
        leaves = torch.utils._pytree.tree_leaves((args, kwargs or {}))
        if {isinstance(a, cls) for a in leaves if isinstance(a, torch.Tensor)} == {True, False}:
            raise RuntimeError("Expected all tensors to be on the same device")
        return super().__torch_function__(func, types, args, kwargs or {})


def test_sample_sheet_takes_a_device_prediction_and_a_host_batch() -> None:
    """Issue 21: training on a GPU crashed at its first sample step (a CUDA prediction in
    bf16, with a graph, concatenated with the CPU batch)."""
    source, driving = torch.zeros(3, 3, 8, 8), torch.ones(3, 3, 8, 8)
    prediction = torch.full((3, 3, 8, 8), 0.5, requires_grad=True)
    on_device = prediction.to(torch.bfloat16).as_subclass(_OnDevice)
    with pytest.raises(RuntimeError, match="same device"):
        torch.cat([source, on_device])  # the emulation does catch a mixed op
    sheet = sample_sheet(source, driving, on_device, count=2)
    assert sheet.shape == (3 * 8, 2 * 8, 3) and sheet.dtype == np.uint8
    assert (sheet[:8] == 0).all() and (sheet[8:16] == 255).all() and (sheet[16:] == 128).all()


def test_a_training_step_reads_nothing_back_from_the_device(
    data, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a GPU, reading a loss back (``float``, ``.item()``) makes the host wait for the device;
    the step must not (issue 21: it did, eight times); ``run`` reads them at log intervals."""
    trainer = _trainer(data, tmp_path, max_steps=1)
    batch = next(iter(trainer._batches(0, 0)))

    def read_back(self: torch.Tensor, *args: object) -> float:
        raise AssertionError("a tensor was read back to the host during the step")

    with monkeypatch.context() as patch:
        patch.setattr(torch.Tensor, "__float__", read_back)
        patch.setattr(torch.Tensor, "item", read_back)
        terms, prediction = trainer.train_step(batch)
    assert all(t.ndim == 0 and not t.requires_grad for t in terms.values())
    assert not prediction.requires_grad


def test_appearance_jitter_recolours_the_pairs_the_model_sees(data, tmp_path: Path) -> None:
    """The sample sheet shows the frames the model trained on: with jitter they are not the
    dataset's frames, and two runs with the same seed draw the same colours."""
    sheets = []
    for name in ("a", "b", "plain"):
        jitter = 0.0 if name == "plain" else 0.5
        trainer = _trainer_with(
            data, tmp_path / name, max_steps=2, appearance_jitter=jitter, sample_every=2
        )
        trainer.run()
        sheets.append(np.asarray(Image.open(next((tmp_path / name / "samples").glob("*.png")))))
    jittered, again, plain = sheets
    assert np.array_equal(jittered, again)
    # The first two rows (source, driving) differ from the unjittered run's.
    rows = plain.shape[0] * 2 // 3
    assert np.abs(jittered[:rows].astype(int) - plain[:rows].astype(int)).mean() > 2


@pytest.mark.parametrize("bad", [{"lr": 0.0}, {"lr": -1e-4}, {"appearance_jitter": 1.5}])
def test_train_config_refuses_bad_values(bad: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        TrainConfig(**bad)
