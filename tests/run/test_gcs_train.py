"""`train --out gs://bucket/run` against fake-gcs-server: resume after SIGKILL, the lease, a bad bucket.

The reference is a local uninterrupted run of the same config: a gs:// run killed
at several points and rerun must end with its summary and every metrics line once.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from dlrm_jax.run import storage
from tests.run.test_resume import METRICS, TINY, _kill_when

TTL_S = 3.0  # the lease of a killed trainer blocks its run this long


def _cmd(out, *extra) -> list[str]:
    return [sys.executable, "-m", "dlrm_jax", "train", *TINY, *extra, "--out", str(out), "--no-progress"]


def _env() -> dict:
    return dict(os.environ, DLRM_LEASE_TTL_S=str(TTL_S))


def _checkpoints(run: str) -> list[int]:
    return sorted(int(n) for n in storage.listdir(f"{run}/checkpoints") if n.isdigit())


def _newest(steps: list[int]) -> int:
    """From one listing: listed twice, a step the first saw may be gone by the second (a rerun
    removes the uncommitted step a kill left, before it saves that step again)."""
    return steps[-1] if steps else -1


def _events(text: str) -> list[dict]:
    return [{k: v for k, v in json.loads(x).items() if k != "wall_s"} for x in text.splitlines()]


def test_a_killed_gs_run_resumes_to_the_local_uninterrupted_result(gcs_bucket, tmp_path):
    ref = tmp_path / "ref"
    subprocess.run(_cmd(ref), check=True, capture_output=True, timeout=300)
    run = f"{gcs_bucket}/killed"
    kills = [lambda: len(_checkpoints(run)) >= 1,                       # after the first checkpoint
             lambda: _newest(_checkpoints(run)) >= 8 * 6]  # mid-way
    killed = 0
    for kill in kills:
        killed += _kill_when(_cmd(run), kill, timeout=240, env=_env())
        time.sleep(TTL_S + 0.5)  # the dead trainer's lease expires; the rerun takes it over
    assert killed == 2 and not storage.exists(f"{run}/summary.json")
    done = subprocess.run(_cmd(run), capture_output=True, text=True, timeout=300, env=_env(), check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    a = json.loads((ref / "summary.json").read_text())
    b = json.loads(storage.read_text(f"{run}/summary.json"))
    assert {k: b[k] for k in METRICS} == {k: a[k] for k in METRICS}
    assert _events(storage.read_text(f"{run}/metrics.jsonl")) == _events((ref / "metrics.jsonl").read_text())
    assert storage.listdir(run) == ["checkpoints", "config.json", "metrics.jsonl", "summary.json"]  # lease gone


def test_a_second_trainer_on_a_live_gs_run_exits_2_naming_the_lock(gcs_bucket):
    run = f"{gcs_bucket}/busy"
    longer = ("--set", "train.examples=2**18")  # the first one still trains when the second starts
    first = subprocess.Popen(_cmd(run, *longer), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True, env=_env())
    try:
        deadline = time.monotonic() + 240
        while not storage.exists(f"{run}/config.json"):  # written under the lease
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        second = subprocess.run(_cmd(run, *longer), capture_output=True, text=True, timeout=300, env=_env(),
                                check=False)
        assert first.poll() is None, "the first trainer ended before the second asked"
        assert second.returncode == 2
        lines = [line for line in second.stderr.splitlines() if "error" in line]
        assert lines == [line for line in lines if f"lock {run}/.lock" in line] and len(lines) == 1, second.stderr
        assert "is being trained by another process" in lines[0]
    finally:
        os.killpg(first.pid, 9)
        first.wait()


def test_a_missing_bucket_exits_2_in_seconds_with_one_line(gcs_server, tmp_path):
    start = time.monotonic()
    out = subprocess.run(_cmd("gs://no-such-bucket-zz/r"), capture_output=True, text=True, timeout=120,
                         cwd=tmp_path, check=False)
    assert out.returncode == 2 and time.monotonic() - start < 60
    assert out.stderr.strip().splitlines() == [
        "dlrm-scaling train: error: gs://no-such-bucket-zz: no such bucket (create it, or fix the path)"]
    assert os.listdir(tmp_path) == []  # nothing written, not even a local ./gs: directory


def test_a_damaged_gs_checkpoint_is_set_aside_and_the_run_falls_back(gcs_bucket, tmp_path, capsys):
    """The damaged-checkpoint fallback on a bucket: 32 is unreadable, moved aside, 24 resumes."""
    from dlrm_jax.train import train
    from tests.run.test_checkpoint_fallback import EVAL, _cfg
    ref = train(_cfg(), tmp_path / "ref", progress=False, verbose=False)
    run = f"{gcs_bucket}/run"
    train(_cfg(), run, progress=False, verbose=False)
    storage.remove(f"{run}/summary.json")  # interrupted after its last checkpoint
    sharding = f"{run}/checkpoints/32/default/_sharding"
    storage.write_atomic(sharding, storage.read_bytes(sharding)[:100])  # the first case
    summary = train(_cfg(), run, progress=False)
    said = [line for line in capsys.readouterr().err.splitlines() if "is unreadable" in line]
    assert len(said) == 1 and said[0].startswith(f"checkpoint 32 in {run}/checkpoints is unreadable (")
    assert "_sharding" in said[0] and said[0].endswith("moved to 32.unreadable, resuming from step 24")
    assert {k: summary[k] for k in EVAL} == {k: ref[k] for k in EVAL}
    assert _checkpoint_dirs(run) == ["24", "32", "32.unreadable"]
    aside = storage.listdir(f"{run}/checkpoints/32.unreadable")
    assert "default" in aside and "commit_success.txt" not in aside  # moved, no longer a checkpoint
    assert storage.read_bytes(f"{run}/checkpoints/32.unreadable/default/_sharding") == \
        storage.read_bytes(f"{tmp_path}/ref/checkpoints/32/default/_sharding")[:100]


def _checkpoint_dirs(run: str) -> list[str]:
    return storage.listdir(f"{run}/checkpoints")


def test_config_json_on_a_bucket_is_created_once(gcs_bucket, tmp_path):
    """A trainer that lost its lease before writing config.json cannot replace the new holder's."""
    import pytest

    from dlrm_jax.config import load_config
    from dlrm_jax.errors import UserError
    from dlrm_jax.run import rundir
    run = storage.path(f"{gcs_bucket}/r")
    mine, other = load_config("tiny", []), load_config("tiny", ["model.embed_dim=4"])
    rundir.write_config(run, other)  # the trainer that took the run over wrote first
    first = storage.read_text(f"{gcs_bucket}/r/config.json")
    with pytest.raises(UserError, match=r"r/config.json was written by another trainer meanwhile, with a "
                                        r"different config \(model.embed_dim\); use a new --out"):
        rundir.write_config(run, mine)
    rundir.write_config(run, other)  # the same config: that run, resumed; nothing to refuse
    assert storage.read_text(f"{gcs_bucket}/r/config.json") == first
    rundir.write_config(tmp_path, other)
    assert (tmp_path / "config.json").read_text() == first  # the same bytes as a local run's
    assert rundir.check(run, other) is True
