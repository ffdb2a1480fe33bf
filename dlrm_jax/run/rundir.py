"""The run directory: config.json, metrics.jsonl, summary.json, checkpoints/.

`check` says whether a directory is new or holds this very run (same config,
so it resumes), `write_config` starts one, `lock` keeps a second trainer out.

Files other tools read are written atomically (temp name, then rename), so a
killed run never leaves a half-written config or summary.  `summary.json`
is written last: its presence with status "done" marks a finished run.
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Iterable

from dlrm_jax import config as config_lib
from dlrm_jax.errors import UserError
from dlrm_jax.run import lease, storage


def write_json_atomic(path: Path, obj: Any) -> None:
    storage.write_atomic(path, json.dumps(_jsonable(obj), indent=2) + "\n")


def read_json(path: Path) -> Any:
    if not storage.is_remote(path):
        with open(path) as f:
            return json.load(f)
    return json.loads(storage.read_text(path))


def read_summary(run_dir: Path) -> dict | None:
    """The run's summary.json, or None if it has none; a damaged one is a UserError naming it."""
    path = storage.path(run_dir) / "summary.json"
    try:
        summary = read_json(path)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise UserError(f"{path}: unreadable summary ({_short(err)}); delete it to retrain the run "
                        f"from its last checkpoint")
    if not isinstance(summary, dict):
        raise UserError(f"{path}: not a run summary (a JSON object); delete it to retrain the run "
                        f"from its last checkpoint")
    return summary


def _jsonable(obj: Any) -> Any:
    """NaN/inf as null (JSON has neither); numpy scalars as Python numbers."""
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


class MetricsLog:
    """Append-only metrics.jsonl; on resume, lines past the restored point are dropped.

    Locally a line is appended with one `write` on an O_APPEND descriptor, and
    cut back if that write fails (a full disk, a file-size limit), so the file
    holds whole lines only.  Lines damaged anyway (a copy gone wrong, a disk
    error) are skipped and listed in `damaged` as "path:N: ..." for the caller
    to report.

    On gs:// there is no append (gcsfs's `open("a")` silently overwrites), so
    the log keeps the object's lines in memory and `flush` rewrites the whole
    object, one atomic single-object write.  The trainer flushes before each
    checkpoint save and before the summary: a kill then loses only lines past
    the newest checkpoint, which the resumed run drops (`truncate_after`) and
    writes again, so every line is there once.  `write` also flushes when the
    last flush is FLUSH_EVERY_S old, so a bucket's log stays fresh for readers.
    """

    FLUSH_EVERY_S = 10.0
    # GCS takes about one write per second per object name (more get 429 and backoff).
    MIN_WRITE_GAP_S = 1.0

    def __init__(self, path):
        self.remote = storage.is_remote(path)
        self.path = path if self.remote else Path(path)
        self.damaged: list[str] = []
        self._lines: list[str] | None = None  # gs://: the object's lines as the next flush writes them
        self._dirty = False
        self._flushed_at = time.monotonic()  # FLUSH_EVERY_S counts from here
        self._written_at = -math.inf         # this object's last write (MIN_WRITE_GAP_S)

    def truncate_after(self, examples_seen: int, log=None) -> None:
        """Keep only events at or before `examples_seen` (those the checkpoint covers).

        Damaged lines are reported through `log` (file:line) and dropped; the
        valid events after them are kept."""
        if not storage.exists(self.path):
            return
        lines = self.read_lines()
        if log is not None:
            for where in self.damaged:
                log(f"{where}; skipped (the events after it are kept)")
        kept = [line for line in lines if line["examples_seen"] <= examples_seen]
        if not self.remote:
            write_lines_atomic(self.path, kept)
            return
        self._lines = [json.dumps(_jsonable(line)) + "\n" for line in kept]
        self._dirty = True
        self.flush()

    def read_lines(self) -> list[dict]:
        self.damaged = []
        if self.remote:
            return self._parse(self._remote_lines())
        if not self.path.exists():
            return []
        with open(self.path, errors="replace") as f:
            return self._parse(f)

    def _parse(self, raws) -> list[dict]:
        out = []
        for number, raw in enumerate(raws, 1):
            raw = raw.strip()
            if not raw:
                continue
            try:
                event = json.loads(raw)
                if not isinstance(event, dict) or not isinstance(event.get("examples_seen"), int):
                    raise ValueError("no examples_seen")
            except ValueError as err:
                self.damaged.append(f"{self.path}:{number}: damaged metrics line ({_short(err)})")
                continue
            out.append(event)
        return out

    def _remote_lines(self) -> list[str]:
        if self._lines is None:
            try:
                text = storage.read_bytes(self.path).decode(errors="replace")
            except FileNotFoundError:
                text = ""
            self._lines = text.splitlines(keepends=True)
            if self._lines and not self._lines[-1].endswith("\n"):
                self._lines[-1] += "\n"
        return self._lines

    def write(self, event: dict) -> None:
        data = (json.dumps(_jsonable(event)) + "\n").encode()
        if self.remote:
            self._remote_lines().append(data.decode())
            self._dirty = True
            if time.monotonic() - self._flushed_at >= self.FLUSH_EVERY_S:
                self.flush()
            return
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            start = os.fstat(fd).st_size
            try:
                view = memoryview(data)
                while view:  # a short write (the disk filled mid-line): the next call says why
                    view = view[os.write(fd, view):]
            except OSError as err:
                os.ftruncate(fd, start)  # whole lines only: cut a partial append back off
                if err.filename is None:
                    err.filename = str(self.path)
                raise
        finally:
            os.close(fd)

    def flush(self) -> None:
        """Make every line written so far durable (locally each `write` already is)."""
        if not (self.remote and self._dirty):
            return
        wait = self._written_at + self.MIN_WRITE_GAP_S - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        storage.write_atomic(self.path, "".join(self._lines))
        self._flushed_at = self._written_at = time.monotonic()
        self._dirty = False


def _short(err: Exception, limit: int = 80) -> str:
    text = str(err)
    return text if len(text) <= limit else text[:limit] + "..."


def write_lines_atomic(path: Path, lines: Iterable[dict]) -> None:
    storage.write_atomic(path, "".join(json.dumps(_jsonable(line)) + "\n" for line in lines))


# --------------------------------------------------------------------------- the run's directory

def check(run_dir: Path, cfg) -> bool:
    """True if `run_dir` holds this run (same config); False if it is new; UserError otherwise."""
    cfg_path = run_dir / "config.json"
    if storage.exists(run_dir) and not storage.is_dir(run_dir):
        raise UserError(f"--out {run_dir} exists and is not a directory")
    if not storage.exists(cfg_path):
        if any(name not in RUN_DIR_EXTRAS for name in storage.listdir(run_dir)):
            raise UserError(f"--out {run_dir} is not empty and holds no config.json; use a new directory")
        return False
    try:
        existing = config_lib.from_dict(read_json(cfg_path))
    except (UserError, ValueError) as err:
        raise UserError(f"{cfg_path}: not a config of this version ({err}); use a new --out")
    diff = config_lib.diff(existing, cfg)
    if diff:
        raise UserError(f"{run_dir} holds a run with a different config ({', '.join(diff)}); use a new --out")
    return True


# Files that may sit in a run directory before its config.json: the sweep
# runner's log of the run's stderr, and the lock.
RUN_DIR_EXTRAS = (".gitkeep", "train.log", ".lock")


def write_config(run_dir: Path, cfg) -> None:
    """config.json of a new run: the resolved config (re-running it reproduces the run).

    On a bucket it is created only if absent (`ifGenerationMatch=0`), besides the lease:
    a trainer whose lease was taken over between its check and this write (frozen past
    its ttl) must not replace the config of the run that took over.  The same config
    already there is that run resumed as this one would; another one is exit 2."""
    path = run_dir / "config.json"
    try:
        if not storage.is_remote(run_dir):
            write_json_atomic(path, cfg.to_dict())
            return
        if storage.create_only(path, json.dumps(_jsonable(cfg.to_dict()), indent=2) + "\n"):
            return
    except OSError as err:
        raise UserError(f"cannot write the run directory --out {run_dir}: {err.strerror or err}")
    try:
        changed = config_lib.diff(config_lib.from_dict(read_json(path)), cfg)
    except (UserError, ValueError) as err:
        changed = [f"unreadable: {_short(err)}"]
    if changed:
        raise UserError(f"{path} was written by another trainer meanwhile, with a different config "
                        f"({', '.join(changed)}); use a new --out")


def lock(run_dir: Path) -> None:
    """Hold an exclusive lock on the run directory until the process exits.

    Taken before anything is written there: two trainers on one directory (a
    sweep rerun while an orphaned run goes on, two commands started together)
    would interleave metrics lines and checkpoint saves, or one would write its
    config.json into the other's run; the second one stops here, having written
    nothing.  The caller reads the run's state again after taking it.
    """
    if storage.is_remote(run_dir):  # a bucket has no flock: a lease object (lease.py)
        lease.lock(run_dir, f"{run_dir} is being trained by another process (lock {run_dir}/.lock)")
        return
    import fcntl
    unlock(run_dir)  # this process trained here before (a retry in the same session)
    path = run_dir / ".lock"
    held = f"{run_dir} is being trained by another process (lock {path})"
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        while True:
            f = open(path, "a")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.close()
                raise UserError(held)
            # The holder before us may have finished and removed the lock file between our
            # open and our flock: then we hold a lock on a deleted file, which keeps nobody
            # out.  Only a lock on the file that is there now counts.
            try:
                same = os.fstat(f.fileno()).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            f.close()
    except OSError as err:
        raise UserError(f"cannot lock the run directory --out {run_dir}: {err.strerror or err}")
    _LOCKS[str(run_dir.resolve())] = f  # released by unlock() at the end of training or when the process dies


_LOCKS: dict = {}


def unlock(run_dir: Path) -> None:
    if storage.is_remote(run_dir):
        lease.unlock(run_dir)
        return
    f = _LOCKS.pop(str(run_dir.resolve()), None)
    if f is not None:
        (run_dir / ".lock").unlink(missing_ok=True)  # a finished run dir holds only the contract's files
        f.close()


def check_lock(run_dir) -> None:
    """UserError if this process's lease on a gs:// run was lost (taken over after it
    expired): called before each checkpoint save and the summary.  Local flocks hold
    until the process dies: nothing to check."""
    if storage.is_remote(run_dir):
        lease.check(run_dir)
