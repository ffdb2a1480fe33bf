"""Embedding state between the SparseCore layout and the TensorCore layouts, on the host.

A checkpoint records its embedding layout (`describe()` of the backend that
saved it).  When a run restores a checkpoint saved by the other kind of
backend (SparseCore stacks <-> TensorCore placement groups), or SparseCore
stacks for another number of SparseCores, the saved tables and optimizer
state go through the single-device layout (one concatenated [R, D] table,
`tables.py`) on the host:

    saved layout --to_canonical--> (table [R, D], accum) --from_canonical--> target layout

Neither direction needs jax-tpu-embedding (`sparsecore_layout.py` has the
arithmetic), so a SparseCore run can be inspected or continued on a CPU.
The whole table passes through host memory: a 188M-row x 128 table is 96 GB
in float32 (plus Adagrad's state), so at that size convert on a large host.
"""
from __future__ import annotations

import numpy as np

from dlrm_jax.embedding import placement as placement_lib, tables as emb_lib
from dlrm_jax.embedding.sparsecore import layout as sparsecore_layout

is_sparsecore = sparsecore_layout.is_sparsecore


def needs_conversion(saved: dict | None, target: dict | None) -> bool:
    """True if `saved` and `target` are different kinds (SparseCore vs TensorCore) or different SparseCore stacks."""
    if saved is None or target is None:
        return False
    sc_saved, sc_target = sparsecore_layout.is_sparsecore(saved), sparsecore_layout.is_sparsecore(target)
    if sc_saved != sc_target:
        return True
    return sc_saved and sparsecore_layout.restorable(saved, target) is not None


def to_canonical(layout: dict, emb, optimizer: str) -> tuple[np.ndarray, np.ndarray]:
    """An embedding state (numpy leaves) saved with `layout` -> (table [R, D], accum) of the single-device layout."""
    if sparsecore_layout.is_sparsecore(layout):
        return sparsecore_layout.to_canonical(layout, emb.table, emb.accum)
    groups = placement_lib.as_groups(emb)
    tables, accums = {}, {}
    for g, st in zip(layout["groups"], groups):
        table, accum = np.asarray(st.table), np.asarray(st.accum)
        if g.get("row_map") == "modulo":   # interleaved group: stored in device order
            table = placement_lib.deinterleave(table, g["shards"])
            accum = placement_lib.deinterleave(accum, g["shards"]) if optimizer != "sgd" else accum
        for f, off, rows in zip(g["features"], g["offsets"], g["feature_rows"]):
            tables[f] = table[off:off + rows]
            accums[f] = accum[off:off + rows] if optimizer != "sgd" else None
    features = sorted(tables)
    canonical = np.concatenate([tables[f] for f in features])
    if optimizer == "sgd":
        return canonical, np.zeros((0,), np.float32)
    return canonical, np.concatenate([accums[f] for f in features])


def from_canonical(layout: dict, table: np.ndarray, accum: np.ndarray, optimizer: str):
    """(table [R, D], accum) of the single-device layout -> an embedding state laid out as `layout` (numpy)."""
    if sparsecore_layout.is_sparsecore(layout):
        t, a = sparsecore_layout.from_canonical(layout, table, accum)
        return emb_lib.EmbeddingState(table=t, accum=a)
    dim = table.shape[1]
    feature_rows = {}
    for g in layout["groups"]:
        feature_rows.update(zip(g["features"], g["feature_rows"]))
    offsets = np.concatenate([[0], np.cumsum([feature_rows[f] for f in sorted(feature_rows)])[:-1]]).astype(np.int64)
    out = []
    for g in layout["groups"]:
        g_table = np.zeros((g["rows"], dim), np.float32)
        g_accum = np.zeros(emb_lib.accum_shape(optimizer, g["rows"], dim), np.float32)
        for f, off, rows in zip(g["features"], g["offsets"], g["feature_rows"]):
            g_table[off:off + rows] = table[offsets[f]:offsets[f] + rows]
            if optimizer != "sgd":
                g_accum[off:off + rows] = accum[offsets[f]:offsets[f] + rows]
        if g.get("row_map") == "modulo":
            g_table = placement_lib.interleave(g_table, g["shards"])
            g_accum = placement_lib.interleave(g_accum, g["shards"]) if optimizer != "sgd" else g_accum
        out.append(emb_lib.EmbeddingState(table=g_table, accum=g_accum))
    return placement_lib.from_groups(out)


def host_like(layout: dict, optimizer: str, dim: int):
    """Host arrays (np.empty: no memory touched) shaped like a state saved with `layout`: Orbax's restore target."""
    def arr(shape):
        return np.empty(shape, np.float32)

    if sparsecore_layout.is_sparsecore(layout):
        tc_rows = sum(layout["feature_rows"][f] for f in layout["tensorcore"]["features"])
        stacks = {s["name"]: (s["rows"], s["dim"]) for s in layout["stacks"]}
        return emb_lib.EmbeddingState(
            table={"sparsecore": {k: arr(v) for k, v in stacks.items()}, "tensorcore": arr((tc_rows, dim))},
            accum={"sparsecore": {k: arr((0,) if optimizer == "sgd" else v) for k, v in stacks.items()},
                   "tensorcore": arr(emb_lib.accum_shape(optimizer, tc_rows, dim))})
    return placement_lib.from_groups([emb_lib.EmbeddingState(table=arr((g["rows"], dim)),
                                                             accum=arr(emb_lib.accum_shape(optimizer, g["rows"], dim)))
                                      for g in layout["groups"]])


def convert(saved: dict, target: dict, emb, optimizer: str):
    """An embedding state laid out as `saved` -> the same tables and optimizer state laid out as `target`."""
    table, accum = to_canonical(saved, emb, optimizer)
    return from_canonical(target, table, accum, optimizer)
