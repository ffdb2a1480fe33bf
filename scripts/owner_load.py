"""Load per owner of the embedding exchange: contiguous row blocks vs a modulo row map.

For a batch of synthetic Zipf ids (the criteo-mlperf shape by default, tables
capped as given), split over N devices: per device, the unique ids it sends to
each owner, and the all-to-all rounds the exchange would need at capacity
C = ceil(headroom x own ids / N) (exchange.py).  Numpy only, no compile.

    python scripts/owner_load.py [--devices 32] [--per-device-batch 512] [--table-rows 100000]
"""
import argparse

import numpy as np

from dlrm_jax import config as C
from dlrm_jax.data import make_source
from dlrm_jax.embedding import exchange, placement as PL


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--devices", type=int, default=32)
    p.add_argument("--per-device-batch", type=int, default=512)
    p.add_argument("--table-rows", type=int, default=100_000)
    p.add_argument("--headroom", type=float, default=exchange.DEFAULT_HEADROOM)
    p.add_argument("--preset", default="criteo-mlperf")
    args = p.parse_args()
    n_dev, b = args.devices, args.per_device_batch
    cfg = C.load_config(args.preset, [f"model.table_rows={args.table_rows}"])
    source = make_source(cfg)
    batch = next(source.train_batches(n_dev * b, 0, n_dev * b))
    (g,) = PL.plan("row", source.table_sizes, 1, n_dev).groups
    rows = batch.sparse.astype(np.int64) + np.asarray(g.offsets, np.int64)     # [B, F] group rows
    cap = exchange.capacity(b * rows.shape[1], n_dev, args.headroom)
    print(f"{args.preset}, tables capped at {args.table_rows:,} ({g.rows:,} rows), {n_dev} devices x {b} examples, "
          f"capacity {cap} ids per owner per round (headroom {args.headroom})")
    print("| row map | unique ids per device (mean) | most to one owner (max over devices) | mean per owner | "
          "rounds needed |")
    print("|---|---:|---:|---:|---:|")
    for name, owner_of in (("contiguous blocks", lambda r: r // g.shard_rows), ("modulo", lambda r: r % n_dev)):
        most, uniq, per_owner = 0, [], []
        for d in range(n_dev):
            u = np.unique(rows[d * b:(d + 1) * b])
            counts = np.bincount(owner_of(u), minlength=n_dev)
            most = max(most, counts.max())
            uniq.append(len(u))
            per_owner.append(counts.mean())
        print(f"| {name} | {np.mean(uniq):,.0f} | {most:,} | {np.mean(per_owner):,.1f} | "
              f"{-(-most // cap)} (lower bound) |")


if __name__ == "__main__":
    main()
