#!/usr/bin/env python3
"""Seconds from SIGTERM to exit of a run preempted mid-way: what a grace period must cover.

    python scripts/preemption_latency.py [--repeats 3]

Starts each case (the tiny and small presets on one process, tiny on two local
processes through scripts/launch_local.py), sends SIGTERM half a second after
its first metrics line, and times until the process has exited (the checkpoint
saved, Orbax closed).  Prints one line per case: the times, the exit codes and
the step each stopped at.
"""
from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAIN = [sys.executable, "-m", "dlrm_jax", "train", "--no-progress"]
CASES = {
    "tiny": TRAIN + ["--preset", "tiny", "--set", "train.examples=2**17"],
    "small": TRAIN + ["--preset", "small"],
    "tiny, 2 processes": [sys.executable, str(ROOT / "scripts" / "launch_local.py"), "--", "train", "--no-progress",
                          "--preset", "tiny", "--set", "train.examples=2**16", "--set", "embedding.sharding=row",
                          "--set", "mesh.data=1", "--set", "mesh.model=8"],
}


def measure(cmd: list[str], run: Path) -> tuple[float, int, str]:
    shutil.rmtree(run, ignore_errors=True)
    proc = subprocess.Popen(cmd + ["--out", str(run)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, cwd=ROOT)
    metrics = run / "metrics.jsonl"
    while not (metrics.exists() and metrics.read_text()):
        if proc.poll() is not None:
            raise SystemExit(f"{cmd}: ended before its first metrics line:\n{proc.stdout.read()}")
        time.sleep(0.01)
    time.sleep(0.5)
    t0 = time.time()
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate()
    took = time.time() - t0
    said = [x for x in out.splitlines() if "preempted" in x]
    step = said[-1].split(" at step ")[1].split()[0] if said else "?"
    return took, proc.returncode, step


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for name, cmd in CASES.items():
            runs = [measure(cmd, Path(tmp) / "run") for _ in range(a.repeats)]
            print(f"{name}: " + ", ".join(f"{t:.2f} s (exit {c}, step {s})" for t, c, s in runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
