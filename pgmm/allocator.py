"""Keep glibc from handing large tensor buffers back to the kernel after every use.

A renderer or training step allocates and frees the same few dozen large activations (1-50 MiB
each) on every call. With glibc's defaults a freed block of that size can go back to the kernel
(``munmap``, or a trim of the heap top), so the next call gets fresh pages and faults on every
4 KiB of them: 106,000-166,000 page faults and ~0.3 s of kernel time per 16-frame
``PGMM.animate`` at 128^2 on one thread, ~16 % of its wall time, depending on what the process
allocated before (docs/performance.md, "The float32 CPU path"; ``bench/render_cpu.py`` and
``bench/pipeline.py`` measure old code against new). Raising the mmap threshold to its maximum
(32 MiB on 64-bit glibc) and the trim threshold above any working set makes those blocks come
from, and return to, the process's own heap; the pages stay mapped and are reused by the next
call. The price: the process no longer shrinks after its peak (+110-140 MiB of peak RSS in the
pipeline's 20 s streaming probe), which a long-lived renderer or trainer can afford.

Only glibc has ``mallopt``; elsewhere (musl, macOS, Windows) this is a no-op that says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's largest allowed value on 64-bit (HEAP_MAX / 2)
# mallopt takes an int: 2 GiB, the largest, is above the working set of anything run here.
TRIM_THRESHOLD = 2**31 - 1

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds once per process; return whether they are set.

    Idempotent and cheap, so every entry point that does heavy tensor work (a renderer stage,
    a trainer, a benchmark) calls it instead of relying on the caller's environment
    (``GLIBC_TUNABLES`` would have to be set before the interpreter starts).
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    _applied = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
    return _applied
