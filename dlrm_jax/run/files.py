"""Atomic file writes: a reader (or a resumed run) sees the old file or the new one, never half.

Every file other tools read (config.json, summary.json, metrics rewrites,
results.csv, prepared Criteo shards and manifests, reports, plots) goes
through `atomic_write`: a temp file beside the target, fsync, rename.  Temp
names contain `.tmp`, so a preparation killed midway can find and remove its
leftovers.  Standard library only (and the project's UserError), so the JAX-free
`analysis` package uses it too.

`check_writable_file` / `check_writable_dir` say before a long fit or compile
whether its output could be written at all, so a bad `--out` is one line at
once, not an error after the work.
"""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

from dlrm_jax.errors import UserError


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


def check_writable_dir(path: str | os.PathLike, what: str) -> None:
    """UserError unless `path` is, or can be made (as `atomic_write` makes parents), a
    writable directory; `what` names the flag, e.g. "--out".  Leaves nothing behind."""
    _check_dir(Path(path), Path(path), what)


def check_writable_file(path: str | os.PathLike, what: str) -> None:
    """UserError unless `atomic_write(path)` could write `path`: not a directory, and its
    directory writable or creatable; `what` names the flag, e.g. "--hlo-out"."""
    p = Path(path)
    if p.is_dir():
        raise UserError(f"{what} {p}: is a directory, not a file")
    _check_dir(p.parent, p, what)


def _check_dir(d: Path, shown: Path, what: str) -> None:
    if d.exists() and not d.is_dir():
        raise UserError(f"{what} {shown}: {d} is a file, not a directory")
    base = d
    while not base.exists() and base != base.parent:
        base = base.parent             # the directories below are created by the write
    if not base.is_dir():
        raise UserError(f"{what} {shown}: {base} is a file, not a directory")
    # A probe file rather than os.access: also right for root, read-only mounts and ACLs.
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-check.", suffix=".tmp", dir=base)
    except OSError as err:
        raise UserError(f"{what} {shown}: cannot write in {base} ({err.strerror or err})") from None
    os.close(fd)
    os.unlink(probe)


def commit_temp(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Move a finished temp file (one written in place, e.g. a memory map) over `path`, as
    `atomic_write` does: its bytes reach the disk first, so a crash leaves the old file or
    the whole new one."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
