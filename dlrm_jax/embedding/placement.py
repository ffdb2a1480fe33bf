"""Which embedding rows live where: table groups and their row layouts.

A placement splits the F features into groups.  Each group is one concatenated
table [rows, D] (as in `tables.py`) with one sharding, split into
`shards` equal row blocks over the mesh's `model` axis (1: replicated):

    replicated  one group, every table on every device
    row         one group, tables in feature order, rows split into M blocks:
                a large table spans several devices, small ones share one
    table       one group, whole tables packed greedily (largest first, onto the
                least-filled device) into M blocks of the largest block's size
    auto        tables below `embedding.replicate_below_rows` replicated, the
                rest row-sharded (two groups)

Ids stay per feature ([B, F], 0 <= id < rows[f]) until a group turns them into
(shard, row within the shard) with int32 arithmetic only (`sharded.locate`): offsets are split
into (offset // S, offset % S) on the host, so groups of any size work as long
as one table's rows fit int32 and one device holds fewer than 2^30 rows.

Feature f's initial rows are drawn as in `embedding.init_embedding`
(fold_in(key, f)), so every placement starts from the single-device values;
padding rows are zero and are never looked up or updated.
"""
from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from dlrm_jax.config import Sharding
from dlrm_jax.embedding import tables as emb_lib
from dlrm_jax.errors import UserError

PLACEMENTS = typing.get_args(Sharding)
INT32_MAX = 2 ** 31 - 1


@dataclass(frozen=True)
class TableGroup:
    features: tuple[int, ...]   # features in the group's row order
    offsets: tuple[int, ...]    # first row of each of those features in the group table
    rows: int                   # rows of the group table, padding included (a multiple of shards)
    shards: int                 # row blocks over the mesh's devices; 1 = replicated
    interleaved: bool = False   # row map: group row r on device r % shards (else r // shard_rows)

    @property
    def shard_rows(self) -> int:
        """S: rows per device."""
        return self.rows // self.shards

    def describe(self, feature_rows: Sequence[int]) -> dict:
        """What a checkpoint records; `rows` (padding) and `shards` may differ on restore."""
        out = {"features": list(self.features), "offsets": list(self.offsets),
               "feature_rows": [int(feature_rows[f]) for f in self.features],
               "rows": self.rows, "shards": self.shards}
        if self.interleaved:
            out["row_map"] = "modulo"
        return out


@dataclass(frozen=True)
class Placement:
    kind: str                         # one of PLACEMENTS
    feature_rows: tuple[int, ...]     # rows of each feature's table
    dim: int                          # D
    groups: tuple[TableGroup, ...]

    def describe(self) -> dict:
        return {"kind": self.kind, "groups": [g.describe(self.feature_rows) for g in self.groups]}


def plan(kind: str, feature_rows: Sequence[int], dim: int, model_shards: int,
         replicate_below_rows: int = 0) -> Placement:
    """The groups of `kind` over `model_shards` devices; UserError if it cannot work."""
    rows = tuple(int(r) for r in feature_rows)
    if kind not in PLACEMENTS:
        raise UserError(f"embedding.sharding must be one of {', '.join(PLACEMENTS)}, got {kind!r}")
    if max(rows) > INT32_MAX:
        raise UserError(f"a table of {max(rows):,} rows does not fit int32 ids; cap model.table_rows")
    m = model_shards
    every = tuple(range(len(rows)))
    if kind == "replicated":
        groups = [_contiguous(every, rows, 1)]
    elif kind == "row":
        groups = [_row_group(every, rows, m, "embedding.sharding=row")]
    elif kind == "table":
        groups = [_table_group(rows, m)]
    else:
        small = tuple(f for f in every if rows[f] < replicate_below_rows)
        large = tuple(f for f in every if rows[f] >= replicate_below_rows)
        groups = ([_contiguous(small, rows, 1)] if small else []) + (
            [_row_group(large, rows, m, "embedding.sharding=auto")] if large else [])
    for g in groups:
        if g.shards == 1 and g.rows > INT32_MAX:
            raise UserError(f"{g.rows:,} table rows on every device do not fit int32 ids; "
                            f"shard them (embedding.sharding=row, mesh.model > 1)")
        if g.shards > 1 and 2 * g.shard_rows > INT32_MAX:
            raise UserError(f"{g.shard_rows:,} rows per device do not fit int32 ids; raise mesh.model")
    return Placement(kind, rows, int(dim), tuple(groups))


def _contiguous(features: tuple[int, ...], rows: tuple[int, ...], shards: int) -> TableGroup:
    offsets = tuple(int(o) for o in np.cumsum([0] + [rows[f] for f in features])[:-1])
    total = sum(rows[f] for f in features)
    return TableGroup(features, offsets, -(-total // shards) * shards, shards)


def _row_group(features, rows, m: int, what: str) -> TableGroup:
    total = sum(rows[f] for f in features)
    if total < m:
        raise UserError(f"{what} splits {total} table rows over mesh.model={m} devices: fewer rows than "
                        f"devices; lower mesh.model or use embedding.sharding=replicated")
    # Row r on device r % m: every table, and each table's hot head of Zipf ids,
    # spreads evenly over the devices.  With contiguous blocks a small table sits
    # whole on one device and the exchange's busiest owner got 4x the mean
    # (criteo-mlperf shape, 32 devices; scripts/owner_load.py, docs/BENCHMARKS.md).
    g = _contiguous(features, rows, m)
    return TableGroup(g.features, g.offsets, g.rows, g.shards, interleaved=m > 1)


def _table_group(rows: tuple[int, ...], m: int) -> TableGroup:
    """Greedy largest-first packing of whole tables into m equal blocks."""
    load, owned = [0] * m, [[] for _ in range(m)]
    for f in sorted(range(len(rows)), key=lambda f: (-rows[f], f)):
        k = min(range(m), key=lambda k: (load[k], k))
        load[k] += rows[f]
        owned[k].append(f)
    s = max(load)
    features, offsets = [], []
    for k in range(m):
        start = k * s
        for f in sorted(owned[k]):
            features.append(f)
            offsets.append(start)
            start += rows[f]
    return TableGroup(tuple(features), tuple(offsets), s * m, m)


# --------------------------------------------------------------------------- state

@struct.dataclass
class GroupedEmbeddingState:
    """Several groups' states; a one-group placement uses a plain EmbeddingState."""
    groups: tuple[emb_lib.EmbeddingState, ...]

    @property
    def table(self) -> tuple[jax.Array, ...]:
        """What the train step hands to `lookup` (it reads `state.emb.table`)."""
        return tuple(g.table for g in self.groups)


def as_groups(emb) -> tuple:
    """EmbeddingState | GroupedEmbeddingState | table(s) -> a tuple with one entry per group."""
    if isinstance(emb, GroupedEmbeddingState):
        return emb.groups
    return emb if isinstance(emb, tuple) else (emb,)


def from_groups(groups: Sequence[emb_lib.EmbeddingState]):
    return groups[0] if len(groups) == 1 else GroupedEmbeddingState(tuple(groups))


def init_embedding(key: jax.Array, placement: Placement, optimizer: str, init_scale: float = 0.0,
                   initial_accumulator: float = 0.0, interleave_fn=None):
    """The placement's tables; the same values as `embedding.init_embedding`, laid out in groups.

    interleave_fn(table, shards): how an interleaved group's rows are put in device
    order (default `interleave`; the sharded backend passes one that keeps it sharded).
    """
    out = []
    for g in placement.groups:
        parts, end = [], 0
        for f, off in zip(g.features, g.offsets):
            if off > end:
                parts.append(jnp.zeros((off - end, placement.dim), jnp.float32))
            parts.append(emb_lib.init_feature_rows(key, f, placement.feature_rows[f], placement.dim, init_scale))
            end = off + placement.feature_rows[f]
        if g.rows > end:
            parts.append(jnp.zeros((g.rows - end, placement.dim), jnp.float32))
        accum = jnp.full(emb_lib.accum_shape(optimizer, g.rows, placement.dim), initial_accumulator, jnp.float32)
        table = jnp.concatenate(parts, axis=0)
        if g.interleaved:   # the accumulator starts uniform: it needs no reordering
            table = (interleave_fn or interleave)(table, g.shards)
        out.append(emb_lib.EmbeddingState(table=table, accum=accum))
    return from_groups(out)


def interleave(x, shards: int):
    """Group-order rows [R, ...] -> device order: device k's block holds rows k, k + M, k + 2M, ..."""
    return x.reshape(-1, shards, *x.shape[1:]).swapaxes(0, 1).reshape(x.shape)


def deinterleave(x, shards: int):
    """The inverse of `interleave`: device order -> group-order rows."""
    return x.reshape(shards, -1, *x.shape[1:]).swapaxes(0, 1).reshape(x.shape)


def to_canonical(placement: Placement, emb) -> tuple[np.ndarray, np.ndarray]:
    """(table [R, D], accum) in the single-device layout, on the host: for tests and export."""
    groups = as_groups(emb)
    tables, accums = {}, {}
    for g, st in zip(placement.groups, groups):
        table, accum = np.asarray(st.table), np.asarray(st.accum)
        if g.interleaved:
            table = deinterleave(table, g.shards)
            accum = deinterleave(accum, g.shards) if accum.size else accum
        for f, off in zip(g.features, g.offsets):
            tables[f] = table[off:off + placement.feature_rows[f]]
            accums[f] = accum[off:off + placement.feature_rows[f]] if accum.size else accum
    features = range(len(placement.feature_rows))
    return (np.concatenate([tables[f] for f in features]),
            np.concatenate([accums[f] for f in features]))


def restorable(saved: dict, target: dict) -> str | None:
    """None if a checkpoint laid out as `saved` restores into `target` (padding aside); else why not."""
    def key(d):
        # An interleaved group's device order depends on its number of shards too.
        return [(g["features"], g["offsets"], g["feature_rows"], g.get("row_map", "contiguous"),
                 g["shards"] if g.get("row_map") == "modulo" else None) for g in d["groups"]]

    if key(saved) == key(target):
        return None
    return (f"the checkpoint's tables are laid out for embedding.sharding={saved['kind']} over "
            f"{max(g['shards'] for g in saved['groups'])} model shards, this run's for "
            f"embedding.sharding={target['kind']} over {max(g['shards'] for g in target['groups'])}")
