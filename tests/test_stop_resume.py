"""Training survives being stopped: every trainer, in a real subprocess, against real signals.

For each trainer a tiny run (checkpoint every ``EVERY`` steps, far more steps than the test
lets it take) is started in one run folder:

1. SIGTERM mid-run: exit status 128 + 15, one "stopped by SIGTERM at step N; checkpoint PATH"
   line, and the checkpoint is at the last finished step;
2. the re-run resumes from exactly that step (nothing lost); SIGKILL mid-run: the checkpoint
   left is the last periodic one (steps lost <= ``EVERY``) and loads;
3. a kill inside the next checkpoint write is what is left on disk then -- a partial temporary
   file, and for checkpoint folders a swap cut between its two renames -- and the checkpoint
   still loads at its step. The slow variant re-runs the trainer on that folder (it resumes
   from it) and SIGKILLs it from *inside* a real checkpoint write (``torch.save`` patched to
   write half a file and kill the process); the checkpoint before still loads.

The subprocess runs this file as a script (``python tests/test_stop_resume.py TRAINER RUN``);
it records each finished step and each completed checkpoint in a side file, which the test
polls before signalling, so the signals land mid-run however slow the machine is. The data
parallel trainer (two gloo ranks, SIGTERM to rank 0 only) is the slow ``test_ddp_*``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

EVERY = 2  # checkpoint interval (steps) of every tiny run
STEPS = 100_000  # never reached: every run is stopped
TIMEOUT = 240.0  # seconds to wait for anything a subprocess does (a loaded CI machine is slow)
HERE = Path(__file__).resolve()
#: The PGMM runs' train settings: 2 videos x 3 pairs = 3 batches of 2 per epoch.
TINY_RUN = dict(epochs=10_000, batch_size=2, pairs_per_video=3, log_every=1,
                sample_every=10_000, checkpoint_every=EVERY)  # fmt: skip


# ------------------------------------------------------------------------ the subprocess side
def _tiny_pgmm_yaml(path: Path) -> Path:
    import yaml
    from tiny import TINY_PGMM

    model = {"variant": "tpsmm", "image_size": 128, **TINY_PGMM}
    path.write_text(yaml.safe_dump({"model": model, "train": TINY_RUN}))
    return path


def _run_pgmm(run: Path) -> int:
    """Through the CLI: its exit status and stderr line are part of what is tested."""
    from slp_pipeline.cli import main

    config = _tiny_pgmm_yaml(run.parent / "pgmm.yaml")
    return main(["train", "pgmm", "--config", str(config), "--data", "synth", "--max-videos", "2",
                 "--out", str(run), "--max-steps", str(STEPS)])  # fmt: skip


def _run_ddp(run: Path, rank: int, store: Path) -> None:
    """One rank of a 2-process gloo group (as ``torchrun`` would start it), SynthSigner dev."""
    import torch.distributed as dist
    from tiny import TINY_PGMM

    from pgmm.models.config import PGMMConfig
    from pgmm.training.config import TrainConfig
    from pgmm.training.distributed import DistributedPGMMTrainer, build_dataset

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        mcfg = PGMMConfig(variant="tpsmm", image_size=128, **TINY_PGMM)
        tcfg = TrainConfig(**TINY_RUN, max_steps=STEPS)
        data = build_dataset("synth", "dev", 128, 2)
        DistributedPGMMTrainer(mcfg, tcfg, data, run, progress=False).run()
    finally:
        dist.destroy_process_group()


def _run_ray(run: Path) -> None:
    """The Ray Train driver: SIGTERM reaches it, not the workers (Ray runs them in threads)."""
    from tiny import TINY_PGMM

    from pgmm.models.config import PGMMConfig
    from pgmm.training.config import TrainConfig
    from pgmm.training.distributed import DatasetSpec, train_distributed

    mcfg = PGMMConfig(variant="tpsmm", image_size=128, **TINY_PGMM)
    tcfg = TrainConfig(**TINY_RUN, max_steps=STEPS)
    train_distributed(mcfg, tcfg, DatasetSpec("synth", "dev", 2), run, num_workers=2,
                      progress=False)  # fmt: skip


def _run_pe(run: Path) -> None:
    from pgmm.models.pose_estimator import HRNetLiteConfig
    from pgmm.training.distributed import build_dataset
    from pgmm.training.pose_estimator import train_pose_estimator

    data = build_dataset("synth", "dev", 128, 2)
    train_pose_estimator(data, run, HRNetLiteConfig(widths=(8, 16), stem_width=8), STEPS,
                         batch_size=4, checkpoint_every=EVERY, progress=False)  # fmt: skip


def _run_recognizer(run: Path) -> None:
    from pgmm.data.synth.signer import SynthSigner
    from pgmm.training.recognizer import train_recognizer

    arch = {"hidden": 16, "rnn_hidden": 16, "rnn_layers": 1, "dropout": 0.0}
    train_recognizer(SynthSigner(languages=["de"]), "de", run, STEPS, batch_size=2,
                     max_sentences=4, config=arch, split="dev", checkpoint_every=EVERY,
                     progress=False)  # fmt: skip


def _run_t2g(run: Path) -> None:
    from text2pose.t2g import T2GConfig
    from text2pose.train_t2g import T2GTrainConfig, train_t2g

    model = T2GConfig(d_model=32, layers=1, heads=2, ffn_dim=64, text_vocab_size=200, max_len=64)
    cfg = T2GTrainConfig(model=model, epochs=STEPS, batch_tokens=60, warmup_steps=10, max_train=24,
                         max_eval=2, checkpoint_every=EVERY, progress=False)  # fmt: skip
    train_t2g(cfg, run)


def _run_g2p(run: Path) -> None:
    from pgmm.data.synth.signer import SynthSigner
    from text2pose.data import g2p_data_from_sentences
    from text2pose.g2p import train_g2p

    signer = SynthSigner(languages=["de"])
    sentences = sorted(signer.sentences("dev", "de"), key=lambda s: (s.num_frames, s.id))[:4]
    config = {"mode": "nar", "hidden_size": 32, "intermediate_size": 64, "encoder_layers": 1,
              "decoder_layers": 1, "num_heads": 2}  # fmt: skip
    train_g2p(config, g2p_data_from_sentences(signer, sentences), None, run, STEPS,
              batch_size=2, checkpoint_every=EVERY, progress=False)  # fmt: skip


def _run_adapt(run: Path) -> None:
    import torch
    from tiny import TINY_PGMM

    from pgmm.models.config import PGMMConfig
    from pgmm.models.pgmm import PGMM
    from pgmm.pose.sequence import PoseSequence
    from pgmm.training.adapt import AdaptConfig, adapt_signer

    folder = Path(os.environ["SLP_SHARED_DATA"]) / "video" / "asl-what-is-your-name"
    labels = PoseSequence.load_pose(folder / "what-is-your-name.pose")
    torch.manual_seed(0)
    base = PGMM(PGMMConfig(variant="tpsmm", image_size=128, **TINY_PGMM)).eval()
    config = AdaptConfig(steps=STEPS, batch_size=2, validate_every=EVERY, patience=STEPS)
    adapt_signer(folder / "what-is-your-name.mp4", base, run, labels=labels, config=config,
                 progress=False)  # fmt: skip


def _record(path: Path, die_in_save: int | None) -> None:
    """Patch the loop: log each finished step and each completed checkpoint to ``path``;
    ``die_in_save=k``: the k-th checkpoint write leaves a partial file and SIGKILLs us."""
    import torch

    from pgmm.training.common import ResumableLoop

    end_step, save = ResumableLoop.end_step, ResumableLoop.save
    saves = 0

    def note(line: str) -> None:
        with path.open("a") as f:
            f.write(line + "\n")

    def recording_end_step(self: ResumableLoop, step: int, **postfix: str) -> None:
        note(f"step {step}")
        end_step(self, step, **postfix)

    def killing_save(obj: object, f: str | Path, *args: object, **kwargs: object) -> None:
        Path(f).write_bytes(b"half a checkpoint")
        os.kill(os.getpid(), signal.SIGKILL)

    def recording_save(self: ResumableLoop) -> None:
        nonlocal saves
        saves += 1
        if saves == die_in_save:
            torch.save = killing_save
        save(self)
        note(f"saved {self.step}")

    ResumableLoop.end_step, ResumableLoop.save = recording_end_step, recording_save


TRAINERS: dict[str, Callable[[Path], int | None]] = {
    "pgmm": _run_pgmm,
    "pe": _run_pe,
    "recognizer": _run_recognizer,
    "t2g": _run_t2g,
    "g2p": _run_g2p,
    "adapt": _run_adapt,
    "ray": _run_ray,
}


def _worker(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("trainer", choices=[*TRAINERS, "ddp"])
    parser.add_argument("run", type=Path)
    parser.add_argument("--record", type=Path, required=True)
    parser.add_argument("--die-in-save", type=int)
    parser.add_argument("--rank", type=int, default=0)
    parser.add_argument("--store", type=Path)
    args = parser.parse_args(argv)
    import torch

    from pgmm.training.common import TrainingStopped

    torch.set_num_threads(1)
    if args.rank == 0:
        _record(args.record, args.die_in_save)
    try:
        if args.trainer == "ddp":
            _run_ddp(args.run, args.rank, args.store)
            return 0
        return int(TRAINERS[args.trainer](args.run) or 0)
    except TrainingStopped as e:  # what the CLI does (the pgmm run goes through the CLI)
        print(f"{args.trainer}: {e}", file=sys.stderr)
        return e.exit_code


# ----------------------------------------------------------------------------- the test side
@dataclass
class Run:
    """One started training process and the files it writes."""

    proc: subprocess.Popen
    record: Path
    stderr: Path

    def lines(self, kind: str) -> list[int]:
        text = self.record.read_text() if self.record.exists() else ""
        return [int(line.split()[1]) for line in text.splitlines() if line.startswith(kind + " ")]

    def err(self) -> str:
        return self.stderr.read_text(errors="replace")

    def wait_until(self, what: str, ready: Callable[[], object]) -> object:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            value = ready()
            if value:
                return value
            if self.proc.poll() is not None:
                pytest.fail(f"exited {self.proc.returncode} before {what}:\n{self.err()[-3000:]}")
            time.sleep(0.1)
        self.proc.kill()
        pytest.fail(f"no {what} after {TIMEOUT:.0f} s:\n{self.err()[-3000:]}")

    def resumed_from(self) -> int:
        found = self.wait_until(
            "the resume message", lambda: re.search(r"resumed from step (\d+) of ", self.err())
        )
        return int(found.group(1))  # type: ignore[union-attr]

    def wait_steps(self, count: int) -> None:
        self.wait_until(f"{count} steps", lambda: len(self.lines("step")) >= count)

    def log_rows(self, run: Path) -> int:
        """Rows of the run's ``log.csv`` (header excluded): steps logged by any process."""
        path = run / "log.csv"
        return max(0, len(path.read_text().splitlines()) - 1) if path.exists() else 0

    def stop(self, sig: int | None) -> int:
        """Send ``sig`` (``None``: none) and wait for the exit status."""
        if sig is not None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            pytest.fail(f"still running {TIMEOUT:.0f} s after signal {sig}:\n{self.err()[-3000:]}")


@pytest.fixture
def start(tmp_path: Path, shared_data: Path):
    started: list[Run] = []
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SLP_SHARED_DATA": str(shared_data)}

    def launch(trainer: str, *extra: str) -> Run:
        n = len(started)
        record, stderr = tmp_path / f"record-{n}.txt", tmp_path / f"stderr-{n}.txt"
        cmd = [sys.executable, str(HERE), trainer, str(tmp_path / "run"), "--record", str(record),
               *extra]  # fmt: skip
        with stderr.open("w") as err:
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env)
        started.append(Run(proc, record, stderr))
        return started[-1]

    yield launch
    for run in started:
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait()


def test_checkpoints_by_steps_or_minutes_whichever_first(tmp_path: Path) -> None:
    """Every 10 steps or 30 s (a fake clock, 4 s per step), and once more at the end."""
    from pgmm.training.common import ResumableLoop

    now, saves = [0.0], []
    loop = ResumableLoop("t", tmp_path, tmp_path / "ckpt", lambda: saves.append(loop.step),
                         start=0, total=25, every=10, minutes=0.5, progress=False,
                         clock=lambda: now[0])  # fmt: skip
    with loop:
        for step in range(1, 26):
            now[0] += 4.0
            loop.end_step(step)
    assert saves == [8, 10, 18, 20, 25]


def test_sigterm_in_process_finishes_the_step_and_restores_the_handler(tmp_path: Path) -> None:
    from pgmm.training.common import ResumableLoop, TrainingStopped

    before = signal.getsignal(signal.SIGTERM)
    saves: list[int] = []
    finished: list[int] = []
    loop = ResumableLoop("t", tmp_path, tmp_path / "ckpt", lambda: saves.append(loop.step),
                         start=3, total=100, every=50, progress=False)  # fmt: skip
    with pytest.raises(TrainingStopped) as stopped, loop:
        for step in range(4, 100):
            if step == 6:
                os.kill(os.getpid(), signal.SIGTERM)  # arrives mid-step ...
            finished.append(step)  # ... which still finishes
            loop.end_step(step)
    assert finished == [4, 5, 6] and saves == [6]
    assert (stopped.value.step, stopped.value.exit_code) == (6, 128 + signal.SIGTERM)
    assert "stopped by SIGTERM at step 6" in str(stopped.value)
    assert signal.getsignal(signal.SIGTERM) == before


def test_a_second_signal_abandons_the_step(tmp_path: Path) -> None:
    """The second SIGTERM interrupts the step at once; the last finished step is saved."""
    from pgmm.training.common import ResumableLoop, TrainingStopped

    saves: list[int] = []
    loop = ResumableLoop("t", tmp_path, tmp_path / "ckpt", lambda: saves.append(loop.step),
                         start=0, total=100, every=50, progress=False)  # fmt: skip
    with pytest.raises(TrainingStopped) as stopped, loop:
        loop.end_step(1)
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)
        pytest.fail("the second signal did not interrupt the step")
    assert saves == [1] and stopped.value.signum == signal.SIGTERM


def test_no_handlers_outside_the_main_thread(tmp_path: Path) -> None:
    """Ray Train runs the loop in a worker thread: signals cannot be handled there."""
    import threading

    from pgmm.training.common import ResumableLoop

    before = signal.getsignal(signal.SIGTERM)
    seen: list[object] = []

    def train() -> None:
        with ResumableLoop("t", tmp_path, tmp_path / "ckpt", lambda: None, start=0, total=1,
                           every=1, progress=False) as loop:  # fmt: skip
            seen.append(signal.getsignal(signal.SIGTERM))
            loop.end_step(1)

    thread = threading.Thread(target=train)
    thread.start()
    thread.join()
    assert seen == [before]


def test_t2g_run_folder_of_the_old_layout_resumes(
    tmp_path: Path, shared_data: Path, capsys
) -> None:
    """Runs written before the weights and the history moved into ``state.pt`` (weights in
    ``epochs/last.safetensors``, history in ``history.json``) still resume."""
    import torch
    from safetensors.torch import save_file

    from text2pose.t2g import T2GConfig
    from text2pose.train_t2g import T2GTrainConfig, train_t2g

    model = T2GConfig(d_model=32, layers=1, heads=2, ffn_dim=64, text_vocab_size=200,
                      max_len=64, num_beams=1)  # fmt: skip
    cfg = T2GTrainConfig(model=model, epochs=1, batch_tokens=60, warmup_steps=10, max_train=24,
                         max_eval=2, average_best=1, progress=False)  # fmt: skip
    train_t2g(cfg, tmp_path, shared_data)
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    weights = {k: v.clone() for k, v in state.pop("model").items()}  # no shared storage
    save_file(weights, str(tmp_path / "epochs" / "last.safetensors"))
    for key in ("history", "batch", "epoch_loss", "epoch_seconds"):
        del state[key]
    torch.save(state, tmp_path / "state.pt")
    cfg.epochs = 2
    train_t2g(cfg, tmp_path, shared_data)
    assert f"resumed from step {state['step']} of" in capsys.readouterr().err
    history = json.loads((tmp_path / "history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2] and history[1]["step"] == 2 * state["step"]


def _checkpoint_step(run: Path) -> int:
    """Load the run's checkpoint as its trainer does (all files) and return its step."""
    import torch
    from safetensors.torch import load_file

    from pgmm.training.common import find_checkpoint

    if (run / "state.pt").exists():  # T2G: one file
        return int(torch.load(run / "state.pt", weights_only=True)["step"])
    folder = find_checkpoint(run / "checkpoints" / "last")
    if folder is None and (run / "train").is_dir():  # adaptation: its PGMM run
        folder = find_checkpoint(run / "train" / "checkpoints" / "last")
    assert folder is not None, f"no complete checkpoint in {run}"
    load_file(folder / "model.safetensors")
    torch.load(folder / "optimizer.pt", weights_only=True)
    state = json.loads((folder / "state.json").read_text())
    return int(state.get("global_step", state.get("step")))


def _stopped_at(run: Run) -> int:
    """The step of the process's one "stopped" line; its checkpoint path must exist.

    Anchored at a line start: Ray forwards its workers' logs, which may repeat the message.
    """
    pattern = r"^[\w-]+: stopped by SIGTERM at step (\d+); checkpoint (\S+) "
    found = re.findall(pattern, run.err(), re.M)
    assert len(found) == 1 and Path(found[0][1]).exists(), run.err()[-3000:]
    return int(found[0][0])


def _half_written(run: Path) -> None:
    """Leave on disk what a kill inside the next checkpoint write would."""
    if (run / "state.pt").exists():  # T2G: the temporary file is half written
        (run / ".state.pt.tmp").write_bytes(b"half a checkpoint")
        return
    root = run / "checkpoints" if (run / "checkpoints").is_dir() else run / "train" / "checkpoints"
    (root / ".tmp").mkdir(exist_ok=True)
    (root / ".tmp" / "model.safetensors").write_bytes(b"half a checkpoint")
    # The swap's first rename, not its second (a SIGKILL after an earlier swap may have left
    # a stale .old, which the swap deletes first). If the SIGKILL itself fell between the two
    # renames, ``last`` is already gone and ``.old`` holds the checkpoint: that is this state.
    if (root / "last").exists():
        shutil.rmtree(root / ".old", ignore_errors=True)
        (root / "last").replace(root / ".old")


def _stop_kinds(launch: Callable[..., Run], run: Path, rerun: bool) -> dict[str, int]:
    """The runs of the module docstring; returns the steps each kind of stop lost."""
    first = launch()
    first.wait_steps(1)
    assert first.stop(signal.SIGTERM) == 128 + signal.SIGTERM, first.err()[-3000:]
    step = _stopped_at(first)
    assert step == first.lines("step")[-1] == first.lines("saved")[-1]

    second = launch()
    assert second.resumed_from() == step
    second.wait_steps(EVERY + 1)  # at least one periodic checkpoint of its own
    assert second.stop(signal.SIGKILL) == -signal.SIGKILL
    killed_at, periodic = second.lines("step")[-1], second.lines("saved")[-1]
    # The last periodic checkpoint -- or the one SIGKILL hit between its swap and the record.
    left = _checkpoint_step(run)
    assert periodic <= left <= killed_at
    lost = {"sigterm": 0, "sigkill": killed_at - left}

    _half_written(run)
    assert _checkpoint_step(run) == left
    if rerun:
        third = launch("--die-in-save", "1")
        assert third.resumed_from() == left
        assert third.proc.wait(TIMEOUT) == -signal.SIGKILL, third.err()[-3000:]
        assert not third.lines("saved")  # it died inside its first checkpoint write...
        assert _checkpoint_step(run) == left  # ...and the one before still loads
        lost["kill_in_write"] = third.lines("step")[-1] - left
    return lost


TRAINER_NAMES = ["pgmm", "pe", "recognizer", "t2g", "g2p", "adapt"]


@pytest.mark.parametrize("trainer", TRAINER_NAMES)
def test_sigterm_and_sigkill(trainer: str, start, tmp_path: Path) -> None:
    lost = _stop_kinds(lambda *extra: start(trainer, *extra), tmp_path / "run", rerun=False)
    print(f"{trainer}: steps lost {json.dumps(lost)} (checkpoint every {EVERY} steps)")
    assert 0 <= lost["sigkill"] <= EVERY


@pytest.mark.slow
@pytest.mark.parametrize("trainer", TRAINER_NAMES)
def test_kill_inside_a_checkpoint_write(trainer: str, start, tmp_path: Path) -> None:
    lost = _stop_kinds(lambda *extra: start(trainer, *extra), tmp_path / "run", rerun=True)
    print(f"{trainer}: steps lost {json.dumps(lost)} (checkpoint every {EVERY} steps)")
    assert 0 <= lost["sigkill"] <= EVERY and 0 < lost["kill_in_write"] <= EVERY


@pytest.mark.slow
def test_ddp_ranks_stop_together(start, tmp_path: Path) -> None:
    """SIGTERM to rank 0 only (a preempted node): both ranks stop after the same step, rank 0
    writes the checkpoint, both resume from it; SIGKILL of both loses <= ``EVERY`` steps."""

    def ranks() -> list[Run]:
        store = tmp_path / f"store-{time.monotonic_ns()}"
        return [start("ddp", "--rank", str(r), "--store", str(store)) for r in (0, 1)]

    run = tmp_path / "run"
    rank0, rank1 = ranks()
    rank0.wait_steps(1)
    assert rank0.stop(signal.SIGTERM) == 128 + signal.SIGTERM, rank0.err()[-3000:]
    assert rank1.stop(None) == 128 + signal.SIGTERM, rank1.err()[-3000:]
    step = _stopped_at(rank0)
    assert step == _stopped_at(rank1) == rank0.lines("step")[-1] == _checkpoint_step(run)

    rank0, rank1 = ranks()
    assert rank0.resumed_from() == step == rank1.resumed_from()
    rank0.wait_steps(EVERY + 1)
    for rank in (rank0, rank1):
        assert rank.stop(signal.SIGKILL) == -signal.SIGKILL
    killed_at, periodic = rank0.lines("step")[-1], rank0.lines("saved")[-1]
    left = _checkpoint_step(run)
    assert periodic <= left <= killed_at and killed_at - left <= EVERY


@pytest.mark.slow
def test_ray_driver_sigterm_stops_the_workers(start, tmp_path: Path) -> None:
    """``slp train pgmm --workers 2``: SIGTERM to the driver -> the Ray workers stop after one
    step, rank 0 writes the checkpoint, exit 143; the re-run resumes from it."""
    run = tmp_path / "run"
    first = start("ray")
    first.wait_until("a logged step", lambda: first.log_rows(run) >= 1)
    assert first.stop(signal.SIGTERM) == 128 + signal.SIGTERM, first.err()[-3000:]
    step = _stopped_at(first)
    assert step == _checkpoint_step(run) >= 1
    second = start("ray")
    assert second.resumed_from() == step
    assert second.stop(signal.SIGTERM) == 128 + signal.SIGTERM, second.err()[-3000:]


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1:]))
