"""Preemption and faults: SIGTERM saves and leaves, the lock comes before any write, a full disk is one line.

Each test is one way into a failure that a preempted or crowded machine meets;
the runs are the tiny preset, subprocesses of the CLI, as a user starts them.
"""
import fcntl
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dlrm_jax.config import load_config
from dlrm_jax.run import rundir
from dlrm_jax.run.preemption import PREEMPTED_EXIT
from tests.run.test_resume import METRICS, _checkpoints, _events

ROOT = Path(__file__).resolve().parents[2]
# 128 steps of 256; no periodic checkpoints (the default), so only the signal's save exists.
RUN = ["--preset", "tiny", "--set", "train.examples=2**15", "--set", "mesh.data=1"]


def _cmd(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "dlrm_jax", "train", *RUN, *extra, "--out", str(out), "--no-progress"]


def _run(cmd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)


def _lines(text: str) -> list[str]:
    """stderr without JAX's own warnings (compilation-cache notes)."""
    return [x for x in text.splitlines() if x.strip() and "Warning" not in x and not x.startswith("  warnings.warn")]


def _signal_after_first_log(cmd, sig, run: Path, **popen) -> tuple[subprocess.Popen, float, str, str]:
    """Start `cmd`, send `sig` once `run` has logged its first line; (process, seconds to exit, stdout, stderr)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)
    t0 = time.time()
    while not (run / "metrics.jsonl").exists() or not (run / "metrics.jsonl").read_text():
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t0 < 120
        time.sleep(0.02)
    proc.send_signal(sig)
    sent = time.time()
    out, err = proc.communicate(timeout=120)
    return proc, time.time() - sent, out, err


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    ref = tmp_path_factory.mktemp("faults") / "ref"
    done = _run(_cmd(ref))
    assert done.returncode == 0, done.stderr
    return ref


def _same_run(run: Path, ref: Path) -> None:
    a = json.loads((ref / "summary.json").read_text())
    b = json.loads((run / "summary.json").read_text())
    assert {k: b[k] for k in METRICS} == {k: a[k] for k in METRICS}
    assert _events(run) == _events(ref)


def test_sigterm_saves_the_step_reached_and_the_rerun_ends_as_the_uninterrupted_run(tmp_path, reference):
    run = tmp_path / "run"
    proc, took, _, err = _signal_after_first_log(_cmd(run), signal.SIGTERM, run)
    assert proc.returncode == PREEMPTED_EXIT, err
    said = _lines(err)
    assert len(said) == 1 and said[0].startswith("dlrm-scaling train: preempted (SIGTERM) at step "), err
    step = int(said[0].split(" at step ")[1].split()[0])
    assert 0 < step < 128 and said[0].endswith("rerun the same command to resume")
    assert _checkpoints(run) == [step]  # saved where it stopped, though no periodic checkpoint was due
    assert not (run / "summary.json").exists() and not (run / ".lock").exists()
    assert took < 10, took
    again = _run(_cmd(run))
    assert again.returncode == 0, again.stderr
    assert f"resuming from step {step}" in again.stderr
    _same_run(run, reference)


def test_a_stop_between_log_lines_keeps_the_open_window_of_train_losses(tmp_path, monkeypatch):
    """Stopped between two log lines, the resumed run's next line still averages all its steps.

    In this process (8 fake devices, which round differently from the CLI's one) against
    an uninterrupted run in this process."""
    from dlrm_jax import train as train_lib
    from dlrm_jax.run import preemption
    cfg = load_config("tiny", ["train.examples=2**15", "mesh.data=1"])
    reference = tmp_path / "ref"
    train_lib.train(cfg, reference, progress=False, verbose=False)
    logged = [e["step"] for e in _events(reference)]
    stop = logged[3] + 2  # two steps into a window of six

    class StopAt(preemption.Watch):
        def requested(self, step):
            self.signal_name = "SIGTERM" if step == stop else None
            return step == stop
    monkeypatch.setattr(preemption, "watch", lambda multi_process=False: StopAt())
    run = tmp_path / "run"
    with pytest.raises(preemption.Preempted, match=f"at step {stop} "):
        train_lib.train(cfg, run, progress=False, verbose=False)
    assert _checkpoints(run) == [stop]
    monkeypatch.undo()
    train_lib.train(cfg, run, progress=False, verbose=False)
    _same_run(run, reference)


def test_ctrl_c_to_a_sweep_stops_its_trainer_and_the_rerun_resumes_the_point(tmp_path):
    # 512 steps: long enough that the signal, passed on by the sweep's 0.2 s poll, reaches
    # the trainer before it ends on an idle machine (at 128 steps it sometimes finished).
    run = [*RUN, "--set", "train.examples=2**17"]
    reference = tmp_path / "ref"
    ref = _run([sys.executable, "-m", "dlrm_jax", "train", *run, "--set", "seed=0", "--out", str(reference),
                "--no-progress"])
    assert ref.returncode == 0, ref.stderr
    sweep_file = tmp_path / "two.py"
    sweep_file.write_text('def points(base):\n    return [{"seed": 0}, {"seed": 1}]\n')
    out = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "dlrm_jax", "sweep", str(sweep_file), *run, "--out", str(out)]
    proc, _, _, err = _signal_after_first_log(cmd, signal.SIGINT, out / "seed-0")
    assert proc.returncode == PREEMPTED_EXIT, err
    assert "preempted (SIGINT): 2 point(s) unfinished (seed-0, seed-1)" in err, err
    assert "Traceback" not in err
    ps = _run(["ps", "-eo", "args"]).stdout
    assert str(out / "seed-0") not in ps  # no trainer left behind
    log = (out / "seed-0" / "train.log").read_text()
    step = int(log.split(" at step ")[1].split()[0])
    assert _checkpoints(out / "seed-0") == [step]
    assert not (out / "seed-1").exists()
    rows = (out / "results.csv").read_text().splitlines()
    assert len(rows) == 1  # neither point is a result, and neither is "failed"

    again = _run(cmd)
    assert again.returncode == 0, again.stderr
    assert f"resuming from step {step}" in (out / "seed-0" / "train.log").read_text()
    _same_run(out / "seed-0", reference)


def _launch_local():
    spec = importlib.util.spec_from_file_location("launch_local", ROOT / "scripts" / "launch_local.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# 64 steps of 256 on a 1x8 mesh over 2 processes x 4 devices, the tables sharded by row.
TWO = ["train.examples=2**14", "eval.examples=2048", "synthetic.cardinalities=" + ",".join(["39", "400"] * 13),
       "embedding.sharding=row", "mesh.data=1", "mesh.model=8"]


def test_two_processes_sigtermed_save_the_same_step_and_the_rerun_is_identical(tmp_path, monkeypatch):
    monkeypatch.setenv("DLRM_SCALING_COMPILE_CACHE", str(tmp_path / "cache"))
    args = ["train", "--preset", "tiny", *[x for a in TWO for x in ("--set", a)], "--no-progress"]
    mod = _launch_local()
    ref = tmp_path / "ref"
    assert mod.launch([*args, "--out", str(ref)], timeout=400, out=open(os.devnull, "w")) == 0

    run = tmp_path / "run"
    cmd = [sys.executable, str(ROOT / "scripts" / "launch_local.py"), "--", *args, "--out", str(run)]
    proc, _, out, _ = _signal_after_first_log(cmd, signal.SIGTERM, run)
    assert proc.returncode == PREEMPTED_EXIT, out[-3000:]
    steps = _checkpoints(run)
    assert len(steps) == 1 and 0 < steps[0] < 64, out[-3000:]
    for i in (0, 1):  # each process stopped at the step they agreed on
        assert f"[{i}] dlrm-scaling train: preempted (SIGTERM) at step {steps[0]} " in out, out[-3000:]
    meta = run / "checkpoints" / str(steps[0]) / "default"
    assert (meta / "ocdbt.process_0").is_dir() and (meta / "ocdbt.process_1").is_dir()  # both wrote it

    code = mod.launch([*args, "--out", str(run)], timeout=400, out=open(os.devnull, "w"))
    assert code == 0
    _same_run(run, ref)


def test_two_trainers_on_one_new_directory_the_loser_writes_nothing(tmp_path):
    run = tmp_path / "run"
    procs = [subprocess.Popen(_cmd(run, "--set", f"seed={seed}"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for seed in (0, 1)]
    results = [(p.wait(timeout=300), p.communicate()[1]) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    winner = next(seed for seed, (code, _) in zip((0, 1), results) if code == 0)
    loser_err = next(err for code, err in results if code == 2)
    assert len(_lines(loser_err)) == 1 and "is being trained by another process (lock " in loser_err, loser_err
    assert json.loads((run / "config.json").read_text())["seed"] == winner
    assert json.loads((run / "summary.json").read_text())["seed"] == winner
    again = _run(_cmd(run, "--set", f"seed={winner}"))  # the winner's own rerun: done, not refused
    assert again.returncode == 0 and "already done" in again.stderr, again.stderr


def test_a_run_that_finishes_while_another_waits_for_the_lock_keeps_its_summary(tmp_path, reference, monkeypatch):
    """The second trainer read the directory before the first finished; it must read it again once locked."""
    import shutil

    from dlrm_jax import train as train_lib
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    summary = (run / "summary.json").read_bytes()
    (run / "summary.json").rename(tmp_path / "held")  # the first trainer has not written it yet...
    real_lock = rundir.lock

    def finish_then_lock(run_dir):
        (tmp_path / "held").rename(run_dir / "summary.json")  # ...and finishes just before the lock
        real_lock(run_dir)
    monkeypatch.setattr(rundir, "lock", finish_then_lock)
    cfg = load_config("tiny", ["train.examples=2**15", "mesh.data=1"])
    got = train_lib.train(cfg, run, progress=False, verbose=False)
    assert got["status"] == "done" and (run / "summary.json").read_bytes() == summary
    assert _events(run) == _events(reference)


def test_the_lock_is_on_the_file_that_is_there(tmp_path, monkeypatch):
    """A lock taken on a .lock file that its previous holder removed meanwhile keeps nobody out."""
    run = tmp_path / "run"
    run.mkdir()
    real_flock, calls = fcntl.flock, []

    def flock_after_the_holder_left(f, op):
        if not calls:  # the previous holder unlinks the file between our open and our flock
            os.unlink(run / ".lock")
        calls.append(op)
        return real_flock(f, op)
    monkeypatch.setattr(fcntl, "flock", flock_after_the_holder_left)
    rundir.lock(run)
    monkeypatch.setattr(fcntl, "flock", real_flock)
    try:
        with open(run / ".lock", "a") as other:  # a second trainer now
            with pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        rundir.unlock(run)


def _with_file_size_limit(kib: int, cmd: list[str]) -> list[str]:
    """`cmd` under `ulimit -f` (KiB): a write past that size fails with EFBIG, as on a full disk."""
    return ["bash", "-c", f'ulimit -f {kib} && exec "$@"', "bash", *cmd]


@pytest.mark.parametrize("where, kib, extra", [
    # config.json is 1.7 kB and metrics.jsonl would reach 2.4 kB: a metrics line meets the limit.
    ("metrics.jsonl", 2, ()),
    # checkpoints of this run hold files of ~180 kB; metrics.jsonl stays far below 100 kB.
    ("checkpoints/", 100, ("--set", "checkpoint.every_examples=8192")),
])
def test_a_full_disk_is_one_line_and_the_rerun_ends_as_the_uninterrupted_run(tmp_path, reference, where,
                                                                              kib, extra):
    if extra:  # periodic checkpoints add log lines: their own uninterrupted run
        reference = tmp_path / "ref"
        assert _run(_cmd(reference, *extra)).returncode == 0
    run = tmp_path / "run"
    # The compilation cache is warm from the reference run: nothing new is written to it.
    full = _run(_with_file_size_limit(kib, _cmd(run, *extra)))
    assert full.returncode == 2, full.stderr[-3000:]
    said = _lines(full.stderr)
    assert len(said) == 1, full.stderr[-3000:]
    assert said[0].startswith(f"dlrm-scaling train: error: cannot write {run / where}")
    assert said[0].endswith("File too large; free space and rerun to resume"), said
    text = (run / "metrics.jsonl").read_text()
    assert text.endswith("\n") and all(json.loads(x) for x in text.splitlines())  # whole lines only
    assert not (run / "summary.json").exists()
    again = _run(_cmd(run, *extra))
    assert again.returncode == 0, again.stderr
    _same_run(run, reference)


def test_a_metrics_line_is_written_whole_or_not_at_all(tmp_path):
    path = tmp_path / "metrics.jsonl"
    code = (f"from dlrm_jax.run.rundir import MetricsLog\n"
            f"log = MetricsLog({str(path)!r})\n"
            f"for i in range(100):\n"
            f"    log.write({{'examples_seen': i, 'pad': 'x' * 50}})\n")
    done = _run(_with_file_size_limit(1, [sys.executable, "-c", code]), cwd=ROOT)
    assert done.returncode == 1 and "File too large" in done.stderr
    lines = path.read_text().splitlines(keepends=True)
    assert 5 < len(lines) < 100 and all(x.endswith("\n") for x in lines)
    assert [json.loads(x)["examples_seen"] for x in lines] == list(range(len(lines)))


def test_a_damaged_metrics_line_is_reported_and_the_events_after_it_are_kept(tmp_path):
    log = rundir.MetricsLog(tmp_path / "metrics.jsonl")
    for i in range(1, 8):
        log.write({"step": i, "examples_seen": 256 * i, "train_loss": 0.5})
    lines = log.path.read_text().splitlines()
    lines[2] = lines[2][:20] + "\x00garbage"
    log.path.write_text("\n".join(lines) + "\n")
    said = []
    log.truncate_after(256 * 6, log=said.append)
    assert [e["step"] for e in log.read_lines()] == [1, 2, 4, 5, 6]
    assert len(said) == 1 and said[0].startswith(f"{log.path}:3: damaged metrics line")


def test_a_corrupt_summary_is_one_line_for_train_and_for_sweep(tmp_path):
    run = tmp_path / "sweep" / "seed-0"
    run.mkdir(parents=True)
    rundir.write_config(run, load_config("tiny", ["train.examples=2**15", "seed=0"]))
    (run / "summary.json").write_text('{"status": "do')
    bad = _run(_cmd(run, "--set", "seed=0"))
    assert bad.returncode == 2 and _lines(bad.stderr) == [
        f"dlrm-scaling train: error: {run / 'summary.json'}: unreadable summary (Unterminated string starting "
        f"at: line 1 column 12 (char 11)); delete it to retrain the run from its last checkpoint"], bad.stderr
    sweep_file = tmp_path / "one.py"
    sweep_file.write_text('def points(base):\n    return [{"seed": 0}]\n')
    swept = _run([sys.executable, "-m", "dlrm_jax", "sweep", str(sweep_file), *RUN, "--out", str(tmp_path / "sweep")])
    assert swept.returncode == 2 and len(_lines(swept.stderr)) == 1 and "unreadable summary" in swept.stderr
