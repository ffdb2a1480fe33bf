"""keep_freed_memory(): a freed large block is reused, not unmapped and faulted in again."""
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = str(Path(__file__).resolve().parents[2])

CHILD = textwrap.dedent("""
    import ctypes, ctypes.util, resource
    from dlrm_jax.parallel import host_memory
    applied = host_memory.keep_freed_memory()
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
    libc.free.argtypes = (ctypes.c_void_p,)
    def touch():  # 64 MiB, as XLA's runtime allocates: malloc, write, free
        p = libc.malloc(64 << 20); ctypes.memset(p, 1, 64 << 20); libc.free(p)
    touch()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        touch()
    print(applied, host_memory.active(), (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 5)
""")


def _child(env_value):
    env = {"PATH": "/usr/bin:/bin", "DLRM_SCALING_MALLOC": env_value}
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=env,
                         cwd=ROOT, check=True)
    applied, active, faults = out.stdout.split()
    return applied == "True", active == "True", int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_freed_memory_is_reused_and_opt_out_restores_the_default():
    applied, active, faults = _child("")
    if not applied:
        pytest.skip("libc without mallopt (not glibc)")
    assert active
    # 64 MiB is 16,384 pages: with the default every allocation faults them all in again.
    assert faults < 1000, faults
    applied, active, faults_default = _child("default")
    assert not applied and not active
    assert faults_default > 10000, faults_default
