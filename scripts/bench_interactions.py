"""Train-step speed of each interaction at one shape, in one process (docs/BENCHMARKS.md).

    python scripts/bench_interactions.py --preset criteo-kaggle --batch 2048 \
        --set model.table_rows=20000 [--interactions dot,dcn,wukong]

Runs `dlrm_jax.bench.bench` for each interaction in turn (same process, same
batches' shape), then prints examples/s, model FLOPs per example and the model
FLOP rate (analytic training FLOPs, dlrm_jax/model/accounting.py) of each.
"""
from __future__ import annotations

import argparse

from dlrm_jax.bench import bench
from dlrm_jax.config import load_config


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="criteo-kaggle")
    p.add_argument("--batch", type=int, default=2048)
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--interactions", default="dot,dcn,wukong")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    print("| interaction | examples/s | params dense | training FLOPs / example | model GFLOP/s |")
    print("|---|---:|---:|---:|---:|")
    for kind in a.interactions.split(","):
        cfg = load_config(a.preset, [*a.set, f"model.interaction={kind}"])
        r = bench(cfg, batch_size=a.batch, steps=a.steps, repeats=a.repeats)
        print(f"| {kind} | {r['examples_per_s']:,.0f} | {r['params_dense']:,} | {r['flops_per_example']:,} | "
              f"{r['achieved_tflops'] * 1e3:.1f} |", flush=True)


if __name__ == "__main__":
    main()
