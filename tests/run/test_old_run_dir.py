"""A run directory and checkpoint written by an earlier version of the code (main 15b98ca,
before the embedding package) resume under this one and end where that run ended.

The fixture was made with the old code: `train --preset tiny --set train.examples=4096
--set eval.examples=2048 --set synthetic.cardinalities=50 --set checkpoint.every_examples=2048
--set mesh.data=1`, run to the end; then its final checkpoint and summary.json were
removed, as if it had been killed after the checkpoint at step 8 (its metrics.jsonl still
holds the lines of steps 9-16, which a resume must drop and write again).
"""
import json
import shutil
from pathlib import Path

from dlrm_jax import config as C
from dlrm_jax.run.rundir import read_json
from dlrm_jax.train import train

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "run_15b98ca"
# What the old code's uninterrupted run ended with.
OLD_SUMMARY = {"eval_ne": 0.9161283620978256, "eval_auc": 0.7048669779777597, "eval_logloss": 0.5270969881017984}


def _without_wall(lines):
    return [{k: v for k, v in x.items() if k != "wall_s"} for x in lines]


def test_run_dir_of_the_previous_layout_resumes_to_the_same_result(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    cfg = C.from_dict(read_json(run / "config.json"))
    saved = (run / "checkpoints" / "8" / "_CHECKPOINT_METADATA").read_bytes()
    summary = train(cfg, run, progress=False, verbose=False)
    assert summary["status"] == "done"
    # Resumed from the old checkpoint (a fresh start would have saved step 8 anew).
    assert (run / "checkpoints" / "8" / "_CHECKPOINT_METADATA").read_bytes() == saved
    for k, v in OLD_SUMMARY.items():
        assert abs(summary[k] - v) <= 1e-6 * abs(v), (k, summary[k], v)
    got = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    uninterrupted = FIXTURE.parent / "run_15b98ca_uninterrupted_metrics.jsonl"
    want = [json.loads(x) for x in uninterrupted.read_text().splitlines()]
    assert len(got) == len(want)
    for g, w in zip(_without_wall(got), _without_wall(want)):
        assert g.keys() == w.keys()
        for k in g:
            assert abs(g[k] - w[k]) <= 1e-6 * max(1.0, abs(w[k])), (g, w)
