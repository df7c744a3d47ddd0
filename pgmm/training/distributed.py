"""Data-parallel PGMM training: DDP over several GPUs or nodes, launched by Ray Train.

Ray Train starts one worker process per GPU (or per CPU slot) anywhere in the Ray cluster, sets
up the ``torch.distributed`` process group (NCCL on GPUs, gloo on CPUs) and surfaces worker
failures to the caller. The training loop inside each worker is the single-process
:class:`~pgmm.training.trainer.PGMMTrainer`, subclassed by :class:`DistributedPGMMTrainer`, so
the losses, schedule, checkpoint format and resume logic stay in one place:

* **Data.** Every rank builds the same seeded epoch order as the single-process trainer and
  takes batches ``i`` with ``i % world_size == rank``; one (global) step trains ``world_size``
  batches and the ranks together see exactly the single-process epoch. When the epoch's batch
  count is not a multiple of ``world_size`` the last round wraps around to the epoch's first
  batches (as ``torch.utils.data.DistributedSampler`` pads): every rank must take the same
  number of steps, or the others would wait forever in DDP's gradient all-reduce.
* **Gradients.** DDP averages them over the ranks, so the effective batch is
  ``world_size * batch_size`` at an unchanged learning rate; ``max_steps`` and the step-based
  ``*_every`` settings count global steps.
* **Files.** Only rank 0 writes ``RUN/`` (log, TensorBoard, samples, checkpoints, final model);
  the loss terms it logs are the mean over all ranks. The other ranks run in a private scratch
  folder that is deleted when they finish, so no code path of the trainer -- present or
  future -- can make them write into the run.
* **Resume.** Every rank loads ``RUN/checkpoints/last`` exactly as the single-process trainer
  does. ``RUN/distributed.json`` records the world size, and a run interrupted mid-epoch
  refuses to resume with a different one (its position in the epoch would mean other batches).
* **Stop.** After every step the ranks agree (one all-reduce) on whether any of them was asked
  to stop -- by a signal to a rank that runs in its process's main thread (``torchrun``), or by
  the Ray driver, which on Ctrl-C / SIGTERM writes ``RUN/.stop-request`` for rank 0 to see
  (Ray Train runs the loop in a worker thread, where no signal handler can be installed). All
  ranks then stop after the same step, rank 0 writes the checkpoint, and
  :func:`train_distributed` raises :class:`~pgmm.training.common.TrainingStopped`.
* **Multi-node.** ``RUN`` must be on a filesystem every node sees (NFS or similar), as Ray's
  own ``storage_path`` must be; start Ray on the nodes and pass ``ray_address="auto"``. The
  ``pgmm`` package must be installed on every node.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import signal
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from pgmm.data.loaders import SignVideoDataset, load_dataset, spread_over_signers
from pgmm.models.config import PGMMConfig
from pgmm.models.pgmm import PGMMOutput
from pgmm.training.common import StopSignals, TrainingStopped, find_checkpoint
from pgmm.training.config import TrainConfig
from pgmm.training.trainer import PGMMTrainer, TrainState

__all__ = [
    "DatasetSpec",
    "DistributedPGMMTrainer",
    "DistributedTrainState",
    "build_dataset",
    "check_resume_world_size",
    "has_unused_parameters",
    "parameter_digest",
    "record_world_size",
    "shard_batches",
    "train_distributed",
]

T = TypeVar("T")
WORLD_FILE = "distributed.json"
# Written by the Ray driver on Ctrl-C / SIGTERM (holding the signal's number), read by rank 0.
STOP_FILE = ".stop-request"
# Environment variables the Ray workers must see as the driver does (SLP_SHARED_DATA: where
# the corpus of the rendered SynthSigner lives).
FORWARDED_ENV_PREFIX = "SLP_"


# ---------------------------------------------------------------------------------------- data
def build_dataset(
    spec: str,
    split: str,
    size: int,
    max_videos: int | None,
    balanced: bool = False,
    cross_identity: float = 0.0,
    random_looks: float = 0.0,
) -> SignVideoDataset:
    """``synth`` renders SynthSigner on the fly; ``NAME:DIR`` or ``DIR`` reads a dataset.

    ``max_videos`` keeps the first N videos, or with ``balanced`` N spread over the signers
    (:func:`~pgmm.data.loaders.spread_over_signers`). ``cross_identity``: the fraction of
    SynthSigner videos that end in another identity's motion
    (:class:`~pgmm.data.synth.dataset.RenderedSynthSigner`); ``random_looks``: the fraction
    drawn in a random look (pose estimators that read unseen signers; renderers that must copy
    a new signer's look from the source instead of painting the training signers').

    Shared by ``slp train`` and the distributed workers, which rebuild the dataset from this
    description rather than receive it pickled (a rendered corpus or an open video index does
    not travel well between processes or nodes).
    """
    if spec == "synth":
        from pgmm.data.synth.dataset import RenderedSynthSigner

        return RenderedSynthSigner(
            split,
            size,
            max_videos=max_videos,
            balanced=balanced,
            cross_identity=cross_identity,
            random_looks=random_looks,
        )
    if cross_identity:
        raise ValueError(
            "cross-identity videos need SynthSigner (--data synth): a recorded "
            "corpus has no frames of one person moving as another"
        )
    if random_looks:
        raise ValueError(
            "random looks need SynthSigner (--data synth): a recorded corpus cannot be redrawn"
        )
    name, _, root = spec.rpartition(":") if ":" in spec else ("synthsigner", "", spec)
    dataset = load_dataset(name, root, split, size)
    if max_videos and balanced:
        keep = spread_over_signers([r.signer for r in dataset.records], max_videos)
        dataset.records = [dataset.records[i] for i in keep]
    elif max_videos:
        dataset.records = dataset.records[:max_videos]
    return dataset


@dataclass(frozen=True)
class DatasetSpec:
    """What :func:`build_dataset` needs, minus the frame size (which the model config fixes)."""

    data: str = "synth"
    split: str = "train"
    max_videos: int | None = None
    balanced: bool = False
    cross_identity: float = 0.0
    random_looks: float = 0.0

    def build(self, size: int) -> SignVideoDataset:
        return build_dataset(
            self.data,
            self.split,
            size,
            self.max_videos,
            self.balanced,
            self.cross_identity,
            self.random_looks,
        )


def shard_batches(batches: Sequence[T], rank: int, world_size: int) -> list[T]:
    """Rank ``rank``'s batches: ``i % world_size == rank``, padded by wrapping around.

    All ranks get ``ceil(len(batches) / world_size)`` batches (DDP needs equal step counts);
    their union is every batch, plus at most ``world_size - 1`` repeats from the start.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside a world of {world_size}")
    if not batches:
        return []
    rounds = math.ceil(len(batches) / world_size)
    return [batches[(r * world_size + rank) % len(batches)] for r in range(rounds)]


def parameter_digest(model: nn.Module) -> str:
    """SHA-256 of every parameter's bytes: equal digests mean bit-identical replicas."""
    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def check_resume_world_size(run_dir: str | Path, world_size: int) -> None:
    """Refuse to resume a mid-epoch checkpoint with another world size.

    A checkpoint's ``step_in_epoch`` counts global steps of ``world_size`` batches each, so
    resuming it with another world size would skip the wrong batches. At an epoch boundary any
    world size may continue. A run without ``distributed.json`` was trained by one process.
    """
    run_dir = Path(run_dir)
    ckpt = find_checkpoint(run_dir / "checkpoints" / "last")
    if ckpt is None:
        return
    state = json.loads((ckpt / "state.json").read_text())
    world_file = run_dir / WORLD_FILE
    trained = json.loads(world_file.read_text())["world_size"] if world_file.exists() else 1
    if trained != world_size and state.get("step_in_epoch", 0):
        raise ValueError(
            f"{run_dir} stopped mid-epoch with {trained} worker(s); resume it with "
            f"{trained} worker(s) (a different count would skip the wrong batches), or use a "
            "new run dir"
        )


def record_world_size(run_dir: str | Path, world_size: int) -> None:
    """Note who trains ``run_dir`` from now on, for :func:`check_resume_world_size`."""
    world_file = Path(run_dir) / WORLD_FILE
    if world_size == 1:
        world_file.unlink(missing_ok=True)  # no file means one process
    else:
        world_file.parent.mkdir(parents=True, exist_ok=True)
        world_file.write_text(json.dumps({"world_size": world_size}))


def has_unused_parameters(config: PGMMConfig) -> bool:
    """Whether a training step of ``config`` leaves some of the model's parameters without a
    gradient (tests/test_distributed.py checks this against autograd for each variant).

    DDP must then be told (``find_unused_parameters``), or it waits forever for those
    gradients; telling it costs a traversal of the autograd graph every step, so it is asked
    for only here. Each case is a loss term that is the only one to reach some parameters.
    """
    w = config.loss_weights
    return (
        w["driving_keypoints"] == 0  # the pose-driven keypoint head: trained by it alone
        # Under CMM the generator makes its own flow; TPSMM's flow mixing only feeds the warp loss.
        or (config.motion == "cmm" and w["warp"] == 0)
        # The image path (E_I, P_d, G) is reached only through the generated frame or Y_s.
        or w["perceptual"] + w["pose_distance"] + w["align"] + w["hands"] == 0
    )


# ------------------------------------------------------------------------------------ trainer
class _ModelLoss(nn.Module):
    """The training loss as a module that owns the model's parameters: what DDP wraps.

    The trainer runs the model, then ``PGMMLoss`` (which re-runs sub-networks such as the
    keypoint detector). Calling the loss through DDP makes the loss terms DDP's outputs, so
    where a config leaves parameters unused (:func:`has_unused_parameters`: e.g. the
    pose-driven head when ``driving_keypoints`` is weighted 0), ``find_unused_parameters``
    traces the autograd graph back from the actual loss and finds exactly the parameters that
    get a gradient, which a trace from the model's own outputs would not.
    """

    def __init__(self, model: nn.Module, loss: nn.Module) -> None:
        super().__init__()
        self.model = model
        # Not a registered submodule: the frozen VGG / P_e buffers need no per-step broadcast.
        self._loss = (loss,)

    def forward(self, batch: dict[str, torch.Tensor], out: PGMMOutput) -> dict[str, torch.Tensor]:
        return self._loss[0](self.model, batch, out)


class DistributedPGMMTrainer(PGMMTrainer):
    """:class:`PGMMTrainer` for one rank of an initialized ``torch.distributed`` process group.

    Independent of Ray: any launcher that initializes the process group (``torchrun`` too) can
    run it. ``self.model`` stays the plain :class:`PGMM` (checkpoints, resume and callers see no
    ``module.`` prefixes); the loss of a step is computed through the DDP-wrapped
    :class:`_ModelLoss`, whose backward all-reduces (averages) the gradients.
    """

    def __init__(
        self,
        model_config: PGMMConfig,
        train_config: TrainConfig,
        dataset: SignVideoDataset,
        run_dir: str | Path,
        **options: Any,
    ) -> None:
        """``options``: those of :class:`PGMMTrainer` (``progress`` shows on rank 0 only)."""
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError("DistributedPGMMTrainer needs an initialized process group")
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.shared_run_dir = Path(run_dir)
        # Ranks other than 0 never touch RUN: the trainer's own writes go to a private folder.
        self._scratch = None if self.rank == 0 else Path(tempfile.mkdtemp(prefix="pgmm-rank-"))
        options["progress"] = options.get("progress", True) and self.rank == 0
        super().__init__(
            model_config, train_config, dataset, self._scratch or self.shared_run_dir, **options
        )
        self.steps_per_epoch = math.ceil(self.steps_per_epoch / self.world_size)  # global steps
        cuda = self.device.type == "cuda"
        self.ddp = DistributedDataParallel(
            _ModelLoss(self.model, self.loss),
            device_ids=[self.device.index] if cuda else None,
            output_device=self.device.index if cuda else None,
            find_unused_parameters=has_unused_parameters(model_config),
        )

    # ------------------------------------------------------------------ data
    def _share(self, batches: list[list[int]]) -> list[list[int]]:
        """This rank's share of the single-process epoch."""
        return shard_batches(batches, self.rank, self.world_size)

    # ------------------------------------------------------------------ step
    def _loss_terms(
        self, batch: dict[str, torch.Tensor], out: PGMMOutput
    ) -> dict[str, torch.Tensor]:
        """The loss through DDP, whose backward then all-reduces the gradients."""
        return self.ddp(batch, out)

    # ------------------------------------------------------------------ files: rank 0 only
    def _log(self, terms: dict[str, torch.Tensor], seconds: float) -> None:
        # Every rank reaches the same logged steps, so this collective cannot deadlock.
        values = torch.stack([v.to(torch.float64) for v in terms.values()])
        dist.all_reduce(values)
        if self.rank == 0:
            mean = (values / self.world_size).tolist()
            self._log_values(dict(zip(terms, mean, strict=True)), seconds)

    def _save_samples(self, batch: dict[str, torch.Tensor], prediction: torch.Tensor) -> None:
        if self.rank == 0:
            super()._save_samples(batch, prediction)

    @property
    def checkpoint_dir(self) -> Path:
        """The shared checkpoint on every rank: the one all ranks resume from, and the one a
        stop message of any rank must name (ranks other than 0 never write it)."""
        return self.shared_run_dir / "checkpoints" / "last"

    def save_checkpoint(self) -> None:
        if self.rank == 0:
            super().save_checkpoint()

    def _agree_stop(self, signum: int) -> int:
        """The largest stop signal of any rank (rank 0 also reads the driver's stop request)."""
        request = self.shared_run_dir / STOP_FILE
        if self.rank == 0 and not signum and request.exists():
            signum = int(request.read_text().strip() or signal.SIGTERM)
        flag = torch.tensor([signum], dtype=torch.int64, device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item())

    def try_resume(self) -> bool:
        """Every rank loads the shared checkpoint; all must land on the same step."""
        check_resume_world_size(self.shared_run_dir, self.world_size)
        resumed = super().try_resume()
        steps: list[int | None] = [None] * self.world_size
        dist.all_gather_object(steps, self.state.global_step)
        if len(set(steps)) != 1:
            raise RuntimeError(
                f"ranks resumed at different steps {steps}: {self.shared_run_dir} must be on a "
                "filesystem that every node sees"
            )
        if self.rank == 0:
            record_world_size(self.shared_run_dir, self.world_size)
        return resumed

    def run(self) -> TrainState:
        try:
            return super().run()
        finally:
            if self._scratch is not None:
                shutil.rmtree(self._scratch, ignore_errors=True)


# -------------------------------------------------------------------------------- Ray Train
@dataclass
class DistributedTrainState(TrainState):
    """The final :class:`TrainState`, plus what the workers agreed on."""

    world_size: int = 1
    # One parameter digest per rank (parameter_digest): DDP keeps them equal.
    param_digests: list[str] = field(default_factory=list)


def _train_loop_per_worker(config: dict[str, Any]) -> None:
    """One Ray Train worker: build everything from the config, train, report the outcome."""
    import ray.train

    os.environ.update(config["env"])  # also when Ray was started by someone else
    if config["use_gpu"]:
        import ray.train.torch

        device = ray.train.torch.get_device()
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
        torch.set_num_threads(config["cpus_per_worker"])
    mcfg: PGMMConfig = config["model_config"]
    estimator = None
    if config["estimator_dir"] is not None:
        from pgmm.models.pose_estimator import HRNetLite

        estimator = HRNetLite.from_pretrained(config["estimator_dir"])
    trainer = DistributedPGMMTrainer(
        mcfg,
        config["train_config"],
        config["dataset"].build(mcfg.image_size),
        config["run_dir"],
        device=device,
        estimator=estimator,
        vgg_weights=config["vgg_weights"],
        progress=config["progress"],
    )
    try:
        state = trainer.run()
    except TrainingStopped:
        return  # the driver's stop request: train_distributed reports it, not each worker
    digests: list[str | None] = [None] * trainer.world_size
    dist.all_gather_object(digests, parameter_digest(trainer.model))
    metrics = {**state.__dict__, "world_size": trainer.world_size, "param_digests": digests}
    if trainer.rank != 0:
        ray.train.report(metrics)
        return
    # Ray Train (v2) returns only metrics that come with a checkpoint: rank 0 attaches a tiny
    # one holding the same outcome (the model itself is already in RUN/model).
    with tempfile.TemporaryDirectory(prefix="pgmm-outcome-") as tmp:
        (Path(tmp) / "outcome.json").write_text(json.dumps(metrics, indent=2))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def train_distributed(
    model_config: PGMMConfig,
    train_config: TrainConfig,
    dataset_spec: DatasetSpec | str,
    run_dir: str | Path,
    num_workers: int = 2,
    use_gpu: bool = False,
    estimator_dir: str | Path | None = None,
    vgg_weights: str | Path | None = None,
    *,
    cpus_per_worker: int = 1,
    ray_address: str | None = None,
    progress: bool = True,
) -> DistributedTrainState:
    """Train PGMM with DDP on ``num_workers`` Ray Train workers; resumes like ``PGMMTrainer``.

    Args:
        dataset_spec: rebuilt in every worker (a ``str`` is the ``--data`` of ``slp train``).
        run_dir: the run folder (written by rank 0 only); Ray's own run state goes to
            ``run_dir/ray``. Multi-node: it must be on a filesystem every node sees.
        num_workers: one process per GPU with ``use_gpu`` (NCCL), else per CPU slot (gloo).
        estimator_dir, vgg_weights: as ``--pose-estimator`` / ``--vgg19`` of ``slp train``;
            paths that every worker can read.
        cpus_per_worker: CPU slots reserved per worker (its torch threads without a GPU).
        ray_address: an existing cluster (e.g. ``"auto"``); ``None`` starts a private local
            Ray that is shut down on return. A Ray the caller already started is used as is.

    Returns:
        The final state, with one parameter digest per rank (all equal after DDP training).

    Raises:
        TrainingStopped: Ctrl-C or SIGTERM reached this (driver) process; the workers finished
            their step and rank 0 wrote the checkpoint. A second signal abandons the wait.
    """
    import ray
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    if num_workers < 1 or cpus_per_worker < 1:
        raise ValueError("num_workers and cpus_per_worker must be >= 1")
    if isinstance(dataset_spec, str):
        dataset_spec = DatasetSpec(dataset_spec)
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    stop_file = run_dir / STOP_FILE
    stop_file.unlink(missing_ok=True)  # a request left by an earlier run is no request
    # Fail in the driver, before any worker starts, on what would fail in every worker.
    check_resume_world_size(run_dir, num_workers)
    env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV_PREFIX)}
    config = {
        "model_config": model_config,
        "train_config": train_config,
        "dataset": dataset_spec,
        "run_dir": str(run_dir),
        "estimator_dir": str(Path(estimator_dir).resolve()) if estimator_dir else None,
        "vgg_weights": str(Path(vgg_weights).resolve()) if vgg_weights else None,
        "use_gpu": use_gpu,
        "cpus_per_worker": cpus_per_worker,
        "progress": progress,
        "env": env,
    }
    owns_ray = not ray.is_initialized()
    if owns_ray:
        runtime_env = {"env_vars": env} if env else None
        if ray_address is None:
            ray.init(
                address="local",
                num_cpus=max(num_workers * cpus_per_worker, os.cpu_count() or 1),
                include_dashboard=False,
                _node_ip_address="127.0.0.1",  # no network lookups for a one-machine Ray
                runtime_env=runtime_env,
            )
        else:
            ray.init(address=ray_address, runtime_env=runtime_env)

    # Installed after ray.init, which sets its own SIGTERM handler in the driver.
    def request_stop(signum: int) -> None:
        stop_file.write_text(str(signum))

    stop = StopSignals(request_stop)
    try:
        trainer = TorchTrainer(
            _train_loop_per_worker,
            train_loop_config=config,
            torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
            scaling_config=ScalingConfig(
                num_workers=num_workers,
                use_gpu=use_gpu,
                resources_per_worker={"CPU": cpus_per_worker, **({"GPU": 1} if use_gpu else {})},
            ),
            run_config=RunConfig(
                name="train",
                storage_path=str(run_dir / "ray"),
                checkpoint_config=CheckpointConfig(num_to_keep=1),
            ),
        )
        with stop:
            try:
                result = trainer.fit()
            except Exception:
                if not stop.signum:
                    raise
    finally:
        stop_file.unlink(missing_ok=True)
        if owns_ray:
            ray.shutdown()
    if stop.signum:  # the workers stopped too (Ray reports their TrainingStopped as a failure)
        ckpt = find_checkpoint(run_dir / "checkpoints" / "last")
        step = json.loads((ckpt / "state.json").read_text())["global_step"] if ckpt else 0
        raise TrainingStopped(step, ckpt or run_dir / "checkpoints" / "last", stop.signum)
    error = getattr(result, "error", None)
    if isinstance(error, BaseException):
        raise error
    m = result.metrics
    if m is None:
        raise RuntimeError(f"Ray Train finished without reporting an outcome (run {run_dir})")
    return DistributedTrainState(**{f.name: m[f.name] for f in fields(DistributedTrainState)})
