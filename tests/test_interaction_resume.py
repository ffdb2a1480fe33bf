"""dcn and wukong runs killed after a checkpoint resume to the uninterrupted result."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

METRICS = ("eval_ne", "eval_logloss", "eval_auc", "eval_calibration", "train_examples", "train_flops",
           "params_dense", "flops_per_example", "bayes_ne")


def _checkpoints(run):
    d = run / "checkpoints"
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.exists() else []


def _events(run):
    return [{k: v for k, v in json.loads(x).items() if k != "wall_s"}
            for x in (run / "metrics.jsonl").read_text().splitlines()]


def _kill_when(cmd, condition, timeout):
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    t0 = time.time()
    while not condition():
        if proc.poll() is not None:
            return False   # finished before the kill point
        assert time.time() - t0 < timeout, "kill point never reached"
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return True


@pytest.mark.parametrize("interaction", ["dcn", "wukong"])
def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path, interaction):
    def cmd(out):
        return [sys.executable, "-m", "dlrm_jax", "train", "--preset", "tiny", "--set", f"model.interaction={interaction}",
                "--set", "train.examples=2**13", "--set", "eval.examples=2**11", "--set", "checkpoint.every_examples=1024",
                "--set", "model.dcn_rank=8", "--out", str(out), "--no-progress"]

    ref, run = tmp_path / "ref", tmp_path / "killed"
    subprocess.run(cmd(ref), check=True, capture_output=True, timeout=900)
    assert _kill_when(cmd(run), lambda: len(_checkpoints(run)) >= 1, timeout=900)
    assert not (run / "summary.json").exists()
    subprocess.run(cmd(run), check=True, capture_output=True, timeout=900)
    a, b = (json.loads((d / "summary.json").read_text()) for d in (ref, run))
    assert {k: b[k] for k in METRICS} == {k: a[k] for k in METRICS}
    assert _events(run) == _events(ref)
