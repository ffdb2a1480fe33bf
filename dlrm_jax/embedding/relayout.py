"""A checkpoint's embedding state from the layout it was saved in to the run's.

Every checkpoint records its embedding layout (the saving backend's
`describe()`).  `how_to_restore(saved, target)` says what restoring it into
the run's layout takes:

    AS_SAVED   the same layout: restored as it is
    PADDED     the same groups on another device count: a sharded group's rows are
               padded to a multiple of its shards, so only zero padding rows at the
               end differ (added or dropped by the reader)
    RELAID     the same tables placed elsewhere (table placement over another number
               of devices, or saved before sharded groups spanned every device):
               restored as saved, then each feature's rows moved whole (`relayout`,
               jitted with the target's shardings, so on a mesh rows move device to device)
    CONVERTED  SparseCore stacks <-> TensorCore groups, or SparseCore stacks for another
               number of SparseCores: through the single-device layout on the host
               (`sparsecore/conversion.py`)

or refuses one that holds other tables.  `run/checkpoint.py` reads the
checkpoint with Orbax and calls these; none of this needs a checkpoint.
"""
from __future__ import annotations

import jax
import numpy as np

from dlrm_jax.embedding import placement, tables as emb_lib
from dlrm_jax.embedding.sparsecore import conversion

AS_SAVED, PADDED, RELAID, CONVERTED = "as_saved", "padded", "relaid", "converted"

# SparseCore <-> TensorCore, on the host (a whole table passes through host memory).
host_like = conversion.host_like
convert = conversion.convert


def how_to_restore(saved: dict | None, target: dict | None) -> tuple[str, str | None]:
    """(one of AS_SAVED, PADDED, RELAID, CONVERTED; None) or (AS_SAVED, why it cannot be restored).

    A missing layout on either side (the caller gave none, or a checkpoint of an
    older run has none) restores as saved."""
    if saved is None or target is None:
        return AS_SAVED, None
    if conversion.needs_conversion(saved, target):
        return CONVERTED, None
    if conversion.is_sparsecore(saved):        # the same SparseCore stacks
        return AS_SAVED, None
    why = placement.restorable(saved, target)
    if why is not None:
        return (RELAID, None) if same_tables(saved, target) else (AS_SAVED, why)
    same_rows = [g["rows"] for g in saved["groups"]] == [g["rows"] for g in target["groups"]]
    return (AS_SAVED if same_rows else PADDED), None


def same_tables(saved: dict, target: dict) -> bool:
    """Both layouts hold the same features with the same rows (wherever they sit)."""
    def tables(d):
        return sorted((f, r) for g in d["groups"] for f, r in zip(g["features"], g["feature_rows"]))
    return tables(saved) == tables(target)


def optimizer_of(emb) -> str:
    """A TensorCore state's sparse optimizer, from its accumulator's shape (layouts of older runs do not say)."""
    acc = placement.as_groups(emb)[0].accum
    return "sgd" if acc.size == 0 else ("rowwise_adagrad" if acc.ndim == 1 else "adagrad")


def saved_like(saved: dict, like_emb) -> tuple[object, bool]:
    """(ShapeDtypeStructs of the embedding state as `saved` lays it out, whether it is SGD's).

    Read onto the mesh of `like_emb` (the run's state or its abstract form): a
    group whose rows split evenly over the devices is read split, others
    replicated; SGD's empty accumulator is Orbax's one-element stand-in."""
    leaves = jax.tree.leaves(like_emb)
    mesh = getattr(getattr(leaves[0], "sharding", None), "mesh", None)
    dim = leaves[0].shape[-1]
    accum_ndim = {g.ndim for g in leaves[1::2]}
    optimizer_accum = next(iter(accum_ndim)) if accum_ndim else 1
    sgd = any(x.size == 0 for x in leaves)

    def sds(shape):
        if mesh is None:
            return jax.ShapeDtypeStruct(shape, np.float32)
        from jax.sharding import NamedSharding, PartitionSpec as P
        split = len(shape) > 0 and shape[0] % mesh.size == 0
        sharding = NamedSharding(mesh, P(mesh.axis_names) if split else P())
        return jax.ShapeDtypeStruct(shape, np.float32, sharding=sharding)

    def group(rows):
        acc = (1,) if sgd else ((rows, dim) if optimizer_accum == 2 else (rows,))
        return emb_lib.EmbeddingState(table=sds((rows, dim)), accum=sds(acc))

    return placement.from_groups([group(g["rows"]) for g in saved["groups"]]), sgd


def _in_group_order(st, g: dict, sgd: bool):
    """A saved group's state with its rows in group order (interleaved groups de-interleaved)."""
    if g.get("row_map") != "modulo":
        return st
    return emb_lib.EmbeddingState(table=placement.deinterleave(st.table, g["shards"]),
                                  accum=st.accum if sgd else placement.deinterleave(st.accum, g["shards"]))


def relayout(saved_groups, saved: dict, target: dict, like_emb, sgd: bool):
    """Saved groups' states -> `target`'s groups, each feature's rows (and accumulator) moved whole.

    Jitted with the target's shardings, so on a mesh the rows move device to device.
    """
    where = {f: (i, off, rows) for i, g in enumerate(saved["groups"])
             for f, off, rows in zip(g["features"], g["offsets"], g["feature_rows"])}

    def move(groups):
        groups = [_in_group_order(st, g, sgd) for st, g in zip(groups, saved["groups"])]
        out = []
        for g in target["groups"]:
            states = []
            for part in ("table", "accum"):
                if part == "accum" and sgd:
                    states.append(jax.numpy.zeros((0,), np.float32))
                    continue
                pieces, end = [], 0
                for f, off in zip(g["features"], g["offsets"]):
                    i, src, rows = where[f]
                    x = getattr(groups[i], part)
                    if off > end:
                        pieces.append(jax.numpy.zeros((off - end, *x.shape[1:]), x.dtype))
                    pieces.append(x[src:src + rows])
                    end = off + rows
                if g["rows"] > end:
                    pieces.append(jax.numpy.zeros((g["rows"] - end, *x.shape[1:]), x.dtype))
                x = jax.numpy.concatenate(pieces)
                states.append(placement.interleave(x, g["shards"]) if g.get("row_map") == "modulo" else x)
            out.append(emb_lib.EmbeddingState(table=states[0], accum=states[1]))
        return placement.from_groups(out)

    shardings = jax.tree.map(lambda x: getattr(x, "sharding", None), like_emb)
    if any(s is None for s in jax.tree.leaves(shardings, is_leaf=lambda x: x is None)):
        return move(saved_groups)
    return jax.jit(move, out_shardings=shardings)(saved_groups)
