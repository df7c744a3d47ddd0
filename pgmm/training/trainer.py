"""PGMM trainer: random frame pairs of one video, Adam, step-wise lr decay, resumable.

A run lives in one folder::

    RUN/
      checkpoints/last/   model (config.json + model.safetensors), optimizer.pt, state.json
      model/              the final model (PGMM.from_pretrained-able)
      log.csv             one row per logged step (every loss term, lr, seconds)
      tensorboard/        the same scalars for TensorBoard
      samples/            source | driving | generated grids (PNG)

Starting the same command again resumes from ``checkpoints/last`` with the optimizer,
scheduler and data order (the pair sampler is seeded per epoch and the already-trained batches
of the epoch are skipped). Ctrl-C or SIGTERM finishes the step, writes the checkpoint and stops
(:class:`~pgmm.training.common.TrainingStopped`); a SIGKILL loses at most ``checkpoint_every``
steps or ``checkpoint_minutes`` minutes (:class:`~pgmm.training.common.ResumableLoop`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

from pgmm.allocator import keep_freed_memory
from pgmm.data.loaders import FrameCache, SignVideoDataset
from pgmm.data.samplers import FramePairDataset, VideoWindowSampler
from pgmm.losses.total import PGMMLoss
from pgmm.models.config import PGMMConfig
from pgmm.models.pgmm import PGMM, PGMMOutput
from pgmm.models.pose_estimator import PoseEstimator
from pgmm.models.posenet import bilinear_state_from_transposed
from pgmm.pose.heatmaps import pose_heatmaps
from pgmm.precision import cpu_computes_bf16
from pgmm.training.appearance import jitter_appearance
from pgmm.training.common import (
    CsvLog,
    ResumableLoop,
    find_checkpoint,
    load_scaler_state,
    resume_step_state,
    save_step_checkpoint,
)
from pgmm.training.config import TrainConfig
from pgmm.video import contact_sheet

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter


@dataclass
class TrainState:
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    # Early stopping (only with a validator): best held-out score so far, and how many
    # validations in a row have not beaten it. Saved with the checkpoint, so a resumed run
    # keeps its patience.
    best_score: float | None = None
    bad_checks: int = 0
    stopped_early: bool = False


@contextmanager
def float32_islands(modules: Sequence[nn.Module], device_type: str) -> Iterator[None]:
    """Inside an autocast region, run ``modules`` in float32 on float32 inputs.

    For the layers that regress coordinates (keypoints, the background transform): in bf16 a
    coordinate near 1 is off by up to 2^-8, half a pixel at 128^2, and these layers are a
    sliver of the compute. Forward hooks switch autocast off around each call and undo it after;
    they are removed on exit, so validation and inference never see them.
    """
    saved: list[bool] = []

    def enter(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        saved.append(torch.is_autocast_enabled(device_type))
        torch.set_autocast_enabled(device_type, False)
        return tuple(a.float() if torch.is_tensor(a) and a.is_floating_point() else a for a in args)

    def leave(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        torch.set_autocast_enabled(device_type, saved.pop())

    handles = [h for m in modules for h in (m.register_forward_pre_hook(enter),
                                            m.register_forward_hook(leave))]  # fmt: skip
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def sample_sheet(
    source: torch.Tensor, driving: torch.Tensor, prediction: torch.Tensor, count: int = 4
) -> np.ndarray:
    """Rows source | driving | generated of the first ``count`` pairs, as one uint8 image.

    Every tensor is brought to the CPU in float32 first: on a GPU the prediction lives on the
    device (maybe in half precision, maybe with a graph) while the batch stays on the host.
    """
    n = min(count, prediction.shape[0])
    tiles = torch.cat([t[:n].detach().float().cpu() for t in (source, driving, prediction)])
    frames = (tiles.clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255).round()
    return contact_sheet(frames.astype(np.uint8), cols=n)


class PGMMTrainer:
    def __init__(
        self,
        model_config: PGMMConfig,
        train_config: TrainConfig,
        dataset: SignVideoDataset,
        run_dir: str | Path,
        device: str | torch.device = "cpu",
        estimator: PoseEstimator | None = None,
        vgg_weights: str | Path | None = None,
        progress: bool = True,
        init_from: PGMM | None = None,
        validator: Callable[[PGMM], float] | None = None,
        validate_every: int = 50,
        patience: int = 3,
    ) -> None:
        """``init_from``: start from these weights (fine-tuning; its architecture must match
        ``model_config``). ``validator``: a held-out score, lower is better, computed every
        ``validate_every`` steps; the best model is kept in ``RUN/best`` and becomes
        ``RUN/model``, and training stops after ``patience`` validations without a new best.
        """
        if validate_every < 1 or patience < 1:
            raise ValueError("validate_every and patience must be >= 1")
        self.mcfg, self.cfg = model_config, train_config
        self.run_dir = Path(run_dir)
        self.device = torch.device(device)
        if self.device.type == "cpu":
            keep_freed_memory()  # the step's activations reuse pages (pgmm.allocator)
        self.progress = progress
        if dataset.size != model_config.image_size:
            raise ValueError(
                f"dataset frames are {dataset.size}px but the model is {model_config.image_size}px"
            )
        if train_config.frame_cache_gib > 0:
            dataset = FrameCache(
                dataset, self.run_dir / "frames", int(train_config.frame_cache_gib * 2**30)
            )
        self.estimator = estimator.to(self.device) if estimator is not None else None
        if self.estimator is not None:
            self.estimator.freeze()
        torch.manual_seed(train_config.seed)
        self.model = PGMM(model_config).to(self.device)
        if init_from is not None:
            # Only the weights: the loss weights of model_config may differ from the base's.
            state = init_from.state_dict()
            if (init_from.config.pose_upsample, model_config.pose_upsample) == (
                "transposed",
                "bilinear",
            ):  # a checkpoint from before the checkerboard fix, fine-tuned with the fix
                state = bilinear_state_from_transposed(state)
            self.model.load_state_dict(state)
        self.validator, self.validate_every, self.patience = validator, validate_every, patience
        self.loss = PGMMLoss(model_config, vgg_weights=vgg_weights, estimator=self.estimator)
        self.loss.to(self.device)
        # The fused Adam: one kernel over all parameters instead of a loop of small ops, ~60 %
        # less optimizer time on a CPU (about 1.5 % of a full-small step), same update rule.
        self.optimizer = torch.optim.Adam(
            self.model.parameters(),
            lr=train_config.lr,
            betas=train_config.betas,
            fused=self.device.type in ("cpu", "cuda") or None,
        )
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(
            self.optimizer, milestones=train_config.milestone_epochs(), gamma=0.1
        )
        self.pairs = FramePairDataset(dataset, train_config.pairs_per_video, seed=train_config.seed)
        window = min(4, self.pairs.cache_videos)
        self.sampler = VideoWindowSampler(self.pairs, window=window, seed=train_config.seed)
        self.steps_per_epoch = math.ceil(len(self.pairs) / train_config.batch_size)
        use_amp = train_config.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
        self.autocast_dtype = torch.float16 if use_amp else None
        if train_config.cpu_bf16 and self.device.type == "cpu" and cpu_computes_bf16():
            self.autocast_dtype = torch.bfloat16  # no loss scaling: bf16 has float32's range
        # Coordinate regressors stay float32 under bf16 (see float32_islands).
        self._float32_modules = [
            self.model.kp_detector.backbone.fc,
            self.model.bg_motion.backbone.fc,
            self.model.driving_head,
        ]
        self.state = TrainState()
        # TensorBoard: opened at the first log row; False where tensorboard is not installed.
        self._writer: SummaryWriter | Literal[False] | None = None
        self._loop: ResumableLoop | None = None

    # ------------------------------------------------------------------ checkpoints
    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoints" / "last"

    def save_checkpoint(self) -> None:
        """Write a complete checkpoint beside the old one, then swap (never a half checkpoint)."""
        # The scheduler is fully described by its epoch counter (its own state_dict holds a
        # Counter that does not survive JSON); the current lr lives in the optimizer state.
        state = {
            **self.state.__dict__,
            "scheduler_last_epoch": self.scheduler.last_epoch,
            "scaler": self.scaler.state_dict(),
            "train_config": self.cfg.to_dict(),
        }
        save_step_checkpoint(self.checkpoint_dir, self.model, self.optimizer, state, indent=2)

    def try_resume(self) -> bool:
        """Load ``checkpoints/last`` (or the previous one if a swap was interrupted)."""
        ckpt = find_checkpoint(self.checkpoint_dir)
        if ckpt is None:
            return False
        loaded = PGMM.from_pretrained(
            ckpt, variant=self.mcfg.variant, image_size=self.mcfg.image_size
        )
        if loaded.config.to_dict() != self.mcfg.to_dict():
            raise ValueError(f"{ckpt} was trained with a different model config; use a new run dir")
        self.model.load_state_dict(loaded.state_dict())
        state = resume_step_state(ckpt, self.optimizer, self.device)
        self.scheduler.last_epoch = state["scheduler_last_epoch"]
        self.scheduler._last_lr = [g["lr"] for g in self.optimizer.param_groups]
        load_scaler_state(self.scaler, state["scaler"])
        known = TrainState.__dataclass_fields__
        self.state = TrainState(**{k: v for k, v in state.items() if k in known})
        return True

    def _validate(self) -> None:
        """Score the model on held-out data; keep the best; count toward early stopping."""
        assert self.validator is not None, "_validate runs only with a validator"
        self.model.eval()
        with torch.no_grad():
            score = float(self.validator(self.model))
        state = self.state
        if state.best_score is None or score < state.best_score:
            state.best_score, state.bad_checks = score, 0
            self.model.save_pretrained(self.run_dir / "best")
        else:
            state.bad_checks += 1
            state.stopped_early = state.bad_checks >= self.patience
        log = CsvLog(self.run_dir / "validation.csv")
        log.write(
            {"step": state.global_step, "score": f"{score:.6f}", "best": f"{state.best_score:.6f}"}
        )
        log.close()

    # ------------------------------------------------------------------ logging
    def _log(self, terms: dict[str, torch.Tensor], seconds: float) -> None:
        """One log row; the only place where the step's loss terms are read back to the host."""
        self._log_values({k: float(v) for k, v in terms.items()}, seconds)

    def _log_values(self, terms: dict[str, float], seconds: float) -> None:
        row = {
            "step": self.state.global_step,
            "epoch": self.state.epoch,
            "lr": self.optimizer.param_groups[0]["lr"],
            "seconds": round(seconds, 4),
            **{k: round(v, 6) for k, v in terms.items()},
        }
        assert self._loop is not None, "_log runs inside run()"
        self._loop.log(row)
        if self._writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard missing: the CSV log is the source of truth
                self._writer = False
            else:
                self._writer = SummaryWriter(str(self.run_dir / "tensorboard"))
        if self._writer:
            for k, v in terms.items():
                self._writer.add_scalar(f"loss/{k}", v, self.state.global_step)
            self._writer.add_scalar("lr", row["lr"], self.state.global_step)

    def _save_samples(self, batch: dict[str, torch.Tensor], prediction: torch.Tensor) -> None:
        sheet = sample_sheet(batch["source"], batch["driving"], prediction)
        path = self.run_dir / "samples" / f"step_{self.state.global_step:07d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(sheet).save(path)

    # ------------------------------------------------------------------ training
    def _heatmaps(self, batch: dict[str, Any], key: str, image: torch.Tensor) -> torch.Tensor:
        """Ground-truth poses drawn as the model config says (it is saved with the model, so
        serving and evaluation draw the same maps); without poses, P_e's maps of ``image``."""
        pose = batch.get(f"{key}_pose")
        if pose is not None:
            cfg = self.mcfg
            points = pose.to(self.device, non_blocking=True)
            return pose_heatmaps(points, cfg.image_size, cfg.heatmap_stride, cfg.heatmap_sigma)
        if self.estimator is None:
            raise ValueError("the dataset has no poses: pass a pose estimator (P_e)")
        with torch.no_grad():
            return self.estimator(image).clamp(min=0)

    def train_step(self, batch: dict[str, Any]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """One optimizer step; returns the detached loss terms and prediction, on the device.

        Nothing here waits for the device: reading a loss back (``float``) would stall the host
        until the GPU has caught up, so :meth:`run` does it only at log intervals.
        """
        cfg = self.cfg
        # Every random draw of a step (TPS dropout, equivariance warps) is seeded by the step,
        # so a resumed run continues exactly as the uninterrupted one would have.
        torch.manual_seed(cfg.seed * 1_000_003 + self.state.global_step)
        # With pinned host memory (see _batches), these copies overlap the previous step's work.
        src = batch["source"].to(self.device, non_blocking=True)
        drv = batch["driving"].to(self.device, non_blocking=True)
        src, drv = jitter_appearance((src, drv), cfg.appearance_jitter)
        # The sample sheet shows the frames the model saw (recoloured, if jittered).
        batch["source"], batch["driving"] = src, drv
        data = {
            "source": src,
            "driving": drv,
            "source_heatmaps": self._heatmaps(batch, "source", src),
            "driving_heatmaps": self._heatmaps(batch, "driving", drv),
        }
        self.model.train()
        bf16 = self.autocast_dtype == torch.bfloat16
        with (
            torch.autocast(
                self.device.type,
                dtype=self.autocast_dtype,
                enabled=self.autocast_dtype is not None,
            ),
            float32_islands(self._float32_modules if bf16 else [], self.device.type),
        ):
            out = self.model(
                src,
                drv,
                data["driving_heatmaps"],
                data["source_heatmaps"],
                dropout_p=cfg.dropout_p(self.state.epoch),
                with_align=self.mcfg.loss_weights["align"] > 0,
            )
            terms = self._loss_terms(data, out)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(terms["total"]).backward()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return {k: v.detach() for k, v in terms.items()}, out.prediction.detach()

    def _batches(self, epoch: int, skip: int) -> DataLoader:
        """This process's share of the seeded batches of ``epoch``, after ``skip`` steps;
        page-locked on CUDA, so host-to-device copies can overlap."""
        self.pairs.set_epoch(epoch)
        self.sampler.set_epoch(epoch)
        order = list(self.sampler)
        size = self.cfg.batch_size
        batches = self._share([order[i : i + size] for i in range(0, len(order), size)])
        return DataLoader(
            self.pairs,
            batch_sampler=batches[skip:],
            num_workers=self.cfg.num_workers,
            pin_memory=self.device.type == "cuda",
        )

    def _share(self, batches: list[list[int]]) -> list[list[int]]:
        """The batches of an epoch this process trains (a data-parallel rank takes a share)."""
        return batches

    def _loss_terms(
        self, batch: dict[str, torch.Tensor], out: PGMMOutput
    ) -> dict[str, torch.Tensor]:
        """The weighted loss terms of ``out`` (data-parallel training computes them via DDP)."""
        return self.loss(self.model, batch, out)

    def _agree_stop(self, signum: int) -> int:
        """The stop signal this run acts on after a step (data-parallel ranks must agree)."""
        return signum

    def run(self) -> TrainState:
        """Train until ``epochs`` (or ``max_steps``); resumes automatically.

        Ctrl-C / SIGTERM: writes the checkpoint and raises
        :class:`~pgmm.training.common.TrainingStopped`.
        """
        self.run_dir.mkdir(parents=True, exist_ok=True)
        resumed = self.try_resume()
        cfg = self.cfg
        total = self.steps_per_epoch * cfg.epochs
        if cfg.max_steps is not None:
            total = min(total, cfg.max_steps)
        self._loop = ResumableLoop(
            f"PGMM {self.mcfg.variant}",
            self.run_dir,
            self.checkpoint_dir,
            self.save_checkpoint,
            start=self.state.global_step,
            total=total,
            every=cfg.checkpoint_every,
            minutes=cfg.checkpoint_minutes,
            resumed=resumed,
            progress=self.progress,
            log=self.run_dir / "log.csv",
            agree_stop=self._agree_stop,
        )
        with self._loop as loop:
            while (
                self.state.epoch < cfg.epochs
                and self.state.global_step < total
                and not self.state.stopped_early
            ):
                start = time.perf_counter()
                for batch in self._batches(self.state.epoch, self.state.step_in_epoch):
                    terms, pred = self.train_step(batch)
                    self.state.global_step += 1
                    self.state.step_in_epoch += 1
                    step = self.state.global_step
                    logged = step % cfg.log_every == 0 or step == total
                    if logged:
                        self._log(terms, time.perf_counter() - start)
                    if step % cfg.sample_every == 0:
                        self._save_samples(batch, pred)
                    if self.validator is not None and (
                        step % self.validate_every == 0 or step == total
                    ):
                        self._validate()
                    # The bar's loss, too, only when logged: reading it waits for the device.
                    loop.end_step(
                        step, **({"loss": f"{float(terms['total']):.3f}"} if logged else {})
                    )
                    start = time.perf_counter()
                    if step >= total or self.state.stopped_early:
                        break
                if self.state.step_in_epoch >= self.steps_per_epoch:
                    self.state.epoch += 1
                    self.state.step_in_epoch = 0
                    self.scheduler.step()
        best = self.run_dir / "best"
        if self.validator is not None and (best / "config.json").exists():
            self.model.load_state_dict(PGMM.from_pretrained(best).state_dict())
        self.model.save_pretrained(self.run_dir / "model")
        if self._writer:
            self._writer.close()
        return self.state
