"""Progress bars off a terminal, and MediaPipe's native log lines filtered out of stderr."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pgmm.console import NATIVE_NOISE, progress

REPO = Path(__file__).resolve().parents[1]
NOISE = (
    b"W0000 00:00:1795962405.793672    7061 inference_feedback_manager.cc:114] Feedback manager "
    b"requires a model with a single signature inference. Disabling support for feedback tensors.\n"
)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_off_a_terminal_prints_a_few_whole_lines() -> None:
    """1000 updates to a log: the first and last state as two plain lines, no redraws."""
    log = io.StringIO()
    for _ in progress(range(1000), desc="frames", file=log):
        pass
    text = log.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith("frames:   0%") and lines[-1].startswith("frames: 100%")
    assert "1000/1000" in lines[-1]


def test_progress_on_a_terminal_is_plain_tqdm() -> None:
    screen = _Terminal()
    for _ in progress(range(50), desc="frames", file=screen, mininterval=0):
        pass
    assert screen.getvalue().count("\r") > 10


def test_progress_disabled_prints_nothing() -> None:
    log = io.StringIO()
    for _ in progress(range(10), file=log, disable=True):
        pass
    assert log.getvalue() == ""


@pytest.mark.parametrize(
    ("line", "dropped"),
    [
        (NOISE, True),
        (b"I0000 00:00:1752489631.572373  129295 gl_context_egl.cc:85] EGL ready.\n", True),
        (b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n", True),
        # TFLite's prefix and notice are two writes; a progress line can come between them.
        (b"Created TensorFlow Lite XNNPACK delegate for CPU.\n", True),
        (
            b"WARNING: All log messages before absl::InitializeLog() is called are written to "
            b"STDERR\n",
            True,
        ),
        (b"E0000 00:00:1795962405.793672    7061 calculator_graph.cc:887] a real error\n", False),
        (b"WARNING: something else\n", False),
        (b"labelling:  5%|#  | 1/20\r", False),
    ],
)
def test_what_counts_as_native_noise(line: bytes, dropped: bool) -> None:
    assert NATIVE_NOISE.sub(b"", line) == (b"" if dropped else line)
    after_a_redraw = b"\rbar 0%|" + line  # a record can follow a bar that has no newline
    assert NATIVE_NOISE.sub(b"", after_a_redraw) == (b"\rbar 0%|" if dropped else after_a_redraw)


def test_quiet_native_logs_filters_descriptor_2_only_while_inside() -> None:
    """Native code writes to fd 2 directly (simulated with os.write); Python's stderr, errors
    and partial redraws pass, in order; after the block fd 2 is untouched again."""
    script = f"""
import os, sys, time
from pgmm.console import quiet_native_logs
with quiet_native_logs():
    os.write(2, {NOISE!r})
    print("python says hello", file=sys.stderr, flush=True)
    os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\\n")
    os.write(2, b"E0000 00:00:1.0 1 x.cc:1] a real error\\n")
    sys.stderr.write("\\rbar 1"); sys.stderr.flush()
    time.sleep(0.5)
    sys.stderr.write("\\rbar 2\\n"); sys.stderr.flush()
os.write(2, b"W0000 00:00:1.0 1 x.cc:1] after the block\\n")
"""
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, timeout=60, check=True
    )
    assert done.stderr == (
        b"python says hello\n"
        b"E0000 00:00:1.0 1 x.cc:1] a real error\n"
        b"\rbar 1\rbar 2\n"
        b"W0000 00:00:1.0 1 x.cc:1] after the block\n"
    )


def test_pose_extract_prints_no_mediapipe_chatter(shared_data: Path, tmp_path: Path) -> None:
    """The real thing: ``slp pose extract`` on five frames of a clip prints no absl or TFLite
    lines (it printed ten here, hundreds on a whole clip)."""
    pytest.importorskip("mediapipe")
    clip = shared_data / "video" / "asl-what-is-your-name" / "what-is-your-name.mp4"
    out = tmp_path / "clip.npz"
    done = subprocess.run(
        [sys.executable, "-m", "slp_pipeline.cli", "pose", "extract", str(clip), "-o", str(out)]
        + ["--max-frames", "5"],
        cwd=REPO,
        capture_output=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    err = done.stderr.decode()
    for chatter in ("W0000", "I0000", "inference_feedback_manager", "XNNPACK", "absl::"):
        assert chatter not in err, err
    assert out.is_file()
