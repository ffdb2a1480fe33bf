"""The SparseCore table layout, described and converted without jax-tpu-embedding.

jax-tpu-embedding keeps the tables of one *stack* (tables of equal dim and
optimizer, stacked by its `auto_stack_tables`) in one array [V_stack, D_pad]
row-sharded over the devices, each device's block holding its S SparseCores'
shards.  With N devices there are K = N * S shards; a table of `rows` ids is
padded to `padded_rows` (a multiple of 8 K) and MOD-sharded: id r lives on
shard r % K at row r // K of that table's block, the blocks of the stack's
tables sit at `row_offset_in_shard` within each shard, and a table's shards are
rotated by `shard_rotation` (so that small tables do not all land on shard 0).
That is `table_stacking.stack_and_shard_tables` of the library; the same
arithmetic is written here in numpy-or-jax operations so that

* a checkpoint saved by the SparseCore backend restores into the TensorCore
  layout (one concatenated [R, D] table, `tables.py`) on a host without the
  library (Python 3.11, a CPU), and back;
* the backend builds its initial tables from the same per-feature values as
  the TensorCore backends (`tables.init_feature_rows`), so both start equal.

`describe()` of the backend records the layout as a JSON dict (kind
"sparsecore") in every checkpoint; `to_canonical` / `from_canonical` read it.
tests/embedding/test_sparsecore.py checks both directions against the library's own
stack_and_shard_tables / unshard_and_unstack_tables where it is installed.
"""
from __future__ import annotations

from typing import Any

import numpy as np

KIND = "sparsecore"


def is_sparsecore(layout: dict | None) -> bool:
    return bool(layout) and layout.get("kind") == KIND


def stack_rows_per_shard(stack: dict, shards: int) -> int:
    return stack["rows"] // shards


def stack_tables(stack: dict, tables: dict[int, Any], shards: int, xp=np) -> Any:
    """Per-feature tables {f: [rows_f, D_f-or-less]} -> the stack's global array [V_stack, D_pad].

    `xp` is numpy (host conversion) or jax.numpy (the backend's init, inside jit).
    """
    per_shard = stack_rows_per_shard(stack, shards)
    width = stack["dim"]
    blocks = []   # (row offset in shard, [K, padded_rows / K, D_pad])
    for t in stack["tables"]:
        values = tables[t["feature"]]
        padded = xp.pad(values, ((0, t["padded_rows"] - values.shape[0]), (0, width - values.shape[1])))
        sharded = xp.swapaxes(padded.reshape(-1, shards, width), 0, 1)     # id r -> [r % K, r // K]
        blocks.append((t["row_offset_in_shard"], xp.roll(sharded, t["shard_rotation"], axis=0)))
    parts, end = [], 0
    for off, b in sorted(blocks, key=lambda ob: ob[0]):
        if off > end:
            parts.append(xp.zeros((shards, off - end, width), b.dtype))
        parts.append(b)
        end = off + b.shape[1]
    if per_shard > end:
        parts.append(xp.zeros((shards, per_shard - end, width), parts[-1].dtype))
    return xp.concatenate(parts, axis=1).reshape(shards * per_shard, width)


def unstack_table(stack: dict, stacked, shards: int, feature: int, dim: int, xp=np):
    """The stack's global array [V_stack, D_pad] -> feature `feature`'s table [rows, dim]."""
    t = next(t for t in stack["tables"] if t["feature"] == feature)
    block_rows = t["padded_rows"] // shards
    start = t["row_offset_in_shard"]
    x = stacked.reshape(shards, -1, stacked.shape[-1])[:, start:start + block_rows]
    x = xp.roll(x, -t["shard_rotation"], axis=0)
    return xp.swapaxes(x, 0, 1).reshape(-1, stacked.shape[-1])[:t["rows"], :dim]


def to_canonical(layout: dict, table: dict, accum: dict) -> tuple[np.ndarray, np.ndarray]:
    """A SparseCore state's (table, accum) trees -> (table [R, D], accum) in the single-device layout.

    table = {"sparsecore": {stack: [V, D_pad]}, "tensorcore": [R_tc, D]}; accum the same
    with the optimizer's state (Adagrad: [.., D] like the table; SGD: none).  Row-wise
    Adagrad has no SparseCore form (`sparsecore.py` says why).
    """
    rows, dim, shards, optimizer = layout["feature_rows"], layout["dim"], layout["shards"], layout["optimizer"]
    tc = layout["tensorcore"]
    tables, accums = {}, {}
    tc_table, tc_accum = np.asarray(table["tensorcore"]), np.asarray(accum["tensorcore"])
    for f, off in zip(tc["features"], tc["offsets"]):
        tables[f] = tc_table[off:off + rows[f]]
        accums[f] = tc_accum[off:off + rows[f]] if optimizer != "sgd" else None
    for stack in layout["stacks"]:
        st = np.asarray(table["sparsecore"][stack["name"]])
        sa = np.asarray(accum["sparsecore"][stack["name"]]) if optimizer != "sgd" else None
        for t in stack["tables"]:
            f = t["feature"]
            tables[f] = unstack_table(stack, st, shards, f, dim)
            if optimizer != "sgd":
                accums[f] = unstack_table(stack, sa, shards, f, dim)
    features = range(len(rows))
    canonical_table = np.concatenate([tables[f] for f in features]).astype(np.float32)
    if optimizer == "sgd":
        return canonical_table, np.zeros((0,), np.float32)
    return canonical_table, np.concatenate([accums[f] for f in features]).astype(np.float32)


def from_canonical(layout: dict, table: np.ndarray, accum: np.ndarray, xp=np) -> tuple[dict, dict]:
    """(table [R, D], accum) in the single-device layout -> the SparseCore (table, accum) trees."""
    rows, dim, shards, optimizer = layout["feature_rows"], layout["dim"], layout["shards"], layout["optimizer"]
    offsets = np.concatenate([[0], np.cumsum(rows)[:-1]]).astype(np.int64)
    per_feature = {f: table[offsets[f]:offsets[f] + rows[f]] for f in range(len(rows))}
    acc_feature = {f: accum[offsets[f]:offsets[f] + rows[f]] for f in range(len(rows))} if optimizer != "sgd" else {}
    tc = layout["tensorcore"]

    def tc_part(parts, width_shape):
        if not tc["features"]:
            return xp.zeros(width_shape, xp.float32)
        return xp.concatenate([parts[f] for f in tc["features"]])

    out_table = {"tensorcore": tc_part(per_feature, (0, dim)), "sparsecore": {}}
    out_accum = {"tensorcore": xp.zeros((0,), xp.float32) if optimizer == "sgd"
                 else tc_part(acc_feature, (0, dim)),
                 "sparsecore": {}}
    for stack in layout["stacks"]:
        names = [t["feature"] for t in stack["tables"]]
        out_table["sparsecore"][stack["name"]] = stack_tables(stack, per_feature, shards, xp)
        if optimizer == "sgd":
            out_accum["sparsecore"][stack["name"]] = xp.zeros((0,), xp.float32)
        else:
            out_accum["sparsecore"][stack["name"]] = stack_tables(stack, {f: acc_feature[f] for f in names},
                                                                  shards, xp)
    return out_table, out_accum


def restorable(saved: dict, target: dict) -> str | None:
    """None if a SparseCore checkpoint laid out as `saved` restores directly into `target`."""
    def key(d):
        return (d.get("feature_rows"), d.get("dim"), d.get("shards"), d.get("stacks"), d.get("tensorcore"))

    if key(saved) == key(target):
        return None
    return (f"the checkpoint's SparseCore stacks are laid out for {saved.get('shards')} SparseCore shards, "
            f"this run's for {target.get('shards')}")
