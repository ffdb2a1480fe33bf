"""dcn and wukong runs killed after a checkpoint resume to the uninterrupted result."""
import json
import subprocess
import sys

import pytest

from tests.run.test_resume import _checkpoints, _events, _kill_when

METRICS = ("eval_ne", "eval_logloss", "eval_auc", "eval_calibration", "train_examples", "train_flops",
           "params_dense", "flops_per_example", "bayes_ne")


@pytest.mark.parametrize("interaction", ["dcn", "wukong"])
def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path, interaction):
    def cmd(out):
        return [sys.executable, "-m", "dlrm_jax", "train", "--preset", "tiny",
                "--set", f"model.interaction={interaction}",
                "--set", "train.examples=2**13", "--set", "eval.examples=2**11",
                "--set", "checkpoint.every_examples=1024",
                "--set", "model.dcn_rank=8", "--out", str(out), "--no-progress"]

    ref, run = tmp_path / "ref", tmp_path / "killed"
    subprocess.run(cmd(ref), check=True, capture_output=True, timeout=900)
    assert _kill_when(cmd(run), lambda: len(_checkpoints(run)) >= 1, timeout=900)
    assert not (run / "summary.json").exists()
    subprocess.run(cmd(run), check=True, capture_output=True, timeout=900)
    a, b = (json.loads((d / "summary.json").read_text()) for d in (ref, run))
    assert {k: b[k] for k in METRICS} == {k: a[k] for k in METRICS}
    assert _events(run) == _events(ref)
