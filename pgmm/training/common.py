"""Pieces every trainer shares: the resumable loop, atomic checkpoints, the lr schedule.

Every trainer (PGMM single-process and DDP, P_e, the gloss recognizer, T2G, G2P, signer
adaptation) runs its steps inside one :class:`ResumableLoop`, which owns what a stopped or
restarted run depends on, so that all of them behave the same when stopped:

* **Ctrl-C or SIGTERM** (what job schedulers, Kubernetes, Ray and systemd send) finishes the
  current step, writes the checkpoint and raises :class:`TrainingStopped`; the CLI turns it into
  one stderr line and exit status 128 + the signal (130 for Ctrl-C, 143 for SIGTERM). A second
  signal abandons the step at once (the checkpoint of the last finished step is then written).
* **Checkpoints** every ``checkpoint_every`` steps *or* ``checkpoint_minutes`` minutes,
  whichever comes first, so a SIGKILL or a power loss costs at most one interval.
* **Atomic swap** (:func:`save_step_checkpoint`): a checkpoint is written next to the old one and
  swapped in; a kill at any moment leaves a complete checkpoint (:func:`find_checkpoint`).
* The resume message, the CSV log (flushed per row: a killed run keeps every row it logged),
  the progress bar and the final checkpoint.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Protocol

import torch
from tqdm import tqdm

from pgmm.console import progress as progress_bar

#: Default of every trainer's ``checkpoint_minutes``: a stop by SIGKILL loses at most this.
CHECKPOINT_MINUTES = 5.0
#: The signals handled like Ctrl-C: finish the step, write the checkpoint, stop.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingStopped(KeyboardInterrupt):
    """A run stopped by Ctrl-C or a signal, after writing its checkpoint.

    A ``KeyboardInterrupt``, so code that already handles Ctrl-C handles it too. ``exit_code``
    is the shell's convention for death by that signal (128 + its number), so a job scheduler
    sees a stopped run as stopped, not as finished or crashed.
    """

    def __init__(self, step: int, checkpoint: str | Path, signum: int = signal.SIGINT) -> None:
        self.step, self.checkpoint, self.signum = step, Path(checkpoint), int(signum)
        super().__init__(
            f"stopped by {signal.Signals(self.signum).name} at step {step}; checkpoint "
            f"{self.checkpoint} (run the same command again to resume)"
        )

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    def __reduce__(self) -> tuple[type[TrainingStopped], tuple[int, Path, int]]:
        # Rebuilt from its fields when pickled (Ray sends worker errors to the driver).
        return type(self), (self.step, self.checkpoint, self.signum)


class StopSignals:
    """While active (main thread only): the first SIGINT/SIGTERM is recorded, a second raises.

    A handler that only records the signal lets the step in flight finish, so the checkpoint
    holds a consistent model, optimizer and step count; raising ``KeyboardInterrupt`` anywhere,
    as Python's default SIGINT handler does, could land between the optimizer update and the
    step counter. ``on_signal`` runs on the first signal (the Ray Train driver uses it to tell
    its workers). Previous handlers are restored on exit. Signal handlers can only be installed
    in the main thread; elsewhere (a Ray Train worker thread) this does nothing.
    """

    def __init__(self, on_signal: Callable[[int], None] | None = None) -> None:
        self.signum = 0
        self._on_signal = on_signal
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum:
            raise KeyboardInterrupt  # second signal: abandon the step
        self.signum = signum
        if self._on_signal is not None:
            self._on_signal(signum)

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            # None: a handler installed from C; the default is the closest we can restore.
            signal.signal(sig, signal.SIG_DFL if previous is None else previous)
        self._previous.clear()


class CsvLog:
    """Append-only CSV log, flushed per row so a killed run keeps every row it wrote.

    ``header``: write the first row's keys as a header line when the file is new (never when
    appending to an existing log, so a resumed run continues the same table).
    """

    def __init__(self, path: str | Path, header: bool = True) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._header = header and (not self.path.exists() or self.path.stat().st_size == 0)
        self._file = self.path.open("a", newline="")
        self._writer = csv.writer(self._file)

    def write(self, row: Mapping[str, Any]) -> None:
        if self._header:
            self._writer.writerow(list(row))
            self._header = False
        self._writer.writerow(list(row.values()))
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class ResumableLoop:
    """The loop every trainer repeats: resume message, log, bar, checkpoints, stop, final save.

    Usage (``save`` writes the trainer's complete checkpoint atomically)::

        with ResumableLoop("P_e", run_dir, ckpt, save, start=step, total=steps, every=200,
                           resumed=resumed, log=run_dir / "log.csv") as loop:
            while step < steps:
                ...one optimizer step...
                step += 1
                loop.log({"step": step, "loss": loss})   # optional
                loop.end_step(step, loss=f"{loss:.3f}")  # checkpoint if due; stop if asked

    ``end_step`` writes the checkpoint when ``step`` is a multiple of ``every`` or ``minutes``
    have passed since the last one, and after a stop signal writes it and raises
    :class:`TrainingStopped`. Leaving the block normally writes the final checkpoint; leaving
    it by a ``KeyboardInterrupt`` (a second signal, or one raised by other code) writes the
    checkpoint of the last finished step and raises :class:`TrainingStopped` instead; any other
    error propagates without a save (the last periodic checkpoint stays).

    ``agree_stop``: maps this process's stop signal (0: none) to the one every process acts
    on; called after every step, so data-parallel ranks stop at the same step (a collective).
    """

    def __init__(
        self,
        name: str,
        run_dir: str | Path,
        checkpoint: str | Path,
        save: Callable[[], None],
        *,
        start: int,
        total: int,
        every: int | None,
        minutes: float = CHECKPOINT_MINUTES,
        resumed: bool = False,
        progress: bool = True,
        log: str | Path | None = None,
        log_header: bool = True,
        agree_stop: Callable[[int], int] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if every is not None and every < 1:
            raise ValueError(f"checkpoint_every must be >= 1, got {every}")
        if minutes <= 0:
            raise ValueError(f"checkpoint_minutes must be > 0, got {minutes}")
        self.name, self.run_dir, self.checkpoint = name, Path(run_dir), Path(checkpoint)
        self._save, self.step, self.total = save, start, total
        self.every, self.seconds = every, minutes * 60.0
        self.resumed, self.progress = resumed, progress
        self._log_path, self._log_header = log, log_header
        self._agree_stop, self._clock = agree_stop, clock
        self._signals = StopSignals()
        self._log: CsvLog | None = None
        self.bar: tqdm | None = None
        self._saved_at = 0.0

    def __enter__(self) -> ResumableLoop:
        if self.resumed:
            print(f"{self.name}: resumed from step {self.step} of {self.run_dir}",
                  file=sys.stderr, flush=True)  # fmt: skip
        if self._log_path is not None:
            self._log = CsvLog(self._log_path, self._log_header)
        self.bar = progress_bar(total=self.total, initial=min(self.step, self.total),
                                unit="step", desc=self.name, disable=not self.progress)  # fmt: skip
        self._saved_at = self._clock()
        self._signals.__enter__()
        return self

    def log(self, row: Mapping[str, Any]) -> None:
        """One row of the run's CSV log (needs ``log=``)."""
        if self._log is None:
            raise RuntimeError(f"{self.name}: this loop has no log file")
        self._log.write(row)

    def write(self, line: str) -> None:
        """A line for the user that does not break the progress bar."""
        tqdm.write(line)

    def save(self) -> None:
        """Write the checkpoint now (and restart the clock of ``checkpoint_minutes``)."""
        self._save()
        self._saved_at = self._clock()

    def end_step(self, step: int, **postfix: str) -> None:
        """After each finished step: bar, checkpoint if due, stop if a signal came."""
        self.step = step
        assert self.bar is not None, "end_step outside the with block"
        self.bar.update(step - self.bar.n)
        if postfix:
            self.bar.set_postfix(postfix, refresh=False)
        signum = self._signals.signum
        if self._agree_stop is not None:
            signum = self._agree_stop(signum)
        if signum:
            self.save()
            raise TrainingStopped(step, self.checkpoint, signum)
        due = self.every is not None and step % self.every == 0
        if due or self._clock() - self._saved_at >= self.seconds:
            self.save()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None:
                self.save()  # the final checkpoint
            elif issubclass(exc_type, KeyboardInterrupt) and not isinstance(exc, TrainingStopped):
                self.save()
                signum = self._signals.signum or signal.SIGINT  # a second signal: the first's
                raise TrainingStopped(self.step, self.checkpoint, signum) from exc
        finally:
            self._signals.__exit__()
            if self.bar is not None:
                self.bar.close()
            if self._log is not None:
                self._log.close()


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


def find_checkpoint(ckpt: str | Path) -> Path | None:
    """The complete checkpoint at ``ckpt``, else the one a swap left beside it, else ``None``.

    :func:`save_step_checkpoint` moves the old checkpoint to ``.old`` before the new one takes its
    place; a kill between the two renames leaves only ``.old``, which is then the latest.
    """
    ckpt = Path(ckpt)
    for folder in (ckpt, ckpt.parent / ".old"):
        if (folder / "state.json").is_file():
            return folder
    return None


class SavesPretrained(Protocol):
    """A model that writes its own folder (config + weights), as every model here does."""

    def save_pretrained(self, directory: str | Path) -> object: ...


def save_step_checkpoint(
    ckpt: Path,
    model: SavesPretrained,
    optimizer: torch.optim.Optimizer,
    state: Mapping[str, Any],
    indent: int | None = None,
) -> None:
    """``ckpt`` = model folder + ``optimizer.pt`` + ``state.json`` (``indent``), never half of one.

    All is written into an empty temporary folder, ``state.json`` last (it marks the folder
    complete), which is then swapped in: a kill while writing leaves the previous checkpoint
    untouched; a kill during the swap leaves it as ``.old`` (:func:`find_checkpoint`).
    """
    tmp, old = ckpt.parent / ".tmp", ckpt.parent / ".old"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp)
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    (tmp / "state.json").write_text(json.dumps(state, indent=indent, default=list))
    if ckpt.exists():
        shutil.rmtree(old, ignore_errors=True)
        ckpt.replace(old)
    tmp.replace(ckpt)
    shutil.rmtree(old, ignore_errors=True)


def resume_step_state(
    found: Path | None,
    optimizer: torch.optim.Optimizer,
    map_location: str | torch.device | None = None,
) -> dict[str, Any]:
    """The ``state.json`` of checkpoint ``found`` (``{"step": 0}`` without one), after restoring
    ``optimizer`` from its ``optimizer.pt`` (checkpoints of older versions may have none)."""
    if found is None:
        return {"step": 0}
    if (found / "optimizer.pt").exists():
        saved = torch.load(found / "optimizer.pt", map_location=map_location, weights_only=True)
        optimizer.load_state_dict(saved)
    return json.loads((found / "state.json").read_text())


def load_scaler_state(scaler: torch.amp.GradScaler, state: Mapping[str, Any] | None) -> None:
    """Restore a gradient scaler from a checkpoint written on any device.

    A run without AMP -- every CPU run -- saves its disabled scaler as ``{}``, which an enabled
    scaler refuses, so resuming a CPU run on a GPU would fail. Such a run resumes with a fresh
    scaler instead: its default scale is re-tuned by the first few overflowing steps (each
    halves it), which costs those steps' updates, not the run. The other way round, a disabled
    scaler ignores what an AMP run saved: there is nothing to scale.
    """
    if state:
        scaler.load_state_dict(dict(state))
