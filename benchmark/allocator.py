"""glibc malloc settings for CPU training processes.

PyTorch's CPU allocator has no cache: every tensor is a ``malloc`` and a ``free``. glibc serves
blocks above its mmap threshold (dynamic, at most 32 MiB) with a fresh ``mmap`` and returns them
with ``munmap`` on free, and trims the top of the heap once more than the trim threshold is free.
A model whose activations are tens of MiB per batch (Graph WaveNet's diffusion-conv concat at
batch 64 is 51 MiB) so maps, faults in page by page, and unmaps the same memory every batch: on a
2-core machine that was about half of an epoch's CPU time spent in the kernel
(``perf/cpu_epoch.py``; results/cpu_epoch/).

:func:`tune_malloc` (called once at process start by the CLI) turns both off for the process:
no mmap for large blocks (``M_MMAP_MAX = 0``) and no heap trimming (``M_TRIM_THRESHOLD`` = 16
GiB), as ``GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=17179869184``
would. Freed memory stays with the process for reuse (its resident size stays near its peak),
which is what a training process wants. ``FLOWDISTILL_MALLOC_TUNING=0`` leaves glibc's defaults.
The setting in force is part of each record's hardware/environment (:func:`malloc_settings`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
TRIM_THRESHOLD = 16 << 30
ENV = "FLOWDISTILL_MALLOC_TUNING"

_state: dict = {"tuned": False}


def tune_malloc() -> bool:
    """Disable mmap for large blocks and heap trimming in this process (glibc only). Returns
    whether the settings were applied; a no-op elsewhere or when ``FLOWDISTILL_MALLOC_TUNING=0``."""
    if _state["tuned"]:
        return True
    if os.environ.get(ENV, "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(M_MMAP_MAX, 0) == 1
    # M_TRIM_THRESHOLD takes an int: the largest positive value (about 2 GiB) when 16 GiB does
    # not fit
    ok = mallopt(M_TRIM_THRESHOLD, min(TRIM_THRESHOLD, 2**31 - 1)) == 1 and ok
    _state["tuned"] = ok
    return ok


def malloc_tuned() -> bool:
    """Whether :func:`tune_malloc` applied its settings in this process."""
    return bool(_state["tuned"])


def malloc_settings() -> str:
    """What this process runs with, for the record's environment."""
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if _state["tuned"]:
        return "glibc mallopt: M_MMAP_MAX=0, M_TRIM_THRESHOLD=2147483647 (benchmark.allocator)"
    if "glibc.malloc" in tunables:
        return f"GLIBC_TUNABLES={tunables}"
    return "default"
