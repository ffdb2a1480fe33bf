#!/usr/bin/env python3
"""Hardware ceilings of the first accelerator, and how close a bench result gets to them.

    python scripts/ceilings.py --out ceilings.json [--bench bench_bf16.json ...]

Measures a large bf16 matmul (TFLOP/s) and a large elementwise copy (GB/s,
bytes read + written), then for each `dlrm-scaling bench --json` result gives
its roofline fraction: the time the step would take at the ceilings (its model
FLOPs at the matmul rate, or its embedding row traffic at the copy rate,
whichever is longer) over the time it took.  Embedding traffic counts only the
touched rows and their optimizer state (accounting.py), so the memory side is
a lower bound and the fraction an upper bound.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp


def _median_seconds(f, *args, reps: int) -> float:
    jax.block_until_ready(f(*args))  # compile and warm up
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        jax.block_until_ready(f(*args))
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def matmul_tflops(n: int = 8192, reps: int = 20, dtype=jnp.bfloat16) -> float:
    ka, kb = jax.random.split(jax.random.PRNGKey(0))
    a = jax.random.normal(ka, (n, n), dtype)
    b = jax.random.normal(kb, (n, n), dtype)
    f = jax.jit(lambda a, b: a @ b)
    return 2 * n ** 3 / _median_seconds(f, a, b, reps=reps) / 1e12


def copy_gbps(gib: float = 4.0, reps: int = 20) -> float:
    n = int(gib * 2 ** 30 / 4)
    x = jnp.ones((n,), jnp.float32)
    f = jax.jit(lambda x: x + 1.0)  # one read and one write of every element
    return 2 * n * 4 / _median_seconds(f, x, reps=reps) / 1e9


def roofline(bench: dict, tflops: float, gbps: float) -> dict:
    rate = bench["examples_per_s"]
    flops = bench["flops_per_example"]
    traffic = bench.get("embedding_bytes_per_example")
    t_compute = flops / (tflops * 1e12)
    t_memory = traffic / (gbps * 1e9) if traffic else 0.0
    return {
        "examples_per_s": rate,
        "achieved_tflops": rate * flops / 1e12,
        "compute_fraction": rate * t_compute,
        "embedding_gbps": rate * traffic / 1e9 if traffic else None,
        "memory_fraction": rate * t_memory if traffic else None,
        "bound": "compute" if t_compute >= t_memory else "memory",
        "roofline_fraction": rate * max(t_compute, t_memory),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--bench", nargs="*", default=[], help="`dlrm-scaling bench --json` outputs")
    p.add_argument("--matmul-n", type=int, default=8192)
    p.add_argument("--copy-gib", type=float, default=4.0)
    a = p.parse_args(argv)
    dev = jax.devices()[0]
    out = {"device_kind": dev.device_kind, "platform": dev.platform, "jax_version": jax.__version__,
           "matmul_bf16_tflops": matmul_tflops(a.matmul_n), "copy_gbps": copy_gbps(a.copy_gib)}
    out["roofline"] = {}
    for path in a.bench:
        with open(path) as f:
            out["roofline"][path] = roofline(json.load(f), out["matmul_bf16_tflops"], out["copy_gbps"])
    with open(a.out, "w") as f:
        json.dump(out, f, indent=2)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
