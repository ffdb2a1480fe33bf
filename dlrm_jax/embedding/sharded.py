"""The sharded backend: table groups over the mesh, lookups and updates by shard_map.

ids are per feature ([B, F]); tables are the placement's groups
(`placement.init_embedding`).  A group with shards > 1 is row-sharded over the
table axis (`mesh.axis("table_rows")`); with 1 it is replicated.

Collectives of a row- (or table-) sharded group, per step, with M shards:

    lookup   all-gather ids over the table axis     [B/N, F_g] -> [B/data, F_g]
             each device gathers the ids it owns (others give zero rows)
             psum-scatter over the table axis on batch  [B/data, F_g, D] -> [B/N, F_g, D]
    update   all-gather ids and row gradients over the batch axes  [B, F_g(, D)]
             each device applies the sparse optimizer to its own rows

A table is never gathered: only ids and [B, F, D] row gradients move.  A
replicated group looks up locally and all-gathers ids and gradients so every
replica applies the same update.
"""
from __future__ import annotations

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from dlrm_jax.embedding import optimizers, placement as placement_lib, tables as emb_lib
from dlrm_jax.mesh import axis, spec

TABLE_AXIS = axis("table_rows")   # the axis a sharded group's row blocks are split over
BATCH_AXES = axis("batch")        # the axes the examples are split over


def locate(ids, div: np.ndarray, mod: np.ndarray, shard_rows: int):
    """Per-feature ids [..., F_g] -> (shard, row within the shard), int32 throughout.

    Feature f starts at row div[f] * S + mod[f] of the group (split on the
    host, in int64); splitting the id the same way keeps every intermediate
    below 2 S, so groups of any size work while S < 2^30.
    """
    s = shard_rows
    x = ids % s + jnp.asarray(mod, jnp.int32)                  # < 2 S
    carry = (x >= s).astype(jnp.int32)
    return jnp.asarray(div, jnp.int32) + ids // s + carry, x - carry * s


class ShardedEmbedding:
    """The embedding backend of a mesh (`init`, `lookup`, `update`; see `single_device.py`).

    ids are per feature ([B, F]), tables the placement's groups.  `lookup`
    and `update` run inside jit; their shard_map bodies are the collectives
    of the module docstring.
    """

    def __init__(self, mesh: jax.sharding.Mesh, placement: placement_lib.Placement, optimizer: str,
                 columns: tuple[int, ...] | None = None):
        """columns: the feature of each id column (multi-hot bags, `bags.py`); default one per feature."""
        self.mesh, self.placement, self.optimizer = mesh, placement, optimizer
        self.dim = placement.dim
        columns = tuple(range(len(placement.feature_rows))) if columns is None else tuple(columns)
        # Each group as its id columns: `features` become column indices, `offsets` per column.
        self._groups = [dataclasses.replace(
            g, features=tuple(k for k, f in enumerate(columns) if f in g.features),
            offsets=tuple(g.offsets[g.features.index(f)] for f in columns if f in g.features))
            for g in placement.groups]
        order = np.concatenate([g.features for g in self._groups])
        self._inverse = np.argsort(order)   # group-concatenated feature order -> feature order
        self._identity = bool(np.all(order == np.arange(len(order))))

    def init(self, key: jax.Array, optimizer: str, init_scale: float = 0.0, initial_accumulator: float = 0.0):
        """The placement's tables: the single-device values, laid out in groups."""
        return placement_lib.init_embedding(key, self.placement, optimizer, init_scale, initial_accumulator)

    def describe(self) -> dict:
        """The layout a checkpoint records."""
        return self.placement.describe()

    def _specs(self, g: placement_lib.TableGroup) -> tuple[P, P]:
        """(table, accum) specs of a group."""
        role = "table_rows" if g.shards > 1 else "replicated_table"
        accum_ndim = len(emb_lib.accum_shape(self.optimizer, 1, 1))
        return spec(role, 2), (spec(role, accum_ndim) if self.optimizer != "sgd" else P())

    def shardings(self):
        """NamedShardings of the embedding state, in its pytree structure."""
        out = []
        for g in self.placement.groups:
            t, a = self._specs(g)
            out.append(emb_lib.EmbeddingState(table=NamedSharding(self.mesh, t), accum=NamedSharding(self.mesh, a)))
        return placement_lib.from_groups(out)

    def _columns(self, g: placement_lib.TableGroup, x: jax.Array) -> jax.Array:
        """x [B, F, ...] -> the group's features [B, F_g, ...]."""
        if g.features == tuple(range(x.shape[1])):
            return x
        return jnp.take(x, np.asarray(g.features), axis=1)

    def _shard_map(self, f, in_specs, out_specs):
        # check_vma=False: the updated table shard is replicated over `data`
        # because every replica applies the same all-gathered update, which the
        # varying-axes checker cannot see through all_gather and the scatters.
        return jax.shard_map(f, mesh=self.mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)

    # ------------------------------------------------------------------ lookup

    def lookup(self, tables, ids: jax.Array) -> jax.Array:
        """tables (one per group), ids [B, F] -> rows [B, F, D], batch-sharded."""
        parts = []
        for g, table in zip(self._groups, placement_lib.as_groups(tables)):
            g_ids = self._columns(g, ids)                                           # [B, F_g]
            body = partial(self._lookup_sharded if g.shards > 1 else self._lookup_replicated, g)
            parts.append(self._shard_map(body, (self._specs(g)[0], spec("batch", 2)), spec("batch", 3))(table, g_ids))
        rows = parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=1)
        return rows if self._identity else jnp.take(rows, self._inverse, axis=1)

    @staticmethod
    def _lookup_replicated(g, table, ids):                      # [rows, D], [b, F_g]
        return jnp.take(table, ids + jnp.asarray(g.offsets, jnp.int32), axis=0)

    @staticmethod
    def _lookup_sharded(g, table, ids):                   # [S, D], [b, F_g] -> [b, F_g, D]
        s = g.shard_rows
        ids = jax.lax.all_gather(ids, TABLE_AXIS, axis=0, tiled=True)                 # [b * M, F_g]
        shard, local = locate(ids, *split_offsets(g), s)
        local = jnp.where(shard == jax.lax.axis_index(TABLE_AXIS), local, s)         # s: not here
        rows = jnp.take(table, local, axis=0, mode="fill", fill_value=0)           # [b * M, F_g, D]
        # Exactly one device contributes each row (others add zeros), so the sum is exact.
        return jax.lax.psum_scatter(rows, TABLE_AXIS, scatter_dimension=0, tiled=True)

    # ------------------------------------------------------------------ update

    def update(self, emb, ids: jax.Array, grads: jax.Array, optimizer: str, learning_rate, eps: float = 1e-8):
        """The sparse optimizer on each group's own rows; ids [B, F], grads [B, F, D] (batch-sharded)."""
        out = []
        for g, st in zip(self._groups, placement_lib.as_groups(emb)):
            g_ids, g_grads = self._columns(g, ids), self._columns(g, grads)      # [B, F_g], [B, F_g, D]
            t_spec, a_spec = self._specs(g)
            body = partial(self._update_group, g, optimizer, learning_rate, eps)
            table, accum = self._shard_map(body, (t_spec, a_spec, spec("batch", 2), spec("batch", 3)),
                                           (t_spec, a_spec))(st.table, st.accum, g_ids, g_grads)
            out.append(emb_lib.EmbeddingState(table=table, accum=accum))
        return placement_lib.from_groups(out)

    def _update_group(self, g, optimizer, learning_rate, eps, table, accum, ids, grads):
        # Every replica of a shard applies the whole global batch's update:
        # ids [B, F_g] and row gradients [B, F_g, D] are small next to a table.
        ids = jax.lax.all_gather(ids, BATCH_AXES, axis=0, tiled=True)
        grads = jax.lax.all_gather(grads, BATCH_AXES, axis=0, tiled=True)
        if g.shards > 1:
            shard, local = locate(ids, *split_offsets(g), g.shard_rows)
            rows = jnp.where(shard == jax.lax.axis_index(TABLE_AXIS), local, g.shard_rows)  # others: dropped
        else:
            rows = ids + jnp.asarray(g.offsets, jnp.int32)
        st = optimizers.sparse_update(emb_lib.EmbeddingState(table=table, accum=accum), rows, grads,
                                   optimizer, learning_rate, eps)
        return st.table, st.accum


def split_offsets(g: placement_lib.TableGroup) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.asarray(g.offsets, np.int64)
    return offsets // g.shard_rows, offsets % g.shard_rows
