"""Test set-up: 8 fake CPU devices for sharding tests, shared helpers.

XLA reads the device count when JAX initialises its CPU backend, so the flag is
set here, before any test module imports jax, and the backend is started now.
"""
import hashlib
import os
import tempfile
from pathlib import Path

# XLA CPU runs the fake devices' collectives through a rendezvous and aborts the
# process (SIGABRT, "Termination timeout ... exceeded") when a device thread has
# not arrived in time.  On the loaded 2-core VM an 8-device train step in a test
# worker was seen both to stall past that and, rarely, to never complete (XLA's
# side: a device thread that never arrives).  So: a stall waits up to 3 minutes,
# and only tests about sharding run on 8 devices (the train tests set
# mesh.data=1; CLI subprocesses see one device, as on a real CPU machine).
_TIMEOUTS = ("--xla_cpu_collective_call_warn_stuck_timeout_seconds=60 "
             "--xla_cpu_collective_call_terminate_timeout_seconds=180")
_FAKE_DEVICES = "--xla_force_host_platform_device_count=8"
_user_flags = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split()
                       if f not in _TIMEOUTS.split() and f != _FAKE_DEVICES)
os.environ["XLA_FLAGS"] = f"{_user_flags} {_FAKE_DEVICES} {_TIMEOUTS}".strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

assert jax.device_count() == 8, jax.devices()  # starts the backend: it has read XLA_FLAGS
os.environ["XLA_FLAGS"] = f"{_user_flags} {_TIMEOUTS}".strip()  # what subprocesses inherit

import pytest  # noqa: E402

from dlrm_jax.compile.cache import ENV, enable_compilation_cache  # noqa: E402

# The gs:// emulator's fixtures (tests/run/gcs_server.py), for every package's bucket tests.
from tests.run.gcs_server import gcs_bucket, gcs_process, gcs_server  # noqa: E402, F401


def pytest_configure(config):
    """A compilation cache per test worker, shared with the CLI subprocesses it starts.

    Tiny runs of the same shapes then compile once; per worker, so no two test
    processes ever write one cache entry at the same time.
    """
    worker = getattr(config, "workerinput", {}).get("workerid")
    # Per checkout too: two clones tested at once on one machine must not share entries.
    checkout = hashlib.sha1(str(Path(__file__).resolve().parent).encode()).hexdigest()[:8]
    path = os.path.join(tempfile.gettempdir(),
                        f"dlrm-scaling-test-cache-{os.getuid()}-{checkout}-{worker or 'main'}")
    if worker:  # workers inherit the controller's setting; each gets its own
        os.environ[ENV] = path
    else:
        os.environ.setdefault(ENV, path)
    enable_compilation_cache()

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the repo; tests that need it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent")
    return SHARED_DATA


def pytest_collection_modifyitems(config, items):
    """Tests marked `slow` (the trained planted studies, minutes each) run only when asked for:
    `-m slow`, or DLRM_SCALING_SLOW=1; the README's test command leaves them out."""
    if config.getoption("-m") or os.environ.get("DLRM_SCALING_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: run with -m slow or DLRM_SCALING_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
