"""The sweep runner: one run directory per point, `results.csv` beside them.

    dlrm-scaling sweep SWEEP --out DIR [--preset P] [--set k=v ...] [--workers N] [--shard I/N] [--dry-run]

* Run names are derived from the varied values (`examples-65536`,
  `top_mlp-64x32__examples-8192`), so every machine and every rerun agrees.
* Each point is `dlrm-scaling train ... --out DIR/NAME` in its own process: a
  crash or NaN in one run cannot take the sweep down, and `--dry-run` prints
  exactly these command lines for an external scheduler.
* Finished points (summary.json with status "done") are skipped; unfinished
  ones resume from their own checkpoints (the train command does that).
* `--shard I/N` takes every N-th point starting at I: N machines split a sweep
  with no coordination.
* `results.csv` is rebuilt from the run directories after every run and
  written atomically, so a sweep killed at any moment and rerun ends with
  every point exactly once.
* `--out gs://bucket/sweep` (dlrm_jax/run/storage.py): the same files on a
  bucket.  Shards on several machines rebuild results.csv from every run
  directory with a generation-conditioned write (`storage.rewrite`): a shard
  whose rebuild is older than the object rebuilds again, so no shard's row is
  lost to another's stale write.  A run's train.log is spooled to a local
  file while it runs (GCS has no append) and uploaded when it ends, after the
  log of earlier attempts.
"""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from dlrm_jax.config import Config, diff as config_diff, from_dict, load_config
from dlrm_jax.errors import UserError
from dlrm_jax.run import preemption, storage
from dlrm_jax.run.rundir import read_json, read_summary
from sweeps import Sweep, load_sweep

SUMMARY_FIELDS = ("eval_ne", "eval_logloss", "eval_auc", "eval_calibration", "eval_examples", "train_examples",
                  "params_embedding", "params_dense", "flops_per_example", "train_flops", "examples_per_s",
                  "wall_s", "bayes_ne", "seed", "devices", "jax_version")


@dataclass(frozen=True)
class Point:
    name: str
    values: dict[str, Any]
    run_dir: Path
    command: tuple[str, ...]
    config: Config


def run_name(values: dict[str, Any]) -> str:
    def fmt(v):
        if isinstance(v, (tuple, list)):
            return "x".join(str(x) for x in v)
        return str(v).replace("/", "_").replace(":", "_")
    return "__".join(f"{k.split('.')[-1]}-{fmt(v)}" for k, v in values.items())


def parse_shard(text: str | None) -> tuple[int, int]:
    if text is None:
        return 0, 1
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise UserError(f"--shard expects I/N (e.g. 0/4), got {text!r}")
    if not (n >= 1 and 0 <= i < n):
        raise UserError(f"--shard {text}: need 0 <= I < N")
    return i, n


def plan(sweep: Sweep, out: Path, preset: str | None, overrides: Sequence[str]) -> list[Point]:
    """Every point of the sweep, with its validated config and command line."""
    base = load_config(preset, overrides)
    try:
        listed = list(sweep.points(base))
        assert all(isinstance(v, dict) for v in listed)
    except Exception as err:
        raise UserError(f"sweep {sweep.name}: points(base) must return a list of {{key: value}} dicts ({err!r})")
    points = plan_values(sweep, out, preset, overrides, listed)
    if not points:
        raise UserError(f"sweep {sweep.name} has no points")
    return points


def plan_values(sweep: Sweep, out: Path, preset: str | None, overrides: Sequence[str],
                listed: list[dict[str, Any]], known: Sequence[Point] = ()) -> list[Point]:
    """Points for these values (those not among `known`), with validated configs and commands."""
    points, seen = [], {p.name: p.values for p in known}
    for values in listed:
        name = run_name(values)
        if name in seen:
            if seen[name] == values:  # e.g. a width that rounds to the same size twice
                continue
            raise UserError(f"sweep {sweep.name}: points {seen[name]} and {values} get the same run name {name!r}")
        seen[name] = values
        sets = [f"{k}={v}" for k, v in _flat_values(values).items()]
        cfg = load_config(preset, [*overrides, *sets])  # fails now, not in the middle of the sweep
        cmd = [sys.executable, "-m", "dlrm_jax", "train", *(["--preset", preset] if preset else [])]
        for s in [*overrides, *sets]:
            cmd += ["--set", s]
        cmd += ["--out", str(out / name), "--no-progress"]
        points.append(Point(name, dict(values), out / name, tuple(cmd), cfg))
    return points


def is_done(point: Point) -> bool:
    """A finished run of this very config; a finished run of another config is an error."""
    summary = read_summary(point.run_dir)
    if not (summary is not None and summary.get("status") == "done"):
        return False
    changed = config_diff(from_dict(read_json(point.run_dir / "config.json")), point.config)
    if changed:
        raise UserError(f"{point.run_dir} holds a finished run with a different config ({', '.join(changed)}); "
                        f"use a new --out for a sweep with other settings")
    return True


def run_sweep(sweep_name: str, out: str | Path, preset: str | None = None, overrides: Sequence[str] = (),
              workers: int = 1, shard: str | None = None, dry_run: bool = False, log=print) -> list[dict]:
    """Run (or print) the sweep's points of this shard; return the results rows."""
    sweep = load_sweep(sweep_name)
    out = storage.path(out)  # pathlib.Path, or epath.Path on gs:// (bucket checked now)
    if workers < 1:
        raise UserError(f"--workers must be >= 1, got {workers}")
    i, n = parse_shard(shard)
    points = plan(sweep, out, preset, list(overrides))
    mine = points[i::n]
    if dry_run:
        for p in mine:
            log(shlex.join(p.command))
        return []
    try:
        storage.makedirs(out)
    except OSError as err:
        raise UserError(f"cannot create the sweep directory --out {out}: {err.strerror or err}")
    todo = [p for p in mine if not is_done(p)]
    log(f"sweep {sweep.name}: {len(points)} points, {len(mine)} in shard {i}/{n}, "
        f"{len(mine) - len(todo)} already done, {len(todo)} to run -> {out}")
    running: list[tuple[Point, subprocess.Popen, float, Any]] = []
    finished = len(mine) - len(todo)
    startup_errors: dict[str, str] = {}  # runs that exited without a summary (bad config, path)
    unfinished: list[str] = []  # runs a signal stopped: they resume on the sweep's rerun
    # SIGTERM or Ctrl-C: start nothing more, pass SIGTERM on to the running trainers
    # (each saves a checkpoint at its step and exits PREEMPTED_EXIT), wait for them.
    watch = preemption.watch()
    forwarded = False
    base = load_config(preset, list(overrides)) if sweep.extend is not None else None
    try:
        while True:
            if not todo and not running and not watch.requested_now() and sweep.extend is not None:
                # Every point so far is finished: the sweep may ask for more (an IsoFLOP
                # sweep whose best size at a budget sits at the edge of the sizes tried).
                if n > 1:
                    log(f"sweep {sweep.name}: not extended beyond its grid in a shard (--shard {shard}): "
                        f"extensions need every point's result")
                    break
                done_rows = [r for r in results_rows(sweep, points, startup_errors) if r["status"] == "done"]
                more = plan_values(sweep, out, preset, list(overrides), sweep.extend(base, done_rows, log), points)
                if not more:
                    break
                points, mine = points + more, mine + more
                todo = [p for p in more if not is_done(p)]
                finished += len(more) - len(todo)
                log(f"sweep {sweep.name}: {len(more)} point(s) added beyond the grid, {len(todo)} to run")
                continue
            if not ((todo and not watch.requested_now()) or running):
                break
            while todo and len(running) < workers and not watch.requested_now():
                p = todo.pop(0)
                storage.makedirs(p.run_dir)
                err = RunLog(p.run_dir / "train.log")  # the run's own stderr, kept for post-mortems
                # Their own session: a Ctrl-C on the terminal reaches the sweep only, which
                # passes it on once, as SIGTERM (a second SIGINT would skip the child's save).
                running.append((p, subprocess.Popen(p.command, stdout=subprocess.DEVNULL, stderr=err.file,
                                                    env=_child_env(), start_new_session=True),
                                time.time(), err))
            if watch.requested_now() and not forwarded:
                for _, proc, _, _ in running:
                    proc.send_signal(signal.SIGTERM)
                forwarded = True
            time.sleep(0.2)
            for item in list(running):
                p, proc, t0, err = item
                if proc.poll() is None:
                    continue
                running.remove(item)
                err.close()
                if read_summary(p.run_dir) is None:
                    if proc.returncode in (preemption.PREEMPTED_EXIT, -signal.SIGTERM):
                        unfinished.append(p.name)
                        log(f"[{finished}/{len(mine)}] {p.name}: preempted, unfinished "
                            f"({time.time() - t0:.0f} s; {err.last})")
                        continue
                    startup_errors[p.name] = f"exit {proc.returncode}: {err.last}"
                finished += 1
                log(f"[{finished}/{len(mine)}] {p.name}: {_outcome(p, startup_errors)} "
                    f"({time.time() - t0:.0f} s)")
                write_results(sweep, points, out, startup_errors)
    finally:
        watch.close()
        for _, proc, _, err in running:  # interrupted: no orphan keeps training into our run dirs
            proc.terminate()
            proc.wait()
            err.close()
    if watch.requested_now():
        write_results(sweep, points, out, startup_errors)
        raise preemption.SweepPreempted(unfinished + [p.name for p in todo], watch.signal_name)
    rows = write_results(sweep, points, out, startup_errors)
    names = {p.name for p in mine}
    return [r for r in rows if r["run"] in names]


def _child_env() -> dict:
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _outcome(p: Point, startup_errors: dict[str, str]) -> str:
    if p.name in startup_errors:
        return f"failed ({startup_errors[p.name]})"
    s = read_summary(p.run_dir)
    if s.get("status") == "done":
        return f"done, eval NE {s['eval_ne']:.4f}{_set_aside_note(p.run_dir)}"
    return f"failed: {s.get('error')}"


def _set_aside_note(run_dir: Path) -> str:
    """How a run that met unreadable checkpoints resumed (their events in metrics.jsonl), or ""."""
    from dlrm_jax.run.checkpoint import UNREADABLE_EVENT
    from dlrm_jax.run.rundir import MetricsLog
    events = [e for e in MetricsLog(run_dir / "metrics.jsonl").read_lines() if e.get("event") == UNREADABLE_EVENT]
    if not events:
        return ""
    resumed = f"resumed from step {events[-1]['step']}" if events[-1]["step"] else "restarted from step 0"
    return f" ({resumed}; unreadable checkpoints set aside: {', '.join(e['moved_to'] for e in events)})"


class RunLog:
    """A run's train.log, opened for the trainer's stderr.  Locally the file itself in
    append mode (reruns add to it); on gs:// a local spool file, uploaded by `close`
    after the object's earlier content (the log of earlier attempts)."""

    def __init__(self, path):
        self.path = path
        if storage.is_remote(path):
            import tempfile
            fd, name = tempfile.mkstemp(prefix="dlrm-train-log.", suffix=".log")
            self.local, self.file = Path(name), os.fdopen(fd, "a")
        else:
            self.local, self.file = Path(path), open(path, "a")

    def close(self) -> None:
        if self.file.closed:
            return
        self.file.close()
        self.last = _last_line(self.local)  # for the sweep's log line (the spool goes now)
        if not storage.is_remote(self.path):
            return
        try:
            try:
                before = storage.read_bytes(self.path)
            except FileNotFoundError:
                before = b""
            storage.write_atomic(self.path, before + self.local.read_bytes())
        finally:
            self.local.unlink(missing_ok=True)


def _last_line(path: Path) -> str:
    try:
        lines = [x for x in path.read_text().splitlines() if x.strip()]
        return lines[-1] if lines else ""
    except OSError:
        return ""


def results_rows(sweep: Sweep, points: list[Point], startup_errors: dict[str, str] | None = None) -> list[dict]:
    """One row per run with a summary, plus the runs of this invocation that could not start."""
    rows = []
    for p in points:
        s = read_summary(p.run_dir)
        if s is None:
            if startup_errors and p.name in startup_errors:
                rows.append({"run": p.name, "sweep": sweep.name, "status": "failed", **_flat_values(p.values),
                             "error": startup_errors[p.name]})
            continue
        rows.append({"run": p.name, "sweep": sweep.name, "status": s.get("status"), **_flat_values(p.values),
                     **{k: s.get(k) for k in SUMMARY_FIELDS}, "error": s.get("error")})
    return rows


def _flat_values(values: dict) -> dict:
    return {k: ",".join(map(str, v)) if isinstance(v, (tuple, list)) else v for k, v in values.items()}


def write_results(sweep: Sweep, points: list[Point], out: Path,
                  startup_errors: dict[str, str] | None = None) -> list[dict]:
    """Rebuild results.csv from the run directories; atomic (temp file, rename; on gs://
    one object write, rebuilt again if another shard wrote it meanwhile)."""
    built: list[list[dict]] = []

    def build() -> str:
        import csv
        import io
        rows = results_rows(sweep, points, startup_errors)
        built[:] = [rows]
        columns: list[str] = ["run", "sweep", "status"]
        for r in rows:
            columns += [k for k in r if k not in columns]
        columns = [c for c in columns if c != "error"] + ["error"]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=columns)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})
        return buf.getvalue()

    storage.rewrite(out / "results.csv", build)
    return built[0]
