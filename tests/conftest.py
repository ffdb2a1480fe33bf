"""Test set-up: 8 fake CPU devices for sharding tests, shared helpers.

XLA reads the device count when JAX initialises its CPU backend, so the flag is
set here, before any test module imports jax.
"""
import os
import tempfile
from pathlib import Path

# The 8 fake devices' collectives meet in a rendezvous that XLA aborts the whole
# process on (SIGABRT, "Termination timeout ... exceeded") when one device thread
# arrives late.  On a loaded 2-core machine a thread can be starved that long: it
# crashed a test worker while the VM ran other jobs (reproduced with the timeout
# at 2 s).  Tests wait up to 10 minutes instead; a real deadlock still ends.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
                           " --xla_cpu_collective_call_warn_stuck_timeout_seconds=120"
                           " --xla_cpu_collective_call_terminate_timeout_seconds=600").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402

from dlrm_jax.compile_cache import ENV, enable_compilation_cache  # noqa: E402


def pytest_configure(config):
    """A compilation cache per test worker, shared with the CLI subprocesses it starts.

    Tiny runs of the same shapes then compile once; per worker, so no two test
    processes ever write one cache entry at the same time.
    """
    worker = getattr(config, "workerinput", {}).get("workerid")
    path = os.path.join(tempfile.gettempdir(), f"dlrm-scaling-test-cache-{os.getuid()}-{worker or 'main'}")
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
