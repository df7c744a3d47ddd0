"""Pieces shared by the small step-based trainers (P_e, the gloss recognizer)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn


def cosine_schedule(
    optimizer: torch.optim.Optimizer, steps: int, start_step: int = 0, warmup: int = 0
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then cosine decay to 5 % of the base lr at ``steps``.

    ``start_step`` jumps a resumed run's schedule (and the optimizer's lr) to where it stopped,
    without stepping the scheduler before the optimizer.
    """

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        done = min(step - warmup, steps - warmup) / max(1, steps - warmup)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * done))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    if start_step:
        schedule.last_epoch = start_step
        for group, base in zip(optimizer.param_groups, schedule.base_lrs, strict=True):
            group["lr"] = base * factor(start_step)
    return schedule


def save_step_checkpoint(
    ckpt: Path, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]
) -> None:
    """``ckpt`` = model folder + ``optimizer.pt`` + ``state.json``, swapped in complete."""
    tmp = ckpt.parent / ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    (tmp / "state.json").write_text(json.dumps(state))
    shutil.rmtree(ckpt, ignore_errors=True)
    tmp.replace(ckpt)
