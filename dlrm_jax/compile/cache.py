"""JAX's persistent compilation cache, on by default for the CLI.

A sweep compiles the same train step again and again (a data sweep's points
differ only in how many steps they take), and XLA compilation is most of a
small run's wall time on a CPU.  Cached executables are keyed by the program,
the compiler version and the devices, so a stale entry is never reused; the
cache is capped at 4 GiB (least recently used entries go first).
Set DLRM_SCALING_COMPILE_CACHE to a directory, or to "off" to disable.
"""
from __future__ import annotations

import os
from pathlib import Path

ENV = "DLRM_SCALING_COMPILE_CACHE"


def enable_compilation_cache(directory: str | Path | None = None) -> Path | None:
    setting = os.environ.get(ENV, "") if directory is None else str(directory)
    if setting.lower() == "off":
        return None
    path = Path(setting) if setting else Path.home() / ".cache" / "dlrm-scaling" / "jax"
    import jax
    try:
        path.mkdir(parents=True, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", str(path))
        # Cache everything: on a CPU even a one-second compile is worth keeping.
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
        # A size limit turns on JAX's file lock around cache reads and writes; without
        # it an entry is written in place, and a second process (a sweep's other
        # worker, a parallel test) can read it half-written and crash.
        jax.config.update("jax_compilation_cache_max_size", 4 << 30)
    except (OSError, AttributeError):
        return None  # a read-only home or an older jax: run without the cache
    return path
