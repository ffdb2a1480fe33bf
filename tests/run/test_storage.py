"""The storage layer, the gs:// lease and metrics.jsonl on a bucket, against fake-gcs-server.

Every behaviour is checked on a local directory and on a gs:// bucket (the
`root` fixture); tests that only make sense on one say so.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from dlrm_jax.errors import UserError
from dlrm_jax.run import lease as lease_lib, rundir, storage

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["local", "gs"])
def root(request, tmp_path):
    """A run-dir-like root: a local temp dir, or a prefix in a fresh emulator bucket."""
    if request.param == "local":
        return tmp_path / "run"
    return request.getfixturevalue("gcs_bucket") + "/run"


def _join(root, *names) -> str | Path:
    return root.joinpath(*names) if isinstance(root, Path) else "/".join([root, *names])


def _subprocess_env(extra: dict | None = None) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.update(extra or {})
    return env


# --------------------------------------------------------------------------- paths

def test_path_types_and_the_pathlib_trap(gcs_bucket):
    from etils import epath
    assert type(storage.path("/tmp/x")) is type(Path("/tmp/x"))
    remote = storage.path(gcs_bucket + "/r")
    assert isinstance(remote, epath.Path) and os.fspath(remote) == gcs_bucket + "/r"
    assert storage.is_remote(remote / "config.json") and not storage.is_remote(Path("gs_local"))
    assert storage.absolute(remote) is remote  # pathlib's absolute() would give <cwd>/gs:/...
    assert storage.absolute(Path("rel")) == Path.cwd() / "rel"
    with pytest.raises(ValueError, match="one slash lost"):
        storage.path(Path(gcs_bucket + "/r"))
    with pytest.raises(UserError, match="no bucket name"):
        storage.path("gs:///r")


def test_round_trips(root):
    storage.makedirs(root)
    cfg, blob, nested = _join(root, "config.json"), _join(root, "data.bin"), _join(root, "checkpoints", "1", "x")
    storage.write_atomic(cfg, '{"a": 1}\n')
    storage.write_atomic(blob, bytes(range(256)) * 4)
    storage.write_atomic(nested, b"deep")
    assert storage.read_text(cfg) == '{"a": 1}\n'
    assert storage.read_bytes(blob) == bytes(range(256)) * 4
    assert storage.exists(cfg) and storage.exists(_join(root, "checkpoints"))
    assert storage.is_dir(root) and storage.is_dir(_join(root, "checkpoints")) and not storage.is_dir(cfg)
    assert storage.listdir(root) == ["checkpoints", "config.json", "data.bin"]  # no temp names left
    assert storage.glob(root, "*.json") == ["config.json"]
    with pytest.raises(ValueError, match="one directory"):
        storage.glob(root, "**/*.json")  # gcsfs has no ** globs: refused on both
    storage.write_atomic(cfg, "second\n")  # a replace, not an append
    assert storage.read_text(cfg) == "second\n"
    storage.remove(blob)
    storage.remove(blob)  # missing_ok
    with pytest.raises(FileNotFoundError):
        storage.remove(blob, missing_ok=False)
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(blob)
    storage.rmtree(_join(root, "checkpoints"))
    storage.rmtree(_join(root, "checkpoints"))  # nothing there: no error
    assert storage.listdir(root) == ["config.json"]
    assert storage.listdir(_join(root, "nothing")) == []
    assert not storage.exists(_join(root, "nothing"))


def test_writes_are_atomic_for_readers(root):
    """A reader racing a writer sees one whole version or the other, never a mix or a prefix."""
    target = _join(root, "summary.json")
    versions = [bytes([65 + i]) * 300_000 for i in range(2)]
    storage.write_atomic(target, versions[0])
    seen, stop = [], threading.Event()

    def reader():
        while not stop.is_set():
            seen.append(storage.read_bytes(target))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(6):
            storage.write_atomic(target, versions[i % 2])
    finally:
        stop.set()
        thread.join()
    assert seen and all(data in versions for data in seen)


def test_a_failed_local_write_keeps_the_old_file(tmp_path):
    """Local fast path: temp+rename as before; the temp file is gone after a failure."""
    target = tmp_path / "summary.json"
    storage.write_atomic(target, "old\n")
    with pytest.raises(TypeError):
        storage.write_atomic(target, 12345)  # neither str nor bytes: fails mid-write
    assert target.read_text() == "old\n" and sorted(os.listdir(tmp_path)) == ["summary.json"]


def test_create_only_has_one_winner_of_eight(root):
    """config.json's write on a bucket: of racing creators exactly one writes, the file is its."""
    storage.makedirs(root)
    target = _join(root, "config.json")
    barrier, won = threading.Barrier(8), []

    def create(i):
        barrier.wait()
        if storage.create_only(target, f"writer {i}\n"):
            won.append(i)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and storage.read_text(target) == f"writer {won[0]}\n"
    assert not storage.create_only(target, "late\n") and storage.listdir(root) == ["config.json"]


def test_a_stale_rebuild_on_a_bucket_is_rebuilt_not_written(gcs_bucket):
    """results.csv of two shards: A lists the run dirs, B adds a row and rewrites the file,
    then A writes.  A's write is refused (412) and A rebuilds, so B's row survives."""
    sources, target = f"{gcs_bucket}/s", f"{gcs_bucket}/s/results.csv"
    storage.write_atomic(f"{sources}/a.row", "a\n")
    storage.write_atomic(target, "a\n")
    calls = []

    def rows() -> str:
        return "".join(storage.read_text(f"{sources}/{n}") for n in storage.glob(sources, "*.row"))

    def build_a() -> str:
        seen = rows()  # before B's row
        calls.append(seen)
        if len(calls) == 1:  # shard B finishes its point and rewrites meanwhile
            storage.write_atomic(f"{sources}/b.row", "b\n")
            storage.rewrite(target, rows)
        return seen

    storage.rewrite(target, build_a)
    assert calls == ["a\n", "a\nb\n"] and storage.read_text(target) == "a\nb\n"


# --------------------------------------------------------------------------- bad buckets

def test_a_missing_bucket_is_one_line_in_seconds(gcs_server):
    start = time.monotonic()
    with pytest.raises(UserError, match=r"gs://no-such-bucket-x: no such bucket") as info:
        storage.path("gs://no-such-bucket-x/r")
    assert time.monotonic() - start < 10 and "\n" not in str(info.value)
    with pytest.raises(UserError, match="no such bucket"):
        storage.write_atomic("gs://no-such-bucket-x/r/config.json", "{}")


def test_no_credentials_and_no_extra_are_one_line(gcs_server, tmp_path):
    """Outside the emulator with no credentials, and without the gcs extra: UserError lines."""
    script = textwrap.dedent("""
        import sys
        from dlrm_jax.errors import UserError
        if sys.argv[1] == "no-extra":
            sys.modules["gcsfs"] = None  # as if the gcs extra were not installed
        from dlrm_jax.run import storage
        try:
            storage.path("gs://some-bucket/r")
        except UserError as err:
            print(err)
            sys.exit(2)
    """)
    env = {k: v for k, v in _subprocess_env().items() if k != "STORAGE_EMULATOR_HOST"}
    env.update(GOOGLE_APPLICATION_CREDENTIALS=str(tmp_path / "none.json"), HOME=str(tmp_path),
               CLOUDSDK_CONFIG=str(tmp_path), GCE_METADATA_HOST="127.0.0.1:9", NO_GCE_CHECK="true")
    for case, expected in [("no-creds", "no Google Cloud credentials"),
                           ("no-extra", "gs:// paths need the gcs extra: pip install -e '.[gcs]'")]:
        start = time.monotonic()
        out = subprocess.run([sys.executable, "-c", script, case], env=env, capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 2, (case, out.stdout, out.stderr[-2000:])
        assert expected in out.stdout and len(out.stdout.strip().splitlines()) == 1
        assert time.monotonic() - start < 30


# --------------------------------------------------------------------------- the lease

def _lock_path(bucket: str) -> str:
    return f"{bucket}/run/.lock"


def test_a_second_taker_fails_naming_the_lock_while_the_first_lives(gcs_bucket):
    first = lease_lib.Lease(_lock_path(gcs_bucket), ttl_s=2.0)
    first.acquire("held")
    generation = first.generation
    try:
        time.sleep(2.5)  # past the first ttl: only the heartbeat keeps it alive
        second = lease_lib.Lease(_lock_path(gcs_bucket), ttl_s=2.0, renew=False)
        with pytest.raises(UserError, match=r"held: held by .* lease expires in \d+ s"):
            second.acquire("held")
        assert not first.lost and first.generation != generation  # renewed meanwhile
        first.check()
    finally:
        first.release()
    assert not storage.exists(_lock_path(gcs_bucket))  # released: the object is gone
    again = lease_lib.Lease(_lock_path(gcs_bucket), ttl_s=5.0, renew=False)
    again.acquire("held")  # and the run is free at once
    again.release()


@pytest.mark.parametrize("trial", range(3))
def test_four_contenders_for_an_expired_lease_one_wins(gcs_bucket, trial):
    lock = _lock_path(gcs_bucket)
    dead = lease_lib.Lease(lock, ttl_s=0.5, renew=False)
    dead.acquire("held")  # its owner "dies": no heartbeat
    time.sleep(0.7)
    held = f"{gcs_bucket}/run is being trained (lock {lock})"
    contenders = [lease_lib.Lease(lock, ttl_s=30.0, renew=False) for _ in range(4)]
    barrier, results = threading.Barrier(4), [None] * 4

    def take(i):
        barrier.wait()
        try:
            contenders[i].acquire(held)
            results[i] = "won"
        except UserError as err:
            results[i] = str(err)

    threads = [threading.Thread(target=take, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for i, r in enumerate(results) if r == "won"]
    assert len(winners) == 1, results
    assert all(r.startswith(held) and "lease expires in" in r for r in results if r != "won")
    winner = contenders[winners[0]]
    assert json.loads(storage.read_bytes(lock))["owner"] == winner.owner
    # The dead owner comes back and lets go: the winner's lease is not its to delete.
    dead.release()
    assert json.loads(storage.read_bytes(lock))["owner"] == winner.owner
    winner.release()


def test_of_four_takeovers_of_one_stale_generation_one_succeeds(gcs_bucket):
    """The compare-and-swap itself, all four having read the same stale lease first."""
    lock = _lock_path(gcs_bucket)
    for _ in range(3):
        dead = lease_lib.Lease(lock, ttl_s=0.1, renew=False)
        dead.acquire("held")
        time.sleep(0.2)
        contenders = [lease_lib.Lease(lock, ttl_s=30.0, renew=False) for _ in range(4)]
        seen = [c.read() for c in contenders]
        assert {s[0] for s in seen} == {dead.generation} and all(s[2] < time.time() for s in seen)
        barrier, won = threading.Barrier(4), []

        def take(c):
            barrier.wait()
            if c.try_take(dead.generation):
                won.append(c)

        threads = [threading.Thread(target=take, args=(c,)) for c in contenders]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(won) == 1
        assert json.loads(storage.read_bytes(lock))["owner"] == won[0].owner
        won[0].release()


def test_a_frozen_owner_loses_its_lease_and_knows(gcs_bucket):
    lock = _lock_path(gcs_bucket)
    owner = lease_lib.Lease(lock, ttl_s=0.8)
    owner.acquire("held")
    owner.check()
    owner._stop.set()  # the process freezes (no heartbeat) past its ttl...
    owner._thread.join()
    time.sleep(1.0)
    with pytest.raises(UserError, match="lost the run lock"):
        owner.check()  # ...and once past its expiry it must not write on
    other = lease_lib.Lease(lock, ttl_s=30.0, renew=False)
    other.acquire("held")  # taken over
    assert not owner.renew() and owner.lost  # its next renewal is refused (412)
    owner.release()
    assert json.loads(storage.read_bytes(lock))["owner"] == other.owner
    other.release()


def test_lock_interface_on_local_and_gs(root):
    """rundir.lock from a second process fails naming the lock; unlock frees the run."""
    held = f"is being trained by another process (lock {_join(root, '.lock')}"
    script = textwrap.dedent("""
        import sys
        from dlrm_jax.errors import UserError
        from dlrm_jax.run import rundir, storage
        try:
            rundir.lock(storage.path(sys.argv[1]))
        except UserError as err:
            print(err)
            sys.exit(2)
        print("locked")
    """)
    run_dir = storage.path(os.fspath(root))
    rundir.lock(run_dir)
    assert ".lock" in storage.listdir(root)  # listed once here: the next listing must not be cached
    try:
        out = subprocess.run([sys.executable, "-c", script, os.fspath(root)], env=_subprocess_env(),
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 2 and held in out.stdout, (out.stdout, out.stderr[-2000:])
        rundir.check_lock(run_dir)
    finally:
        rundir.unlock(run_dir)
    assert ".lock" not in storage.listdir(root)
    out = subprocess.run([sys.executable, "-c", script, os.fspath(root)], env=_subprocess_env(),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "locked" in out.stdout, out.stderr[-2000:]


# --------------------------------------------------------------------------- metrics.jsonl

_WRITER = textwrap.dedent("""
    import os, signal, sys
    from dlrm_jax.run import rundir, storage
    log = rundir.MetricsLog(storage.path(sys.argv[1]))
    log.FLUSH_EVERY_S = 1e9  # only the explicit flushes (as before each checkpoint)
    log.truncate_after(int(sys.argv[2]))
    for step in range(int(sys.argv[2]) + 1, int(sys.argv[3]) + 1):
        log.write({"step": step, "examples_seen": step, "train_loss": 1.0 / step})
        if step % 4 == 0:
            log.flush()
            print("flushed", step, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # killed before the last lines' flush
""")


def _run_writer(path, start: int, stop: int) -> int:
    out = subprocess.run([sys.executable, "-c", _WRITER, os.fspath(path), str(start), str(stop)],
                         env=_subprocess_env(), capture_output=True, text=True, timeout=120)
    assert out.returncode == -signal.SIGKILL, out.stderr[-2000:]
    flushed = [int(line.split()[1]) for line in out.stdout.splitlines() if line.startswith("flushed")]
    return flushed[-1] if flushed else start


def test_metrics_survive_a_kill_and_resume_reads_every_line_once(root):
    storage.makedirs(root)
    path = _join(root, "metrics.jsonl")
    flushed = _run_writer(path, 0, 10)  # flushes at 4 and 8; 9 and 10 die unflushed on gs://
    steps = [e["step"] for e in rundir.MetricsLog(path).read_lines()]
    # Locally every write is durable at once; on a bucket every flushed line is there.
    assert steps == (list(range(1, 11)) if isinstance(root, Path) else list(range(1, flushed + 1)))
    _run_writer(path, 8, 14)  # resumed from a checkpoint at 8: lines past it are dropped, rewritten
    log = rundir.MetricsLog(path)
    steps = [e["step"] for e in log.read_lines()]
    assert steps == (list(range(1, 15)) if isinstance(root, Path) else list(range(1, 13)))
    assert not log.damaged


def test_metrics_on_a_bucket_are_never_appended(gcs_bucket):
    """gcsfs's append mode overwrites: the log rewrites the whole object, earlier lines kept."""
    path = gcs_bucket + "/run/metrics.jsonl"
    storage.write_atomic(path, '{"step": 1, "examples_seen": 1}\n{"damaged\n')
    log = rundir.MetricsLog(storage.path(path))
    log.write({"step": 2, "examples_seen": 2})
    assert storage.read_text(path).count("\n") == 2  # buffered, not written yet
    log.flush()
    log.flush()  # nothing new: no write
    reread = rundir.MetricsLog(storage.path(path))
    assert [e["step"] for e in reread.read_lines()] == [1, 2]
    assert reread.damaged == [f"{path}:2: damaged metrics line (Unterminated string starting at: "
                              f"line 1 column 2 (char 1))"]
    reread.truncate_after(1, log=lambda line: None)
    assert storage.read_text(path) == '{"step": 1, "examples_seen": 1}\n'
