"""Two CPU processes joined by jax.distributed on localhost train like one process.

scripts/launch_local.py starts both (4 fake devices each, one 1x8 mesh, each
process feeding its half of every batch); the result must match a one-process
run on 8 devices.
"""
import importlib.util
import io
import json
from pathlib import Path

import pytest

from dlrm_jax import config as C
from dlrm_jax.train import train

ROOT = Path(__file__).resolve().parents[2]
ARGS = ["train.examples=4096", "eval.examples=4096", "checkpoint.every_examples=2048",
        "synthetic.cardinalities=" + ",".join(["39", "400"] * 13),
        "embedding.sharding=row", "mesh.data=1", "mesh.model=8"]


def _launcher():
    spec = importlib.util.spec_from_file_location("launch_local", ROOT / "scripts" / "launch_local.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_two_processes_match_one(tmp_path, monkeypatch):
    monkeypatch.setenv("DLRM_SCALING_COMPILE_CACHE", str(tmp_path / "cache"))
    out, log = tmp_path / "two", io.StringIO()
    code = _launcher().launch(["train", "--preset", "tiny", *[x for a in ARGS for x in ("--set", a)],
                               "--out", str(out), "--no-progress"], processes=2, devices_per_process=4,
                              timeout=240, out=log)
    assert code == 0, log.getvalue()[-3000:]
    two = json.loads((out / "summary.json").read_text())
    one = train(C.load_config("tiny", ARGS), tmp_path / "one", progress=False, verbose=False)
    assert two["devices"] == one["devices"] == 8
    for k in ("eval_ne", "eval_logloss", "eval_auc"):
        assert two[k] == pytest.approx(one[k], rel=1e-5), k
    # One metrics log (process 0 alone writes it), the same events as one process.
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [json.loads(x)["step"] for x in
                                          (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["16", "8"]


@pytest.mark.slow  # two two-process runs: ~2 minutes on the 2-core VM
def test_two_processes_into_a_bucket_match_two_processes_locally(tmp_path, monkeypatch, gcs_bucket):
    """scripts/launch_local.py with --out gs://: each process's checkpoint shards, process 0's
    metrics, summary and lease on the bucket; the same results as the local two-process run."""
    from dlrm_jax.run import storage
    monkeypatch.setenv("DLRM_SCALING_COMPILE_CACHE", str(tmp_path / "cache"))
    sets = [x for a in ARGS for x in ("--set", a)]
    runs = {"local": str(tmp_path / "two"), "gs": f"{gcs_bucket}/two"}
    for where, out in runs.items():
        log = io.StringIO()
        code = _launcher().launch(["train", "--preset", "tiny", *sets, "--out", out, "--no-progress"],
                                  processes=2, devices_per_process=4, timeout=400, out=log)
        assert code == 0, (where, log.getvalue()[-3000:])
    local, gs = (json.loads(storage.read_text(f"{out}/summary.json")) for out in runs.values())
    assert gs["devices"] == local["devices"] == 8
    assert {k: gs[k] for k in ("eval_ne", "eval_logloss", "eval_auc")} == \
        {k: local[k] for k in ("eval_ne", "eval_logloss", "eval_auc")}
    lines = [[{k: v for k, v in json.loads(x).items() if k != "wall_s"}
              for x in storage.read_text(f"{out}/metrics.jsonl").splitlines()] for out in runs.values()]
    assert lines[0] == lines[1]
    assert storage.listdir(f"{runs['gs']}/checkpoints") == ["16", "8"]
    assert storage.listdir(runs["gs"]) == ["checkpoints", "config.json", "metrics.jsonl", "summary.json"]
