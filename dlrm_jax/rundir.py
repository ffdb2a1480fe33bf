"""The run directory: config.json, metrics.jsonl, summary.json, checkpoints/.

Files other tools read are written atomically (temp name, then rename), so a
killed run never leaves a half-written config or summary.  `summary.json`
is written last: its presence with status "done" marks a finished run.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to a temp file beside `path`, fsync, rename: readers see all or nothing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(_jsonable(obj), indent=2) + "\n")


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
    write_text_atomic(path, "".join(json.dumps(_jsonable(line)) + "\n" for line in lines))
