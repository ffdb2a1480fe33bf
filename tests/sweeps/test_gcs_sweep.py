"""Sweeps, analyze and plan on a bucket, against fake-gcs-server (tests/run/gcs_server.py).

Two `sweep --shard 0/2` and `--shard 1/2` processes started together into one gs://
sweep must leave every point once in results.csv, each run's log kept; `analyze` on it
must give the fits of the same sweep run locally, and `plan` the same answer.
"""
from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time

import pandas as pd

from dlrm_jax.run import storage
from sweeps.runner import run_sweep

SWEEP = ["data", "--preset", "tiny", "--set", "train.examples=2**13", "--set", "eval.examples=2048"]
NAMES = sorted(f"examples-{256 << k}" for k in range(6))
# Columns of results.csv that depend on the machine's speed, not on the runs' results.
TIMING = {"wall_s", "examples_per_s"}


def _rows(text: str) -> list[dict]:
    return sorted(csv.DictReader(io.StringIO(text)), key=lambda r: r["run"])


def _without_token_lines(text: str) -> str:
    return "".join(line for line in text.splitlines(keepends=True) if "GOOGLE_AUTH_TOKEN_FOR_TESTING" not in line)


def _numbers(fits: dict) -> dict:
    """fits.json less what names the input or the time it was made."""
    return {k: v for k, v in fits.items() if k not in ("created", "source")}


def test_two_shards_into_one_gs_sweep_then_analyze_equals_local(gcs_bucket, tmp_path):
    from analysis.cli import main as analyze
    local = tmp_path / "local"
    run_sweep(SWEEP[0], local, "tiny", SWEEP[4::2], log=lambda *a: None)
    out = f"{gcs_bucket}/sweeps/data"
    cmd = [sys.executable, "-m", "dlrm_jax", "sweep", *SWEEP, "--out", out]
    shards = [subprocess.Popen([*cmd, "--shard", s], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for s in ("0/2", "1/2")]
    for proc in shards:
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr[-3000:]
        assert "6 points, 3 in shard" in stdout
    rows = _rows(storage.read_text(f"{out}/results.csv"))
    assert [r["run"] for r in rows] == NAMES and {r["status"] for r in rows} == {"done"}  # each once
    ref = _rows((local / "results.csv").read_text())
    assert [{k: v for k, v in r.items() if k not in TIMING} for r in rows] == \
        [{k: v for k, v in r.items() if k not in TIMING} for r in ref]
    for name in NAMES:  # the run directories hold what local ones do, train.log included
        assert storage.listdir(f"{out}/{name}") == sorted(os.listdir(local / name)), name
        log = storage.read_text(f"{out}/{name}/train.log")
        # Uploaded from its spool: TensorStore says on stderr that it uses the emulator's token.
        assert "GOOGLE_AUTH_TOKEN_FOR_TESTING" in log
        assert _without_token_lines(log) == (local / name / "train.log").read_text()
    assert storage.listdir(out) == [*NAMES, "results.csv"]  # no spool or temp object left

    flags = ["--bootstrap", "20"]
    assert analyze([str(local), "--out", str(tmp_path / "report"), *flags]) == 0
    assert analyze([out, "--out", str(tmp_path / "from_gs"), *flags]) == 0  # read from the bucket
    assert analyze([out, "--out", f"{gcs_bucket}/report", *flags]) == 0     # and written there
    want = json.loads((tmp_path / "report" / "fits.json").read_text())
    assert want["schemes"]["data"]["fit"] is not None
    for got in (json.loads((tmp_path / "from_gs" / "fits.json").read_text()),
                json.loads(storage.read_text(f"{gcs_bucket}/report/fits.json"))):
        assert _numbers(got) == _numbers(want)
    assert json.loads(storage.read_text(f"{gcs_bucket}/report/fits.json"))["source"] == out
    assert storage.listdir(f"{gcs_bucket}/report") == sorted(os.listdir(tmp_path / "report"))
    rerun = subprocess.run([*cmd, "--shard", "1/2"], capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0 and "3 already done, 0 to run" in rerun.stdout, rerun.stderr[-2000:]


def test_plan_reads_a_study_on_a_bucket(gcs_bucket, tmp_path, capsys):
    from analysis.plan_cli import main as plan
    from tests.analysis.test_planner import write_study
    study = write_study(tmp_path)
    remote = f"{gcs_bucket}/study"
    storage.write_atomic(f"{remote}/results.csv", (study / "results.csv").read_bytes())
    answers = []
    for where in (str(study), remote, f"{remote}/results.csv"):
        assert plan([where, "--flops", "2e14", "--bootstrap", "10"]) == 0
        answers.append(capsys.readouterr().out.replace(where, "STUDY"))
    assert answers[0] == answers[1] == answers[2] and "NE" in answers[0]
    df = pd.read_csv(io.BytesIO(storage.read_bytes(f"{remote}/results.csv")))
    assert len(df) == 20  # a normal CSV file when read back


def test_bad_buckets_on_sweep_analyze_and_plan_exit_2_with_one_line(gcs_server, tmp_path):
    """No such bucket: one line, exit 2, in seconds, and nothing written (no ./gs: here)."""
    bad = "gs://no-such-bucket-sw"
    results = tmp_path / "results.csv"
    results.write_text("run,sweep,status,eval_ne\n")
    cases = [(["sweep", *SWEEP, "--out", f"{bad}/s"], "dlrm-scaling sweep: error: "),
             (["analyze", f"{bad}/s", "--out", str(tmp_path / "r")], "dlrm-scaling analyze: error: "),
             (["analyze", str(results), "--out", f"{bad}/r"], "dlrm-scaling analyze: error: "),
             (["plan", f"{bad}/s", "--flops", "1e14"], "dlrm-scaling plan: error: ")]
    for argv, prefix in cases:
        start = time.monotonic()
        out = subprocess.run([sys.executable, "-m", "dlrm_jax", *argv], capture_output=True, text=True,
                             timeout=120, cwd=tmp_path)
        assert out.returncode == 2 and time.monotonic() - start < 60, (argv, out.stderr[-2000:])
        assert out.stderr.strip().splitlines() == [
            f"{prefix}{bad}: no such bucket (create it, or fix the path)"], argv
        assert sorted(os.listdir(tmp_path)) == ["results.csv"], argv


def test_a_forbidden_bucket_is_one_line_on_every_gs_entry_point(gcs_server, tmp_path, monkeypatch, capsys):
    """A 403 on the bucket lookup (these credentials may not read it): every new entry point
    exits 2 with the one line, in-process here (the emulator has no permissions to refuse)."""
    from google.api_core import exceptions as gexc

    from analysis.cli import main as analyze
    from analysis.plan_cli import main as plan
    from dlrm_jax.cli import main as cli
    from dlrm_jax.data.criteo.prepare import main as prepare

    class Forbidding:
        def get_bucket(self, name, **kw):
            raise gexc.Forbidden(f"caller does not have storage.buckets.get access to {name}")

    monkeypatch.setattr(storage, "client", Forbidding)
    monkeypatch.chdir(tmp_path)
    tsv = tmp_path / "a.tsv"
    tsv.write_text("")
    bad = "gs://locked-bucket"
    calls = [(lambda: cli(["sweep", *SWEEP, "--out", f"{bad}/s"]), "dlrm-scaling sweep: error: "),
             (lambda: analyze([f"{bad}/s", "--out", "report"]), "dlrm-scaling analyze: error: "),
             (lambda: analyze([str(tsv), "--out", f"{bad}/r"]), "dlrm-scaling analyze: error: "),
             (lambda: plan([f"{bad}/s", "--flops", "1e14"]), "dlrm-scaling plan: error: "),
             (lambda: prepare(["--src", str(tsv), "--out", f"{bad}/d", "--staging", "st"]), ""),
             (lambda: cli(["train", "--preset", "tiny", "--set", f"data.source=criteo:{bad}/d", "--out", "r"]),
              "dlrm-scaling train: error: ")]
    for call, prefix in calls:
        assert call() == 2
        err = capsys.readouterr().err
        assert err.splitlines() == [f"{prefix}{bad}: permission denied (403) for these credentials"], err
        assert sorted(os.listdir(tmp_path)) == ["a.tsv"]  # no staging dir, report dir or run dir
