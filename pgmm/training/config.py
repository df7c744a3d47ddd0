"""Training hyper-parameters (the ``train:`` section of a ``configs/pgmm/*.yaml`` file).

Defaults follow the paper / TPSMM: Adam lr 2e-4, betas (0.5, 0.999), lr / 10 at 60 % and 90 %
of the epochs, N random frame pairs per video per epoch, TPS dropout in early epochs.

Only *how* to train lives here. What shapes the model's input -- the heatmaps' sigma included,
which was a ``train:`` key until issue 18 -- is in :class:`~pgmm.models.config.PGMMConfig`,
saved with the model. A ``train: heatmap_sigma`` in a YAML file is an error that says where it
went; the copy in the ``train_config`` of an old run's ``state.json`` is not read on resume.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pgmm.checkpoint import DictConfig, dataclass_from_dict, yaml_section


@dataclass
class TrainConfig(DictConfig):
    epochs: int = 100
    pairs_per_video: int = 100  # TPSMM's num_repeats: random pairs per video per epoch
    batch_size: int = 8
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    milestones: tuple[float, float] = (0.6, 0.9)  # fractions of the epochs; lr / 10 at each
    grad_clip: float = 1.0
    # TPS dropout (TPSMM): p = min(max_p, start_p + inc_p * epoch) while epoch < epochs * until.
    dropout_start_p: float = 0.1
    dropout_inc_p: float = 0.05
    dropout_max_p: float = 0.3
    dropout_until: float = 0.35
    amp: bool = True  # mixed precision on CUDA only
    # bfloat16 autocast on a CPU that computes bf16 natively (AVX512-BF16 or AMX); ignored on
    # other CPUs, which would emulate it more slowly than float32. bench/train_step.py
    # measures its speed and its losses against float32.
    cpu_bf16: bool = False
    # Up to this many GiB of each video's frames kept in RUN/frames as uint8 .npy files (read by
    # memory map), so a video is rendered or decoded once per run instead of once per epoch.
    frame_cache_gib: float = 0.0
    # Recolour each frame pair (source and driving alike) by a random hue/saturation/contrast/
    # brightness transform of this strength in [0, 1] (pgmm/training/appearance.py): more
    # apparent identities than the corpus has, so unseen signers are copied, not repainted.
    appearance_jitter: float = 0.0
    num_workers: int = 0
    seed: int = 0
    log_every: int = 10
    sample_every: int = 200
    checkpoint_every: int = 200
    # ...or every this many minutes, whichever comes first: what a SIGKILL can cost at most.
    checkpoint_minutes: float = 5.0
    max_steps: int | None = None  # stop early (smoke tests, fixed compute budgets)

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)  # type: ignore[assignment]
        self.milestones = tuple(self.milestones)  # type: ignore[assignment]
        if self.epochs < 1 or self.batch_size < 1 or self.pairs_per_video < 1:
            raise ValueError("epochs, batch_size and pairs_per_video must be >= 1")
        if self.checkpoint_every < 1 or self.checkpoint_minutes <= 0:
            raise ValueError("checkpoint_every must be >= 1 and checkpoint_minutes > 0")
        if self.frame_cache_gib < 0:
            raise ValueError(f"frame_cache_gib must be >= 0, got {self.frame_cache_gib}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0.0 <= self.appearance_jitter <= 1.0:
            raise ValueError(f"appearance_jitter must be in [0, 1], got {self.appearance_jitter}")

    def dropout_p(self, epoch: int) -> float:
        if epoch >= self.epochs * self.dropout_until:
            return 0.0
        return min(self.dropout_max_p, self.dropout_start_p + self.dropout_inc_p * epoch)

    def milestone_epochs(self) -> list[int]:
        return [max(1, round(self.epochs * m)) for m in self.milestones]

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
        """The ``train:`` section of a ``configs/pgmm/*.yaml`` file, then ``overrides``."""
        section = {**yaml_section(path, "train", "training"), **(overrides or {})}
        if "heatmap_sigma" in section:
            raise ValueError(
                f"{path}: train.heatmap_sigma is now model.heatmap_sigma (saved with the "
                "renderer, so serving and evaluation draw the maps it was trained on); move it "
                "to the model section"
            )
        return dataclass_from_dict(cls, section, f"{path} train config")
