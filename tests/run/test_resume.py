"""Preemption safety: runs and sweeps SIGKILLed at several points resume to the same result."""
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sweeps import load_sweep
from sweeps.runner import parse_shard, plan, run_sweep

TINY = ["--preset", "tiny", "--set", "train.examples=2**15", "--set", "checkpoint.every_examples=2048",
        "--set", "train.eval_every_examples=16384"]
METRICS = ("eval_ne", "eval_logloss", "eval_auc", "eval_calibration", "train_examples", "train_flops", "bayes_ne")


def _train_cmd(out: Path) -> list[str]:
    return [sys.executable, "-m", "dlrm_jax", "train", *TINY, "--out", str(out), "--no-progress"]


def _checkpoints(run: Path) -> list[int]:
    d = run / "checkpoints"
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.exists() else []


def _kill_when(cmd, condition, timeout=120.0, **popen):
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            **popen)
    t0 = time.time()
    while not condition():
        if proc.poll() is not None:
            return False  # finished before the kill point
        assert time.time() - t0 < timeout, "kill point never reached"
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return True


def _events(run: Path) -> list[dict]:
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in x.items() if k != "wall_s"} for x in lines]


def test_run_killed_at_several_points_resumes_to_the_uninterrupted_result(tmp_path):
    ref = tmp_path / "ref"
    subprocess.run(_train_cmd(ref), check=True, capture_output=True, timeout=300)
    run = tmp_path / "killed"
    kills = [
        lambda: (run / "config.json").exists(),        # before any checkpoint
        lambda: len(_checkpoints(run)) >= 1,            # after the first checkpoint
        lambda: bool(_checkpoints(run)) and _checkpoints(run)[-1] >= 8 * 4,  # mid-way
    ]
    killed = sum(_kill_when(_train_cmd(run), k) for k in kills)
    assert killed >= 2  # the run really was interrupted (more than once)
    assert not (run / "summary.json").exists()
    subprocess.run(_train_cmd(run), check=True, capture_output=True, timeout=300)
    a = json.loads((ref / "summary.json").read_text())
    b = json.loads((run / "summary.json").read_text())
    assert {k: b[k] for k in METRICS} == {k: a[k] for k in METRICS}
    assert _events(run) == _events(ref)  # every event once, same values


POINTS_FILE = '''
"""A 3-point test sweep."""
def points(base):
    return [{"train.examples": n} for n in (1024, 2048, 4096)]
'''


def _results(out: Path) -> list[dict]:
    with open(out / "results.csv") as f:
        return list(csv.DictReader(f))


def test_sweep_killed_midway_ends_with_every_point_once(tmp_path):
    sweep_file = tmp_path / "three.py"
    sweep_file.write_text(POINTS_FILE)
    out = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "dlrm_jax", "sweep", str(sweep_file), "--preset", "tiny", "--out", str(out)]
    assert _kill_when(cmd, lambda: (out / "results.csv").exists() and len(_results(out)) >= 1)
    assert len(_results(out)) < 3
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = _results(out)
    assert sorted(r["run"] for r in rows) == ["examples-1024", "examples-2048", "examples-4096"]
    assert all(r["status"] == "done" and r["sweep"] == "three" for r in rows)
    by_examples = sorted(rows, key=lambda r: int(r["train_examples"]))
    assert [int(r["train.examples"]) for r in by_examples] == [1024, 2048, 4096]
    assert "1 already done" in done.stdout or "2 already done" in done.stdout


def test_shards_cover_every_point_exactly_once(tmp_path):
    sweep = load_sweep("compute")
    every = [p.name for p in plan(sweep, tmp_path, "small", [])]
    lines = []
    for shard in ("0/2", "1/2"):
        run_sweep("compute", tmp_path, "small", shard=shard, dry_run=True, log=lines.append)
    names = [line.split("--out ")[1].split()[0].rsplit("/", 1)[1] for line in lines]
    assert sorted(names) == sorted(every) and len(set(names)) == len(every) == 12


def test_bad_shard_and_sweep_names():
    from dlrm_jax.errors import UserError
    with pytest.raises(UserError, match="--shard expects I/N"):
        parse_shard("2")
    with pytest.raises(UserError, match="need 0 <= I < N"):
        parse_shard("2/2")
    with pytest.raises(UserError, match="unknown sweep 'nope'"):
        load_sweep("nope")


def test_sweep_rerun_with_other_settings_is_refused_and_names_never_collide(tmp_path):
    from dlrm_jax.errors import UserError
    sweep_file = tmp_path / "one.py"
    sweep_file.write_text('def points(base):\n    return [{"train.examples": 1024}]\n')
    out = tmp_path / "sweep"
    rows = run_sweep(str(sweep_file), out, "tiny", log=lambda *a: None)
    assert [r["status"] for r in rows] == ["done"]
    with pytest.raises(UserError, match="holds a finished run with a different config \\(model.embed_dim\\)"):
        run_sweep(str(sweep_file), out, "tiny", ["model.embed_dim=4"], log=lambda *a: None)
    clash = tmp_path / "clash.py"
    clash.write_text('def points(base):\n    return [{"seed": 1}, {"synthetic.seed": 1}]\n')
    with pytest.raises(UserError, match="get the same run name 'seed-1'"):
        run_sweep(str(clash), tmp_path / "c", "tiny", dry_run=True, log=lambda *a: None)
