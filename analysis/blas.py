"""Keep OpenBLAS to one thread while fitting.

Why: a fit is thousands of L-BFGS-B steps on 3- to 5-parameter problems, and each step
makes a few tiny BLAS/LAPACK calls. OpenBLAS (bundled with numpy and scipy wheels)
wakes its worker threads for some of them; on a busy 2-core machine the wake-ups cost
milliseconds per step, and a bootstrap that takes 1 s single-threaded took over a
minute. One thread is always right for problems this small.

This uses OpenBLAS's per-thread setting (`openblas_set_num_threads_local`, OpenBLAS >=
0.3.27), so other threads of the process keep theirs, and restores it on exit. The
libraries are found in /proc/self/maps; elsewhere (macOS, Windows, another BLAS) this
does nothing, which is only a question of speed.
"""

from __future__ import annotations

import contextlib
import ctypes

_SETTERS: list | None = None


def _setters() -> list:
    """`openblas_set_num_threads_local` of every OpenBLAS loaded in this process."""
    global _SETTERS
    if _SETTERS is None:
        _SETTERS = []
        try:
            with open("/proc/self/maps") as fh:
                paths = sorted({ln.split()[-1] for ln in fh
                                if "openblas" in ln.lower() and ln.split()[-1].startswith("/")})
        except OSError:
            paths = []
        for p in paths:
            try:
                fn = ctypes.CDLL(p).openblas_set_num_threads_local
            except (OSError, AttributeError):
                continue
            fn.argtypes, fn.restype = [ctypes.c_int], ctypes.c_int
            _SETTERS.append(fn)
    return _SETTERS


@contextlib.contextmanager
def single_thread():
    """Run the body with OpenBLAS limited to one thread in the calling thread."""
    setters = _setters()
    previous = [fn(1) for fn in setters]
    try:
        yield
    finally:
        for fn, n in zip(setters, previous):
            fn(n)
