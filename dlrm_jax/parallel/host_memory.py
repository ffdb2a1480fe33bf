"""Keep freed host memory in the process, so XLA's per-step buffers are not faulted in again.

Why: XLA's CPU runtime allocates each execution's temporaries with malloc and
frees them when the step ends (42 MB for `criteo-kaggle` at batch 2048).  glibc
serves a block above its mmap threshold (32 MiB at most) with a fresh mmap and
unmaps it on free, so every step touches ~11,000 new pages that the kernel
must fault in and zero: 15-17 ms of system time in a 45 ms step on a 2-core VM
(measured with getrusage; docs/BENCHMARKS.md).  With mmap off and the heap never
trimmed, the next step reuses the same pages: 45k -> 62k examples/s there.

The cost: memory the process frees stays mapped, so its resident size does not
shrink until it exits, which a training or bench process does not need.  The
CLI turns this on for every subcommand that trains; a notebook can call
`keep_freed_memory()` itself.  DLRM_SCALING_MALLOC=default opts out.  On a libc
without `mallopt` (macOS, musl) this does nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

ENV = "DLRM_SCALING_MALLOC"

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_NEVER_TRIM = 2**31 - 1   # mallopt takes an int; 2 GiB of free heap top is kept, not returned

_active = False


def keep_freed_memory() -> bool:
    """Serve every allocation from the heap and never return freed pages to the OS.

    Returns True where glibc accepted both settings; False where the libc has no
    mallopt or DLRM_SCALING_MALLOC=default.  Process-wide; call before the first
    train step (later allocations only are affected).
    """
    if os.environ.get(ENV, "").lower() == "default":
        return False
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt if name else None
    except (OSError, AttributeError):
        mallopt = None
    if mallopt is None:
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    global _active
    # mallopt returns 1 on success; both settings apply to later calls only.
    _active = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM))
    return _active


def active() -> bool:
    """Whether `keep_freed_memory()` took effect in this process (bench records it)."""
    return _active
