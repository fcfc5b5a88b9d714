"""Process-level performance settings for long CPU runs (training, benchmarks).

`tune_malloc()`: glibc returns freed blocks of more than 128 KiB to the OS (mmap / heap trim),
so every fresh `[N, B, H]` intermediate of an update (2.6 MB at N = 10) is faulted in again, page
by page, on first touch. On a 2-core machine that was ~40 % of the closed-form diversity term
and ~10 % of a RAVL update. Keeping freed memory in the heap (the effect PyTorch's CPU tuning
guide gets from jemalloc / tcmalloc, here with no preload) removes those faults.

It changes malloc for the whole process (all later allocations, not only eor's), so eor calls it
only where it owns the process: the `eor` CLI's training commands and the benchmarks (where the
baselines, in the same process, get it too). Library users opt in with `eor.runtime.tune_malloc()`.
EOR_MALLOC_TUNING=0 turns it off everywhere.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import sys
from collections.abc import Iterator

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's largest accepted value: bigger blocks stay mmapped
TRIM_THRESHOLD = 512 * 1024 * 1024  # free heap kept before any is given back to the OS

_state: dict[str, bool] = {}


def _glibc_mallopt() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    """glibc's mallopt, or None (not Linux, or another C library)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        if not hasattr(libc, "gnu_get_libc_version"):
            return None
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt


def describe() -> str:
    """One line for `eor info`: whether training commands will tune malloc, and why not."""
    if os.environ.get("EOR_MALLOC_TUNING", "1") == "0":
        return "off (EOR_MALLOC_TUNING=0)"
    if _glibc_mallopt() is None:
        return "unavailable (needs Linux with glibc)"
    state = "applied in this process" if malloc_tuned() else "applied by the training commands"
    return f"on: freed memory kept in the process, {state}"


def tune_malloc() -> bool:
    """Keep freed memory (blocks up to 32 MiB, up to 512 MiB of free heap) in the process.

    Returns True when the setting is in effect: Linux with glibc, and EOR_MALLOC_TUNING is not
    "0". Idempotent; a no-op returning False elsewhere (macOS, Windows, musl).
    """
    if "tuned" in _state:
        return _state["tuned"]
    tuned = False
    if os.environ.get("EOR_MALLOC_TUNING", "1") != "0":
        mallopt = _glibc_mallopt()
        if mallopt is not None:
            tuned = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
                mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
            )
    _state["tuned"] = tuned
    return tuned


def malloc_tuned() -> bool:
    """Whether `tune_malloc()` has run in this process and took effect."""
    return _state.get("tuned", False)


def passive_openmp() -> None:
    """OMP_WAIT_POLICY=PASSIVE unless set: idle OpenMP threads sleep instead of spinning.

    Spinning threads steal the cores of every other process: `eor train-agent` with two threads
    beside one other busy process on a 2-core machine ran 10-25x slower. OpenMP reads the
    variable once, when torch loads it, so this must run before `import torch`: `import eor`
    calls it (eor/__init__.py), and sweep workers get it in their environment.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """torch.set_num_threads(threads) while the block runs (None: leave torch's choice, one
    thread per core); the previous count after it."""
    if threads is None:
        yield
        return
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
