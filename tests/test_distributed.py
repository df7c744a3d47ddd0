"""Data-parallel PGMM training: a real 2-worker Ray Train / DDP (gloo) run, and its pieces.

One Ray run (module-scoped: starting Ray costs seconds) trains the TINY ``full`` config for
two global steps on two CPU workers; the checks read what it left behind. The sharding, the
world-size guard and the CLI dispatch are checked without Ray.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml
from tiny import TINY_PGMM, TINY_TRAIN

from pgmm.models.config import PGMMConfig
from pgmm.models.pgmm import PGMM
from pgmm.models.pose_estimator import HRNetLite, HRNetLiteConfig
from pgmm.training.config import TrainConfig
from pgmm.training.distributed import (
    DatasetSpec,
    DistributedTrainState,
    check_resume_world_size,
    parameter_digest,
    shard_batches,
    train_distributed,
)
from slp_pipeline.cli import main

# test_training.TINY: a PGMM small enough for a CPU step in seconds.
TINY = TINY_PGMM
# Per epoch: 2 videos x 3 pairs = 6 pairs = 3 batches of 2, so with 2 workers one epoch is 2
# global steps and the second round wraps around (rank 1 re-takes batch 0).
TRAIN = dict(**TINY_TRAIN, max_steps=2)


@pytest.fixture(scope="module")
def ddp_run(
    tmp_path_factory: pytest.TempPathFactory, shared_data: Path
) -> Iterator[tuple[Path, DistributedTrainState]]:
    with pytest.MonkeyPatch.context() as mp:
        # Read by the workers' SynthSigner: train_distributed forwards SLP_* variables.
        mp.setenv("SLP_SHARED_DATA", str(shared_data))
        root = tmp_path_factory.mktemp("ddp")
        torch.manual_seed(0)
        HRNetLite(HRNetLiteConfig(widths=(8, 16))).save_pretrained(root / "pe")
        run = root / "run"
        state = train_distributed(
            PGMMConfig(variant="full", image_size=128, **TINY),
            TrainConfig(**TRAIN),
            DatasetSpec("synth", "dev", max_videos=2),
            run,
            num_workers=2,
            estimator_dir=root / "pe",
            progress=False,
        )
        yield run, state


def test_two_workers_train_identical_replicas_and_only_rank0_writes(ddp_run) -> None:
    run, state = ddp_run
    assert isinstance(state, DistributedTrainState)
    assert (state.global_step, state.epoch, state.step_in_epoch) == (2, 1, 0)
    assert state.world_size == 2
    # DDP kept the replicas bit-identical, and rank 0 saved exactly that model.
    assert len(state.param_digests) == 2 and len(set(state.param_digests)) == 1
    model = PGMM.from_pretrained(run / "model", variant="full", image_size=128)
    assert parameter_digest(model) == state.param_digests[0]
    # One log row per step (rank 0 only), one sample sheet, one complete checkpoint.
    rows = list(csv.DictReader((run / "log.csv").open()))
    assert [int(r["step"]) for r in rows] == [1, 2]
    assert all(float(r["total"]) > 0 for r in rows)
    assert [p.name for p in (run / "samples").glob("*.png")] == ["step_0000002.png"]
    ckpt = json.loads((run / "checkpoints" / "last" / "state.json").read_text())
    assert ckpt["global_step"] == 2 and not list((run / "checkpoints").glob(".*"))
    assert json.loads((run / "distributed.json").read_text()) == {"world_size": 2}
    expected = {"checkpoints", "model", "log.csv", "samples", "distributed.json", "ray"}
    assert {p.name for p in run.iterdir()} - {"tensorboard"} == expected


def test_shard_batches_covers_the_epoch_with_equal_step_counts() -> None:
    batches = list(range(7))
    shards = [shard_batches(batches, rank, 3) for rank in range(3)]
    assert shards == [[0, 3, 6], [1, 4, 0], [2, 5, 1]]
    assert set().union(*shards) == set(batches)
    assert shard_batches(batches, 0, 1) == batches
    assert shard_batches([], 1, 2) == []
    with pytest.raises(ValueError, match="outside"):
        shard_batches(batches, 2, 2)


def test_mid_epoch_checkpoint_refuses_another_world_size(tmp_path: Path) -> None:
    check_resume_world_size(tmp_path, 4)  # nothing to resume: anything goes
    ckpt = tmp_path / "checkpoints" / "last"
    ckpt.mkdir(parents=True)
    (ckpt / "state.json").write_text(json.dumps({"step_in_epoch": 1}))
    check_resume_world_size(tmp_path, 1)  # no distributed.json: trained by one process
    with pytest.raises(ValueError, match="1 worker"):
        check_resume_world_size(tmp_path, 2)
    (tmp_path / "distributed.json").write_text(json.dumps({"world_size": 2}))
    check_resume_world_size(tmp_path, 2)
    with pytest.raises(ValueError, match="2 worker"):
        check_resume_world_size(tmp_path, 1)
    (ckpt / "state.json").write_text(json.dumps({"step_in_epoch": 0}))
    check_resume_world_size(tmp_path, 3)  # at an epoch boundary any world size continues


def test_cli_workers_dispatches_to_train_distributed(tmp_path: Path, monkeypatch) -> None:
    calls = []

    def fake(model_cfg, train_cfg, spec, out, **kwargs):
        calls.append((model_cfg.variant, train_cfg.max_steps, spec, out, kwargs))
        return DistributedTrainState(global_step=3, world_size=kwargs["num_workers"])

    monkeypatch.setattr("pgmm.training.distributed.train_distributed", fake)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({"model": {"variant": "tpsmm", "image_size": 128, **TINY}}))
    argv = ["train", "pgmm", "--config", str(config), "--out", str(tmp_path / "run")]
    assert main([*argv, "--workers", "4", "--max-steps", "3", "--max-videos", "5"]) == 0
    (variant, max_steps, spec, out, kwargs) = calls.pop()
    assert (variant, max_steps, out) == ("tpsmm", 3, tmp_path / "run")
    assert spec == DatasetSpec("synth", "train", 5)
    assert kwargs["num_workers"] == 4 and not kwargs["use_gpu"]
    assert main([*argv, "--gpu"]) == 0
    assert calls.pop()[-1]["use_gpu"]
    assert main([*argv, "--workers", "0"]) == 2
    assert main([*argv, "--workers", "2", "--random-looks", "0.5", "--cross-identity"]) == 0
    assert calls.pop()[2] == DatasetSpec("synth", "train", None, False, 1.0, 0.5)


def test_one_rank_group_matches_the_single_process_trainer_and_resumes(
    tmp_path: Path, shared_data: Path
) -> None:
    """With world size 1 the DDP plumbing (sharding, loss through DDP, resume) changes no bit."""
    from pgmm.data.synth.dataset import RenderedSynthSigner
    from pgmm.data.synth.signer import SynthSigner
    from pgmm.training.distributed import DistributedPGMMTrainer
    from pgmm.training.trainer import PGMMTrainer

    data = RenderedSynthSigner("dev", 128, max_videos=2, signer=SynthSigner(data_dir=shared_data))
    mcfg = PGMMConfig(variant="pose_sum", image_size=128, **TINY)

    def make(cls, run: Path, max_steps: int) -> PGMMTrainer:
        tcfg = TrainConfig(**{**TRAIN, "max_steps": max_steps, "sample_every": 100})
        return cls(mcfg, tcfg, data, run, progress=False)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # several times faster than 2 for these tiny convolutions
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        single = make(PGMMTrainer, tmp_path / "single", 2)
        single.run()
        make(DistributedPGMMTrainer, tmp_path / "ddp", 1).run()
        resumed = make(DistributedPGMMTrainer, tmp_path / "ddp", 2)
        assert resumed.run().global_step == 2
    finally:
        torch.distributed.destroy_process_group()
        torch.set_num_threads(threads)
    assert parameter_digest(resumed.model) == parameter_digest(single.model)
    logs = [(tmp_path / run / "log.csv").read_text() for run in ("single", "ddp")]
    strip = [[r[:2] + r[4:] for r in csv.reader(log.splitlines())] for log in logs]  # no seconds
    assert strip[0] == strip[1]


@pytest.mark.parametrize(
    ("variant", "weights"),
    [
        ("full", {}),
        ("tpsmm", {}),
        ("pose_sum", {}),
        ("tpsmm", {"warp": 0.0}),  # TPSMM's flow mixing feeds the image: still used
        ("pfm", {"warp": 0.0}),
        ("full", {"driving_keypoints": 0.0}),
        ("full", {"perceptual": 0.0, "pose_distance": 0.0, "align": 0.0}),
    ],
)
def test_unused_parameters_are_predicted_from_the_config(variant: str, weights: dict) -> None:
    """DDP looks for unused parameters only where a step leaves some without a gradient: one
    left out where it does not look would hang the gradient all-reduce (the 2-worker run above
    trains the default ``full`` config without looking)."""
    from pgmm.losses.total import PGMMLoss
    from pgmm.training.distributed import has_unused_parameters

    size = 64
    torch.manual_seed(0)
    config = PGMMConfig(variant=variant, image_size=size, loss_weights=weights, **TINY)
    model = PGMM(config).train()
    estimator = HRNetLite(HRNetLiteConfig(widths=(8, 16)))
    criterion = PGMMLoss(config, estimator=estimator, pyramid_scales=(1, 0.5, 0.25))
    batch = {
        "source": torch.rand(1, 3, size, size),
        "driving": torch.rand(1, 3, size, size),
        "driving_heatmaps": torch.rand(1, 36, size // 4, size // 4),
        "source_heatmaps": torch.rand(1, 36, size // 4, size // 4),
    }
    out = model(
        batch["source"], batch["driving"], batch["driving_heatmaps"], batch["source_heatmaps"],
        with_align=config.loss_weights["align"] > 0,
    )  # fmt: skip
    total = criterion(model, batch, out)["total"]
    names, params = zip(*model.named_parameters(), strict=True)
    grads = torch.autograd.grad(total, params, allow_unused=True)
    unused = [n for n, g in zip(names, grads, strict=True) if g is None]
    assert has_unused_parameters(config) == bool(unused), unused
