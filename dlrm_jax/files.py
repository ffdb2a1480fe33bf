"""Atomic file writes: a reader (or a resumed run) sees the old file or the new one, never half.

Every file other tools read (config.json, summary.json, metrics rewrites,
results.csv, prepared Criteo shards and manifests, reports, plots) goes
through `atomic_write`: a temp file beside the target, fsync, rename.  Temp
names contain `.tmp`, so a preparation killed midway can find and remove its
leftovers.  Standard library only, so the JAX-free `analysis` package uses it
too.
"""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """Open a temp file beside `path` for writing (`mode` "w" or "wb"); on success it replaces `path`.

        with atomic_write(out / "x.npy", "wb") as f:
            np.save(f, array)
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({"newline": ""} if mode == "w" else {})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomic(path: str | os.PathLike, data: str | bytes) -> None:
    """Write a whole text or bytes file atomically."""
    with atomic_write(path, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)
