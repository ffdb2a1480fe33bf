#!/usr/bin/env python
"""Criteo data preparation speed, side by side with pandas in the same process.

    python scripts/bench_criteo.py [--rows 1000000] [--repeats 2] [--json]

Generates a Criteo-format file (plain and gzipped; Criteo-like value lengths,
~220 bytes a line), then times, interleaved so machine load hits all alike:
  * pandas.read_csv(sep="\\t", header=None) on the same file: parsing alone,
    with default dtypes and with the categorical columns read as str;
  * criteo-prepare (parse, validate, transform, hash, write shards + manifest,
    `kaggle-dlrm` split, so including its line-counting pass), 1 thread and
    the default thread count, on the plain and the gzipped file (and once with
    `--split none`, which reads a gzipped file only once);
  * the CriteoSource read rate (examples/s) at batch 65,536, in stored order
    and shuffled within windows of 2^16, 2^18 and 2^20 rows (2^20 > the
    857,143 training rows of the 1M-row file: the whole split at once).
Best of `--repeats` per measurement (the machine may be shared).
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd

from dlrm_jax.data.criteo import format as cf
from dlrm_jax.data.criteo.prepare import PrepareOptions, prepare
from dlrm_jax.data.criteo.source import CriteoSource


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--read-examples", type=int, default=1 << 23)
    ap.add_argument("--workdir", default=None, help="default: a temporary directory")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    work = Path(a.workdir or tempfile.mkdtemp(prefix="bench_criteo_"))
    work.mkdir(parents=True, exist_ok=True)
    plain, packed = work / "train.txt", work / "train.txt.gz"
    t = time.perf_counter()
    text = cf.format_rows(cf.synthetic_rows(a.rows, seed=0))
    plain.write_bytes(text)
    packed.write_bytes(gzip.compress(text, compresslevel=6, mtime=0))
    del text
    setup_s = time.perf_counter() - t
    n = a.rows
    cats_as_str = {c: str for c in range(1 + cf.NUM_DENSE, cf.NUM_FIELDS)}

    def prep(src, threads, split="kaggle-dlrm"):
        def run():
            out = work / "out"
            shutil.rmtree(out, ignore_errors=True)
            prepare([src], out, PrepareOptions(split=split), threads=threads)
        return run

    default_threads = max(1, min(4, os.cpu_count() or 1))
    cases = [
        ("pandas.read_csv, default dtypes (plain)",
         lambda: pd.read_csv(plain, sep="\t", header=None)),
        ("pandas.read_csv, C1-C26 as str (plain)",
         lambda: pd.read_csv(plain, sep="\t", header=None, dtype=cats_as_str)),
        ("criteo-prepare, 1 thread (plain)", prep(plain, 1)),
        (f"criteo-prepare, {default_threads} threads (plain)", prep(plain, default_threads)),
        ("pandas.read_csv, default dtypes (gzip)",
         lambda: pd.read_csv(packed, sep="\t", header=None)),
        (f"criteo-prepare, {default_threads} threads (gzip)", prep(packed, default_threads)),
        (f"criteo-prepare, {default_threads} threads (gzip, --split none: no line count)",
         prep(packed, default_threads, "none")),
    ]
    results = {name: [] for name, _ in cases}
    for _ in range(a.repeats):                         # interleaved rounds
        for name, fn in cases:
            results[name].append(best(fn, 1))
    rows = [{"what": name, "seconds": min(ts), "rows_per_s": n / min(ts)}
            for name, ts in results.items()]

    # The data source, over the prepared plain file.
    prep(plain, default_threads)()
    reads = []
    for window in (0, 1 << 16, 1 << 18, 1 << 20):
        src = CriteoSource(work / "out", shuffle_window=window, seed=0)
        b, total = 1 << 16, (a.read_examples // (1 << 16)) * (1 << 16)
        for _ in src.train_batches(b, 0, b):           # warm the page cache
            pass
        t = time.perf_counter()
        for _ in src.train_batches(b, 0, total):
            pass
        dt = time.perf_counter() - t
        reads.append({"what": f"CriteoSource, batch {b:,}, "
                      + ("stored order" if window == 0 else f"shuffle window {window:,}"),
                      "seconds": dt, "examples_per_s": total / dt, "train_rows": src.num_train})
    report = {"rows": n, "file_bytes": plain.stat().st_size, "gzip_bytes": packed.stat().st_size,
              "cpus": os.cpu_count(), "python": platform.python_version(),
              "numpy": __import__("numpy").__version__, "pandas": pd.__version__,
              "load_avg": os.getloadavg(), "setup_s": setup_s, "prepare": rows, "read": reads}
    if not a.workdir:
        shutil.rmtree(work)
    if a.json:
        print(json.dumps(report, indent=1))
        return 0
    print(f"{n:,} rows, {report['file_bytes'] / 1e6:.0f} MB plain, "
          f"{report['gzip_bytes'] / 1e6:.0f} MB gzip; {report['cpus']} CPUs; "
          f"load average {report['load_avg'][0]:.1f}")
    print("| what | seconds | rows/s |\n|---|---:|---:|")
    for r in rows:
        print(f"| {r['what']} | {r['seconds']:.2f} | {r['rows_per_s']:,.0f} |")
    print("\n| what | examples/s |\n|---|---:|")
    for r in reads:
        print(f"| {r['what']} | {r['examples_per_s']:,.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
