"""Terminal output of long commands: progress bars that suit logs, and MediaPipe kept quiet.

* :func:`progress` is ``tqdm`` for a terminal; when the bar's stream is not one (CI, a log
  file, a service's journal) it prints a plain line at most every :data:`LOG_INTERVAL_S`
  instead of a carriage-return redraw per update -- ``slp text2pose eval > log`` used to write
  ~1 MB of bar updates.
* :func:`quiet_native_logs` drops the INFO/WARNING lines that MediaPipe's and TensorFlow Lite's
  C++ code writes straight to file descriptor 2 (hundreds of ``W0000 ...
  inference_feedback_manager.cc`` lines around a bar). MediaPipe 0.10.21 logs through absl,
  which ignores ``GLOG_minloglevel`` and ``TF_CPP_MIN_LOG_LEVEL`` (both are still set, for
  builds that read them), so the descriptor itself is filtered: every other byte, errors
  (``E...``/``F...`` lines) and Python's own output included, passes through unchanged.
"""

from __future__ import annotations

import os
import re
import select
import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import IO, Any

from tqdm import tqdm

LOG_INTERVAL_S = 30.0
LOG_NCOLS = 100
QUIET_ENV = {"GLOG_minloglevel": "2", "TF_CPP_MIN_LOG_LEVEL": "2"}
#: Lines dropped: absl/glog INFO and WARNING records, TFLite's delegate notice, absl's note that
#: it logs to stderr before InitializeLog. Searched, not matched at line starts: a record can
#: follow a bar redraw, which ends without a newline. TFLite writes its "INFO: " prefix and the
#: notice in two calls, so a progress line can land between them: the notice is dropped without
#: its prefix too (the stray "INFO: " then stays in front of that line).
NATIVE_NOISE = re.compile(
    rb"(?:[IW]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [\w.+-]+:\d+\] [^\n]*"
    rb"|(?:INFO: )?Created TensorFlow Lite XNNPACK delegate for CPU\."
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb")\r?\n"
)
_FLUSH_AFTER_S = 0.1  # an unfinished line (a bar redraw) is shown after this much quiet


# --------------------------------------------------------------------------- progress bars
class _LineStream:
    """What tqdm writes, as whole lines: a redraw (``\\r`` + bar) becomes the bar + ``\\n``,
    cursor movements and blank writes are dropped, and a line equal to the last is skipped."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.last = ""

    def write(self, text: str) -> int:
        line = text.replace("\r", "").replace("\x1b[A", "").strip()
        if line and line != self.last:
            self.stream.write(line + "\n")
            self.stream.flush()
            self.last = line
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def progress(iterable: Iterable[Any] | None = None, **kwargs: Any) -> tqdm:
    """``tqdm(iterable, **kwargs)``; off a terminal, one plain line per ``LOG_INTERVAL_S``
    (the first and the last always) in place of carriage-return redraws."""
    stream = kwargs.pop("file", None) or sys.stderr
    if not kwargs.get("disable") and not _is_terminal(stream):
        kwargs.setdefault("mininterval", LOG_INTERVAL_S)
        kwargs.setdefault("ncols", LOG_NCOLS)
        kwargs.setdefault("ascii", True)
        stream = _LineStream(stream)
    return tqdm(iterable, file=stream, **kwargs)


# --------------------------------------------------------------------------- native logs
class _Filter:
    """File descriptor 2 redirected into a pipe; a thread copies it back minus the noise."""

    def __init__(self) -> None:
        sys.stderr.flush()
        self.original = os.dup(2)
        self.read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
        self.thread = threading.Thread(target=self._copy, name="native-log-filter", daemon=True)
        self.thread.start()

    def close(self) -> None:
        sys.stderr.flush()
        os.dup2(self.original, 2)  # closes the pipe's last write end: the thread sees EOF
        self.thread.join(timeout=2)  # a child process still holding the pipe: leave it be
        os.close(self.original)

    def _copy(self) -> None:
        """Copy up to the last line end at once; an unfinished line (a bar redraw) after
        ``_FLUSH_AFTER_S`` of quiet. Native loggers write each record in one ``write`` call, which
        a pipe delivers whole, so a record is never split across two reads."""
        pending = b""
        while True:
            ready = select.select([self.read_end], [], [], _FLUSH_AFTER_S)[0]
            data = os.read(self.read_end, 65536) if ready else b""
            if ready and not data:
                break
            pending += data
            cut = len(pending) if not ready else max(pending.rfind(b"\n"), pending.rfind(b"\r")) + 1
            self._write(NATIVE_NOISE.sub(b"", pending[:cut]))
            pending = pending[cut:]
        self._write(NATIVE_NOISE.sub(b"", pending))
        os.close(self.read_end)

    def _write(self, data: bytes) -> None:
        while data:
            data = data[os.write(self.original, data) :]


_lock = threading.Lock()
_users = 0
_active: _Filter | None = None


@contextmanager
def quiet_native_logs() -> Iterator[None]:
    """Filter MediaPipe/TensorFlow Lite's native INFO/WARNING lines out of stderr while inside.
    Nestable and thread-safe (the filter is process-wide; the last one out removes it)."""
    global _users, _active
    for name, value in QUIET_ENV.items():
        os.environ.setdefault(name, value)
    with _lock:
        if _users == 0:
            _active = _Filter()
        _users += 1
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0 and _active is not None:
                _active.close()
                _active = None
