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
from pathlib import Path
from typing import Any, Iterable

from dlrm_jax import config as config_lib
from dlrm_jax.errors import UserError
from dlrm_jax.files import write_atomic


def write_json_atomic(path: Path, obj: Any) -> None:
    write_atomic(path, json.dumps(_jsonable(obj), indent=2) + "\n")


def read_json(path: Path) -> Any:
    with open(path) as f:
        return json.load(f)


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
    """Append-only metrics.jsonl; on resume, lines past the restored point are dropped."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def truncate_after(self, examples_seen: int) -> None:
        """Keep only events at or before `examples_seen` (those the checkpoint covers)."""
        if not self.path.exists():
            return
        kept = [line for line in self.read_lines() if line["examples_seen"] <= examples_seen]
        write_lines_atomic(self.path, kept)

    def read_lines(self) -> list[dict]:
        if not self.path.exists():
            return []
        out = []
        with open(self.path) as f:
            for raw in f:
                raw = raw.strip()
                if not raw:
                    continue
                try:
                    out.append(json.loads(raw))
                except json.JSONDecodeError:
                    break  # a line cut by a kill: everything after it is unreliable
        return out

    def write(self, event: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(_jsonable(event)) + "\n")
            f.flush()


def write_lines_atomic(path: Path, lines: Iterable[dict]) -> None:
    write_atomic(path, "".join(json.dumps(_jsonable(line)) + "\n" for line in lines))


# --------------------------------------------------------------------------- the run's directory

def check(run_dir: Path, cfg) -> bool:
    """True if `run_dir` holds this run (same config); False if it is new; UserError otherwise."""
    cfg_path = run_dir / "config.json"
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"--out {run_dir} exists and is not a directory")
    if not cfg_path.exists():
        if run_dir.exists() and any(p.name not in RUN_DIR_EXTRAS for p in run_dir.iterdir()):
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
    """config.json of a new run: the resolved config (re-running it reproduces the run)."""
    try:
        write_json_atomic(run_dir / "config.json", cfg.to_dict())
    except OSError as err:
        raise UserError(f"cannot write the run directory --out {run_dir}: {err.strerror or err}")


def lock(run_dir: Path) -> None:
    """Hold an exclusive lock on the run directory until the process exits.

    Two trainers on one directory (a sweep rerun while an orphaned run goes on)
    would interleave metrics lines and checkpoint saves; the second one stops here.
    """
    import fcntl
    unlock(run_dir)  # this process trained here before (a retry in the same session)
    f = open(run_dir / ".lock", "a")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise UserError(f"{run_dir} is being trained by another process (lock {run_dir / '.lock'})")
    _LOCKS[str(run_dir.resolve())] = f  # released by unlock() at the end of training or when the process dies


_LOCKS: dict = {}


def unlock(run_dir: Path) -> None:
    f = _LOCKS.pop(str(run_dir.resolve()), None)
    if f is not None:
        (run_dir / ".lock").unlink(missing_ok=True)  # a finished run dir holds only the contract's files
        f.close()
