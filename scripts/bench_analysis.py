"""Benchmark the analysis: how long fits and bootstraps take on this machine.

    .venv/bin/python scripts/bench_analysis.py [--bootstrap 200] [--repeats 3] [--json]

1. One fit plus a bootstrap of a 10-point law y = 5 x**-0.3 + 0.5 (0.1% noise, 3 decades):
   the size of one scheme in a sweep. The target is seconds, not minutes.
2. The two-term fit plus bootstrap on the 240 Chinchilla points Epoch AI extracted
   (../shared/data, skipped when absent), printing the parameters with intervals.
Wall-clock and CPU seconds are both printed: on a shared machine they differ.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from analysis import fit_additive_power_law, fit_power_law

CHINCHILLA = Path(__file__).resolve().parents[2] / "shared" / "data" / "chinchilla_epoch_svg_extracted.csv"


def timed(fn, repeats: int):
    """Median wall and CPU seconds over `repeats` calls, and the last result."""
    walls, cpus, out = [], [], None
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return float(np.median(walls)), float(np.median(cpus)), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="one JSON object per benchmark")
    args = ap.parse_args()
    results = []

    x = np.logspace(3, 6, 10)
    y = (5.0 * x ** -0.3 + 0.5) * (1 + 1e-3 * np.random.default_rng(0).standard_normal(10))
    fit_power_law(x, y, bootstrap=2)                              # imports, caches
    wall, cpu, f = timed(lambda: fit_power_law(x, y, bootstrap=args.bootstrap), args.repeats)
    results.append({"name": f"power law, 10 points, fit + {args.bootstrap} bootstrap", "wall_s": wall,
                    "cpu_s": cpu, "params": f.params, "ci": f.ci})

    if CHINCHILLA.exists():
        import pandas as pd
        df = pd.read_csv(CHINCHILLA)
        df = df.drop(df["loss"].nlargest(5).index)                # as Epoch AI did
        n = df["Model Size"].to_numpy(float)
        d = df["Training FLOP"].to_numpy(float) / (6 * n)
        wall, cpu, g = timed(lambda: fit_additive_power_law(n, d, df["loss"].to_numpy(float),
                                                            bootstrap=args.bootstrap), 1)
        results.append({"name": f"Chinchilla two-term law, {len(n)} points, fit + {args.bootstrap} bootstrap",
                        "wall_s": wall, "cpu_s": cpu, "params": g.params, "ci": g.ci,
                        "grad_norm": g.convergence.grad_norm, "share_reached": g.convergence.share_reached})

    for r in results:
        if args.json:
            print(json.dumps(r))
            continue
        print(f"{r['name']}: {r['wall_s']:.2f} s wall, {r['cpu_s']:.2f} s CPU")
        for k, v in r["params"].items():
            lo, hi = r["ci"][k]
            print(f"    {k:>6} = {v:.5g}  [{lo:.5g}, {hi:.5g}]")


if __name__ == "__main__":
    main()
