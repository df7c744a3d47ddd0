"""Long loops print log-friendly progress off a terminal (:func:`pgmm.console.progress`).

A training run's bar goes through ``ResumableLoop``, whose ``end_step`` updates it and sets a
postfix; off a terminal (here: pytest's captured stderr) that must come out as whole lines
without carriage-return redraws, and the last line must show the finished count.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pgmm.training.common import ResumableLoop


def test_training_bar_off_a_terminal_is_whole_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    loop = ResumableLoop("t", tmp_path, tmp_path / "ckpt", lambda: None, start=0, total=50,
                         every=None, progress=True)  # fmt: skip
    with loop:
        for step in range(1, 51):
            loop.end_step(step, loss="0.125")
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.splitlines()
    assert 1 <= len(lines) <= 3  # first, last, and at most one in between (30 s interval)
    assert "50/50" in lines[-1] and "loss=0.125" in lines[-1]


def test_training_bar_disabled_prints_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    loop = ResumableLoop("t", tmp_path, tmp_path / "ckpt", lambda: None, start=0, total=5,
                         every=None, progress=False)  # fmt: skip
    with loop:
        for step in range(1, 6):
            loop.end_step(step)
    assert capsys.readouterr().err == ""
