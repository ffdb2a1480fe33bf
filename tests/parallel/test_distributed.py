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
