"""Two processes on localhost (scripts/launch_local.py) fall back from a damaged checkpoint together.

Both processes read each checkpoint and agree through jax.distributed before
either goes on; here the arrays written by process 1 are damaged, and both
must set the checkpoint aside, resume from the same step, and end where an
uninterrupted two-process run ends.
"""
import importlib.util
import io
import json
import os
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# 8 steps of 256 on a 1x8 mesh over 2 processes x 4 devices; checkpoints at 4 and 8.
ARGS = ["train.examples=2048", "eval.examples=2048", "checkpoint.every_examples=1024",
        "synthetic.cardinalities=" + ",".join(["39", "400"] * 13),
        "embedding.sharding=row", "mesh.data=1", "mesh.model=8"]


def _launch(out: Path) -> tuple[int, str]:
    spec = importlib.util.spec_from_file_location("launch_local", ROOT / "scripts" / "launch_local.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    log = io.StringIO()
    code = mod.launch(["train", "--preset", "tiny", *[x for a in ARGS for x in ("--set", a)], "--out", str(out),
                       "--no-progress"], processes=2, devices_per_process=4, timeout=400, out=log)
    return code, log.getvalue()


def _lines(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def _metrics(run: Path) -> list[dict]:
    """The train-loss and eval lines, without the (run-time dependent) wall_s."""
    return [{k: v for k, v in x.items() if k != "wall_s"} for x in _lines(run) if "event" not in x]


def test_two_processes_fall_back_to_the_same_step(tmp_path, monkeypatch):
    monkeypatch.setenv("DLRM_SCALING_COMPILE_CACHE", str(tmp_path / "cache"))  # the rerun compiles nothing
    ref = tmp_path / "ref"
    code, log = _launch(ref)
    assert code == 0, log[-3000:]
    assert sorted(p.name for p in (ref / "checkpoints").iterdir()) == ["4", "8"]
    run = tmp_path / "run"
    shutil.copytree(ref, run, ignore=shutil.ignore_patterns("summary.json"))  # killed after its last checkpoint
    for f in (run / "checkpoints" / "8" / "default" / "ocdbt.process_1" / "d").iterdir():
        os.truncate(f, 100)  # the array bytes process 1 wrote

    code, log = _launch(run)

    assert code == 0, log[-3000:]
    for i in (0, 1):  # each process says so, names the same target, resumes from the same step
        said = [x for x in log.splitlines() if x.startswith(f"[{i}] checkpoint 8 ") and "is unreadable" in x]
        assert len(said) == 1 and said[0].endswith("moved to 8.unreadable, resuming from step 4"), log[-3000:]
        assert f"[{i}] {run}: resuming from step 4 (1024 examples)" in log
    want, got = json.loads((ref / "summary.json").read_text()), json.loads((run / "summary.json").read_text())
    for k in ("eval_ne", "eval_logloss", "eval_auc", "eval_calibration"):
        assert got[k] == want[k], k
    assert _metrics(run) == _metrics(ref)
    events = [x for x in _lines(run) if "event" in x]  # one line: process 0 alone writes the log
    assert [(e["step"], e["checkpoint"], e["moved_to"]) for e in events] == [(4, 8, "checkpoints/8.unreadable")]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["4", "8", "8.unreadable"]
