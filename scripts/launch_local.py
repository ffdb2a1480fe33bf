#!/usr/bin/env python3
"""Start one `dlrm-scaling` command as several JAX processes on this machine (CPU).

What a multi-host job does, on localhost: every process runs the same command,
joined by `jax.distributed` through a coordinator on 127.0.0.1, each with its
own fake CPU devices, each feeding its slice of the global batch.  For testing
the multi-host code paths without a pod.

    python scripts/launch_local.py --processes 2 --devices-per-process 4 -- \\
        train --preset tiny --set embedding.sharding=row --set mesh.model=8 --out /tmp/run2p

Output lines are prefixed with the process id; the exit code is the first
non-zero one (the other processes are then stopped).
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time

PREEMPTED_EXIT = 75  # dlrm_jax.run.preemption.PREEMPTED_EXIT (this script runs without the package)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(process_id: int, processes: int, port: int, args: list[str]) -> list[str]:
    return [sys.executable, "-m", "dlrm_jax", *args,
            "--set", "distributed.initialize=true",
            "--set", f"distributed.coordinator=127.0.0.1:{port}",
            "--set", f"distributed.num_processes={processes}",
            "--set", f"distributed.process_id={process_id}"]


class _forward_signals:
    """While open, SIGTERM and SIGINT to this launcher are sent on to `procs` as SIGTERM."""

    def __init__(self, procs):
        self._procs, self._previous = procs, {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        for p in self._procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)

    def close(self):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def launch(args: list[str], processes: int = 2, devices_per_process: int = 4, port: int = 0,
           timeout: float = 600.0, out=sys.stdout) -> int:
    port = port or free_port()
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "host_platform_device_count" not in f]
    env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={devices_per_process}"])
    procs = [subprocess.Popen(command(i, processes, port, args), env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in range(processes)]
    lock = threading.Lock()

    def relay(i, p):
        for line in p.stdout:
            with lock:
                out.write(f"[{i}] {line}")
                out.flush()

    threads = [threading.Thread(target=relay, args=(i, p), daemon=True) for i, p in enumerate(procs)]
    for t in threads:
        t.start()
    deadline, code = time.time() + timeout, 0
    # SIGTERM (a pod's preemption reaches every host) or Ctrl-C: pass SIGTERM to every process;
    # they agree on a step, save it and exit PREEMPTED_EXIT, which is not a failure to stop
    # the others for.
    forward = _forward_signals(procs)
    try:
        while any(p.poll() is None for p in procs):
            failed = [p.returncode for p in procs if p.returncode not in (None, 0, PREEMPTED_EXIT)]
            if failed or time.time() > deadline:
                code = failed[0] if failed else 124
                break
            time.sleep(0.2)
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        for t in threads:
            t.join(timeout=5)
        forward.close()
    return code or next((p.returncode for p in procs if p.returncode), 0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--devices-per-process", type=int, default=4)
    p.add_argument("--port", type=int, default=0, help="coordinator port on 127.0.0.1 (0: a free one)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds before all processes are stopped")
    p.add_argument("args", nargs=argparse.REMAINDER, help="-- then the dlrm-scaling arguments")
    a = p.parse_args(argv)
    args = a.args[1:] if a.args[:1] == ["--"] else a.args
    if not args:
        p.error("give the dlrm-scaling arguments after --")
    return launch(args, a.processes, a.devices_per_process, a.port, a.timeout)


if __name__ == "__main__":
    sys.exit(main())
