"""What the benchmarks share: timing taken in turns, memory read from ``/proc``, the CPU's
name, fresh-process probes and the JSON report.

A benchmark imports this as ``common`` after putting its own folder on ``sys.path``: run as a
script that folder is there already, loaded by path (as the tests load them) it is not.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"


def interleaved(
    steps: list[Callable[[], object]],
    warmup: int,
    iters: int,
    sync: Callable[[], object] = lambda: None,
) -> list[float]:
    """Median seconds per call of each step, the steps taking turns (A B A B ...), so load
    from other jobs on a shared machine hits them alike. ``sync`` waits for queued device work
    (``torch.cuda.synchronize``) on both sides of each timed call."""
    for step in steps:
        for _ in range(warmup):
            step()
    times: list[list[float]] = [[] for _ in steps]
    for _ in range(iters):
        for k, step in enumerate(steps):
            sync()
            start = time.perf_counter()
            step()
            sync()
            times[k].append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def rss_mib(field: str = "VmRSS") -> float:
    """This process's resident set size (``VmRSS``) or its peak since the last reset
    (``VmHWM``). Not ``ru_maxrss``: Linux carries that over from the parent's RSS at fork."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024  # kB


def cpu_name() -> str:
    """The CPU's model name from ``/proc/cpuinfo``, else what :mod:`platform` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.processor() or platform.machine()


def probe(script: str, *args: str) -> Any:
    """Run ``script --probe ARGS`` in a fresh interpreter (one torch thread) and return the
    JSON of its last output line: memory measured there counts no other model's pages."""
    cmd = [sys.executable, script, "--probe", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env, cwd=ROOT)
    return json.loads(done.stdout.strip().splitlines()[-1])


def write_report(path: Path, report: dict[str, Any], note: str = "") -> None:
    """Write ``report`` as indented JSON (parents created) and say where, with ``note``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {path}{note}")


def tree_at(revision: str, changed: tuple[str, ...], into: Path) -> Path:
    """This tree's ``pgmm`` and ``configs`` copied under ``into``, with the files ``changed``
    as they were at git ``revision``: the *old* arm of a before/after benchmark, so that only
    the work that changed those files differs between the arms. A file that did not exist at
    ``revision`` is removed from the copy."""
    for folder in ("pgmm", "configs"):
        shutil.copytree(ROOT / folder, into / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for path in changed:
        done = subprocess.run(["git", "-C", str(ROOT), "show", f"{revision}:{path}"],
                              capture_output=True)  # fmt: skip
        if done.returncode == 0:
            (into / path).write_bytes(done.stdout)
        else:
            (into / path).unlink(missing_ok=True)
    return into


class TreeWorker:
    """A benchmark's worker process: ``script --worker SPEC`` run with the source ``tree`` first
    on ``PYTHONPATH`` (an old arm's copy, or the repository) and ``threads`` torch threads; it
    answers each JSON command line with one JSON line. It runs in a scratch folder, not the
    repository, so that ``tree`` is the code imported."""

    def __init__(self, name: str, script: Path, tree: Path, spec: dict[str, Any], threads: int,
                 env: dict[str, str] | None = None) -> None:  # fmt: skip
        self.name = name
        full_env = {**os.environ, **(env or {})}
        full_env.update(PYTHONPATH=str(tree), OMP_NUM_THREADS=str(threads))
        self.proc = subprocess.Popen(
            [sys.executable, str(script), "--worker", json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=full_env,
            cwd=tempfile.gettempdir(),
        )

    def ask(self, **cmd: Any) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.name} died (exit {self.proc.wait()})")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait()


def run_worker(spec: str | None, worker: Callable[[dict[str, Any]], None]) -> bool:
    """Whether this process is a :class:`TreeWorker` (``--worker SPEC`` given); if so, serve
    ``worker`` with the parsed spec first."""
    if spec is None:
        return False
    worker(json.loads(spec))
    return True
