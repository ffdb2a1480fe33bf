"""The sharded backend: table groups over the mesh, lookups and updates by shard_map.

ids are given per id column ([B, K]; column k belongs to feature `columns[k]`,
by default K = F and column k is feature k); tables are the placement's groups
(`placement.init_embedding`).  A group with shards > 1 is row-sharded over
every device of the mesh (`mesh.axis("table_rows")`: data x model, N blocks);
with 1 it is replicated.

Collectives per step and device, b = B / N examples of its own, K_g columns of
a group, C the exchange capacity (`exchange.py`; N x C ~ 2 b K_g):

    sharded group      lookup  all-to-all of [N x C] ids, then of [N x C, D] rows
                       update  all-to-all of [N x C] ids and [N x C, D] summed gradients;
                               each owner applies the sparse optimizer to its rows
                       (plus a pmin/pmax of N int32 per round; more rounds only on overflow)
    replicated group   lookup  none (local gather)
                       update  rows <= B K_g: all-reduce of the group's dense gradient
                               [rows, D] and touch counts [rows] (constant in N);
                               larger: all-gather of ids and gradients over the batch
                               (grows with N: use a sharded placement for large tables)

Multi-hot bags (`bags`; the step then calls `lookup_bags` / `update_bags`,
which take and give pooled [B, F, D]): a sharded group either pools on the
owners (`pooled.py`: entries [N x Ce] of 12 bytes one way, [N x Cu, D]
partial sums back and pooled gradients out, Cu ~ b sum_f P(a bag of f
touches an owner)) or exchanges one row per unique id as above and pools
locally; `embedding.bag_exchange=auto` takes the one whose all-to-all bytes
are fewer (`exchange_mode`, from the shapes).  criteo-mlperf-dcnv2 on 64
chips: 167 MB against 410 MB per chip and step (docs/BENCHMARKS.md).

A table is never gathered, and a sharded group's traffic per device depends
on the device's own b examples only, not on N (docs/BENCHMARKS.md measures it).
Row-to-shard map: `row` and `auto` groups are interleaved (group row r on
device r % N), `table` groups are contiguous blocks (whole tables per device).
Dedup sends a hot id once per device, but with contiguous blocks every small
table and each large table's hot head sit on one device: measured on the
criteo-mlperf shape at 32 devices (scripts/owner_load.py), the busiest owner
received 959 unique ids from one device against a mean of 188 (2 rounds at
headroom 2), interleaved 232 (1 round).  Checkpoints of contiguous groups are
re-laid out on restore (relayout.py).
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from dlrm_jax.data.base import NUM_DENSE
from dlrm_jax.embedding import exchange, optimizers, placement as placement_lib, pooled, support, tables as emb_lib
from dlrm_jax.parallel import distributed
from dlrm_jax.parallel.mesh import axis, spec

TABLE_AXIS = axis("table_rows")   # the axes a sharded group's row blocks are split over
BATCH_AXES = axis("batch")        # the axes the examples are split over


def locate(ids, div: np.ndarray, mod: np.ndarray, shard_rows: int):
    """Per-column ids [..., K_g] -> (shard, row within the shard), int32 throughout.

    Column k's feature starts at row div[k] * S + mod[k] of the group (split on
    the host, in int64); splitting the id the same way keeps every intermediate
    below 2 S, so groups of any size work while S < 2^30.
    """
    s = shard_rows
    x = ids % s + jnp.asarray(mod, jnp.int32)                  # < 2 S
    carry = (x >= s).astype(jnp.int32)
    return jnp.asarray(div, jnp.int32) + ids // s + carry, x - carry * s


def locate_interleaved(ids, offsets: np.ndarray, shards: int):
    """Per-column ids [..., K_g] -> (shard, row within the shard) of an interleaved group (row r on r % M).

    Column k's feature starts at group row offsets[k]; (offset // M, offset % M)
    are split on the host, so every intermediate stays below 2 M + S in int32.
    """
    m = shards
    off = np.asarray(offsets, np.int64)
    x = ids % m + jnp.asarray(off % m, jnp.int32)              # < 2 M
    carry = (x >= m).astype(jnp.int32)
    return x - carry * m, jnp.asarray(off // m, jnp.int32) + ids // m + carry


class ShardedEmbedding:
    """The embedding backend of a mesh (`backend.EmbeddingBackend`).

    `columns[k]` is the feature of id column k (default: one column per
    feature, in order).  `lookup` and `update` run inside jit; their shard_map
    bodies are the collectives of the module docstring.  `update` also
    returns the exchange's counters (`exchange.ExchangeStats`).  A batch is
    split over every device (`spec("batch")`); an eval chunk, which every host
    holds whole, is padded to a multiple of the devices.
    """
    OPTIMIZERS = support.SHARDED_OPTIMIZERS
    eval_batch = None

    def __init__(self, mesh: jax.sharding.Mesh, placement: placement_lib.Placement, optimizer: str,
                 columns: tuple[int, ...] | None = None, headroom: float = exchange.DEFAULT_HEADROOM,
                 bags=None, bag_exchange: str = "auto"):
        self.mesh, self.placement, self.optimizer, self.headroom = mesh, placement, optimizer, headroom
        self.bags, self.bag_exchange = bags, bag_exchange
        self.pools_bags = bags is not None
        if bags is not None and columns is None:
            columns = bags.columns
        self.dim = placement.dim
        self.eval_multiple = mesh.size
        self.columns = tuple(range(len(placement.feature_rows))) if columns is None else tuple(columns)
        self._group_columns, self._group_offsets = [], []
        for g in placement.groups:
            cols = [k for k, f in enumerate(self.columns) if f in g.features]
            self._group_columns.append(np.asarray(cols, np.int64))
            self._group_offsets.append(np.asarray([g.offsets[g.features.index(self.columns[k])] for k in cols],
                                                  np.int64))
            if g.shards not in (1, mesh.size):
                raise ValueError(f"a sharded group must span all {mesh.size} devices, not {g.shards}")
        order = np.concatenate(self._group_columns)
        self._inverse = np.argsort(order)   # group-concatenated column order -> column order
        self._identity = bool(np.all(order == np.arange(len(order))))
        # Bags: each group's features in order of their columns, the local feature and weight of each column.
        self._group_features, self._column_feature, self._column_weight = [], [], []
        for cols in self._group_columns:
            feats = list(dict.fromkeys(self.columns[k] for k in cols))
            self._group_features.append(np.asarray(feats, np.int64))
            self._column_feature.append(np.asarray([feats.index(self.columns[k]) for k in cols], np.int32))
            count = {f: sum(1 for k in cols if self.columns[k] == f) for f in feats}
            mean = bags is not None and bags.mode == "mean"
            self._column_weight.append(np.asarray([1.0 / count[self.columns[k]] if mean else 1.0 for k in cols],
                                                  np.float32))
        self._feature_inverse = np.argsort(np.concatenate(self._group_features))

    def init(self, key: jax.Array, optimizer: str, init_scale: float = 0.0, initial_accumulator: float = 0.0):
        """The placement's tables: the single-device values, laid out in groups."""
        return placement_lib.init_embedding(key, self.placement, optimizer, init_scale, initial_accumulator,
                                            interleave_fn=self._interleave)

    def _interleave(self, table: jax.Array, shards: int) -> jax.Array:
        """`placement.interleave` without a whole table on any device: rows [S x M, D] viewed as
        [S, M, D] are first split over M (an all-to-all from the row split), then the swap is local."""
        table = jax.lax.with_sharding_constraint(table, NamedSharding(self.mesh, P(TABLE_AXIS, None)))
        x = table.reshape(-1, shards, table.shape[-1])                     # [S, M, D], split over S
        x = jax.lax.with_sharding_constraint(x, NamedSharding(self.mesh, P(None, TABLE_AXIS, None)))
        return x.swapaxes(0, 1).reshape(table.shape)

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

    def sharding(self, role: str, ndim: int) -> NamedSharding:
        return NamedSharding(self.mesh, spec(role, ndim))

    def batch_shardings(self) -> tuple:
        return tuple(self.sharding("batch", nd) for nd in (2, 2, 1))            # dense, ids, labels

    def abstract_batch(self, batch_size: int) -> tuple:
        shapes = (((batch_size, NUM_DENSE), jnp.float32), ((batch_size, len(self.columns)), jnp.int32),
                  ((batch_size,), jnp.float32))
        return tuple(jax.ShapeDtypeStruct(shape, dtype, sharding=s)
                     for (shape, dtype), s in zip(shapes, self.batch_shardings()))

    def put_batch(self, batch) -> tuple:
        """This host's rows of each array -> global arrays split over the mesh."""
        return tuple(distributed.global_batch(x, s) for x, s in zip(batch, self.batch_shardings()))

    def put_eval(self, dense, sparse) -> tuple:
        """A chunk every host holds whole -> global arrays; each host places its own shards."""
        return tuple(distributed.replicated_input(x, s) for x, s in zip((dense, sparse), self.batch_shardings()))

    def _columns(self, i: int, x: jax.Array) -> jax.Array:
        """x [B, K, ...] -> group i's columns [B, K_g, ...]."""
        cols = self._group_columns[i]
        if len(cols) == x.shape[1] and np.all(cols == np.arange(x.shape[1])):
            return x
        return jnp.take(x, cols, axis=1)

    def _locate(self, i: int, g, ids):
        """ids [b, K_g] of group i -> (owner, row within the owner's block)."""
        if g.interleaved:
            return locate_interleaved(ids, self._group_offsets[i], g.shards)
        return locate(ids, *split_offsets(g, self._group_offsets[i]), g.shard_rows)

    def _shard_map(self, f, in_specs, out_specs):
        # check_vma=False: replicated outputs (a replicated group's table, the
        # exchange counters) are equal on every device by construction (psum'd
        # gradients, pmin'd windows), which the varying-axes checker cannot see.
        return jax.shard_map(f, mesh=self.mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)

    def _capacity(self, local_ids: jax.Array) -> int:
        return exchange.capacity(local_ids.size, self.mesh.size, self.headroom)

    # ------------------------------------------------------------------ lookup

    def lookup(self, tables, ids: jax.Array) -> jax.Array:
        """tables (one per group), ids [B, K] -> rows [B, K, D], batch-sharded."""
        parts = [self._lookup_group(i, g, table, self._columns(i, ids))
                 for i, (g, table) in enumerate(zip(self.placement.groups, placement_lib.as_groups(tables)))]
        rows = parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=1)
        return rows if self._identity else jnp.take(rows, self._inverse, axis=1)

    def _lookup_group(self, i, g, table, g_ids):                    # g_ids [B, K_g] -> rows [B, K_g, D]
        body = partial(self._lookup_sharded if g.shards > 1 else self._lookup_replicated, i, g)
        return self._shard_map(body, (self._specs(g)[0], spec("batch", 2)), spec("batch", 3))(table, g_ids)

    def _lookup_replicated(self, i, g, table, ids):                    # [rows, D], [b, K_g]
        return jnp.take(table, ids + jnp.asarray(self._group_offsets[i], jnp.int32), axis=0)

    def _lookup_sharded(self, i, g, table, ids):                # [S, D], [b, K_g] -> [b, K_g, D]
        shard, local = self._locate(i, g, ids)
        rows, _ = exchange.lookup(table, shard, local, g.shards, self._capacity(ids), TABLE_AXIS)
        return rows

    # ------------------------------------------------------------------ update

    def update(self, emb, ids: jax.Array, grads: jax.Array, optimizer: str, learning_rate, eps: float = 1e-8):
        """The sparse optimizer on each group's own rows; ids [B, K], grads [B, K, D] (batch-sharded)
        -> (new state, {exchange_rounds, exchange_overflow_ids}: int32 counters of this step).

        exchange_rounds: the most all-to-all rounds a sharded group took (1: no
        overflow; 0: no sharded group); exchange_overflow_ids: unique ids that
        needed a later round, summed over groups and devices.
        """
        out, rounds, overflow = [], jnp.int32(0), jnp.int32(0)
        for i, (g, st) in enumerate(zip(self.placement.groups, placement_lib.as_groups(emb))):
            st, r, o = self._update_group(i, g, st, self._columns(i, ids), self._columns(i, grads), optimizer,
                                          learning_rate, eps)
            out.append(st)
            rounds, overflow = jnp.maximum(rounds, r), overflow + o
        stats = {"exchange_rounds": rounds, "exchange_overflow_ids": overflow}
        return placement_lib.from_groups(out), stats

    def _update_group(self, i, g, st, g_ids, g_grads, optimizer, learning_rate, eps):
        """One group's update: (state, rounds, overflow ids); ids [B, K_g], grads [B, K_g, D]."""
        t_spec, a_spec = self._specs(g)
        if g.shards > 1:
            body = partial(self._update_sharded, i, g, optimizer, learning_rate, eps)
            table, accum, r, o = self._shard_map(
                body, (t_spec, a_spec, spec("batch", 2), spec("batch", 3)),
                (t_spec, a_spec, P(), P()))(st.table, st.accum, g_ids, g_grads)
            return emb_lib.EmbeddingState(table=table, accum=accum), r, o
        body = partial(self._update_replicated, i, g, optimizer, learning_rate, eps)
        table, accum = self._shard_map(body, (t_spec, a_spec, spec("batch", 2), spec("batch", 3)),
                                       (t_spec, a_spec))(st.table, st.accum, g_ids, g_grads)
        return emb_lib.EmbeddingState(table=table, accum=accum), jnp.int32(0), jnp.int32(0)

    def _update_sharded(self, i, g, optimizer, learning_rate, eps, table, accum, ids, grads):
        shard, local = self._locate(i, g, ids)

        def apply(st, rows, row_grads):   # rows [N x C] of this block (S: unused slot), grads [N x C, D]
            return optimizers.sparse_update(st, rows, row_grads, optimizer, learning_rate, eps)

        st, stats = exchange.update(apply, emb_lib.EmbeddingState(table=table, accum=accum), shard, local, grads,
                                    g.shards, g.shard_rows, self._capacity(ids), TABLE_AXIS)
        return st.table, st.accum, stats.rounds, stats.overflow_ids

    def _update_replicated(self, i, g, optimizer, learning_rate, eps, table, accum, ids, grads):
        # Every replica applies the same update.  A small group's dense gradient
        # [rows, D] is all-reduced (bytes fixed by the table, not by N); a group
        # larger than the global batch's ids falls back to gathering ids and
        # gradients (N times a device's own; large tables belong in a sharded group).
        rows = ids + jnp.asarray(self._group_offsets[i], jnp.int32)                  # [b, K_g]
        st = emb_lib.EmbeddingState(table=table, accum=accum)
        n_global = rows.size * self.mesh.size
        if g.rows <= n_global:
            d = grads.shape[-1]
            dense = jnp.zeros((g.rows, d), grads.dtype).at[rows.reshape(-1)].add(grads.reshape(-1, d))
            touched = jnp.zeros((g.rows,), jnp.int32).at[rows.reshape(-1)].add(1)
            dense, touched = jax.lax.psum((dense, touched), BATCH_AXES)
            rows = jnp.where(touched > 0, jnp.arange(g.rows, dtype=jnp.int32), g.rows)   # g.rows: dropped
            grads = dense
        else:
            rows = jax.lax.all_gather(rows, BATCH_AXES, axis=0, tiled=True)
            grads = jax.lax.all_gather(grads, BATCH_AXES, axis=0, tiled=True)
        st = optimizers.sparse_update(st, rows, grads, optimizer, learning_rate, eps)
        return st.table, st.accum


    # ------------------------------------------------------------------ multi-hot bags

    def exchange_mode(self, i: int, batch_size: int) -> str:
        """How group i exchanges a batch's bags: "pooled" (owner-side partial pooling, pooled.py), "rows"
        (one row per unique id, exchange.py; pooled locally), or "replicated".  `auto` takes whichever
        all-to-all moves fewer bytes per device, a static choice from the shapes."""
        g = self.placement.groups[i]
        if g.shards == 1:
            return "replicated"
        if self.bag_exchange != "auto":
            return self.bag_exchange
        if not g.interleaved:   # whole tables per block: a bag's entries all go to one owner, which the
            return "rows"       # capacities (sized for ids spread over every owner) do not expect
        n, b, d = self.mesh.size, batch_size // self.mesh.size, self.dim
        sizes = np.bincount(self._column_feature[i])
        per_id = 2 * n * exchange.capacity(b * int(sizes.sum()), n, self.headroom) * (4 + 4 * d)
        return "pooled" if pooled.bytes_per_step(b, sizes, n, d) < per_id else "rows"

    def lookup_bags(self, tables, ids: jax.Array) -> jax.Array:
        """tables, ids [B, K] -> the bags pooled per feature [B, F, D] (sum, or mean), batch-sharded."""
        parts = []
        for i, (g, table) in enumerate(zip(self.placement.groups, placement_lib.as_groups(tables))):
            g_ids = self._columns(i, ids)
            if self.exchange_mode(i, ids.shape[0]) == "pooled":
                body = partial(self._lookup_pooled, i, g)
                parts.append(self._shard_map(body, (self._specs(g)[0], spec("batch", 2)), spec("batch", 3))(
                    table, g_ids))
                continue
            rows = self._lookup_group(i, g, table, g_ids) * jnp.asarray(self._column_weight[i])[None, :, None]
            parts.append(jax.ops.segment_sum(rows.swapaxes(0, 1), self._column_feature[i],
                                             num_segments=len(self._group_features[i])).swapaxes(0, 1))
        out = parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=1)
        return out if len(parts) == 1 and np.all(self._feature_inverse == np.arange(out.shape[1])) \
            else jnp.take(out, self._feature_inverse, axis=1)

    def update_bags(self, emb, ids: jax.Array, grads: jax.Array, optimizer: str, learning_rate, eps: float = 1e-8):
        """`update` from the gradients of the pooled bags [B, F, D]: each column's row gets its feature's
        gradient times its weight (1, or 1 / k for mean), as differentiating the pooling gives."""
        out, rounds, overflow = [], jnp.int32(0), jnp.int32(0)
        for i, (g, st) in enumerate(zip(self.placement.groups, placement_lib.as_groups(emb))):
            g_ids = self._columns(i, ids)
            g_pooled = jnp.take(grads, self._group_features[i], axis=1)                   # [B, F_g, D]
            if self.exchange_mode(i, ids.shape[0]) == "pooled":
                t_spec, a_spec = self._specs(g)
                body = partial(self._update_pooled, i, g, optimizer, learning_rate, eps)
                table, accum, r, o = self._shard_map(
                    body, (t_spec, a_spec, spec("batch", 2), spec("batch", 3)),
                    (t_spec, a_spec, P(), P()))(st.table, st.accum, g_ids, g_pooled)
                st = emb_lib.EmbeddingState(table=table, accum=accum)
            else:
                g_cols = jnp.take(g_pooled, self._column_feature[i], axis=1) * \
                    jnp.asarray(self._column_weight[i])[None, :, None]
                st, r, o = self._update_group(i, g, st, g_ids, g_cols, optimizer, learning_rate, eps)
            out.append(st)
            rounds, overflow = jnp.maximum(rounds, r), overflow + o
        return placement_lib.from_groups(out), {"exchange_rounds": rounds, "exchange_overflow_ids": overflow}

    def _bag_entries(self, i, g, ids):
        """ids [b, K_g] -> (owner, row, bag, weight) [b, K_g] of the device's bag entries, (Ce, Cu), bags."""
        shard, local = self._locate(i, g, ids)
        f_g = len(self._group_features[i])
        bag = jnp.arange(ids.shape[0], dtype=jnp.int32)[:, None] * f_g + jnp.asarray(self._column_feature[i])
        weight = jnp.broadcast_to(jnp.asarray(self._column_weight[i]), ids.shape)
        caps = pooled.capacities(ids.shape[0], np.bincount(self._column_feature[i]), g.shards)
        return (shard, local, bag, weight), caps, ids.shape[0] * f_g

    def _lookup_pooled(self, i, g, table, ids):                  # [S, D], [b, K_g] -> [b, F_g, D]
        entries, (ce, cu), nb = self._bag_entries(i, g, ids)
        out, _ = pooled.lookup(table, *entries, nb, g.shards, ce, cu, TABLE_AXIS)
        return out.reshape(ids.shape[0], -1, table.shape[-1])

    def _update_pooled(self, i, g, optimizer, learning_rate, eps, table, accum, ids, grads):  # grads [b, F_g, D]
        entries, (ce, cu), nb = self._bag_entries(i, g, ids)

        def apply(st, rows, row_grads):   # rows [N x Ce] of this block (S: unused slot), grads [N x Ce, D]
            return optimizers.sparse_update(st, rows, row_grads, optimizer, learning_rate, eps)

        st, stats = pooled.update(apply, emb_lib.EmbeddingState(table=table, accum=accum), *entries,
                                  grads.reshape(nb, -1), g.shards, g.shard_rows, ce, cu, TABLE_AXIS)
        return st.table, st.accum, stats.rounds, stats.overflow_ids


def split_offsets(g: placement_lib.TableGroup, offsets=None) -> tuple[np.ndarray, np.ndarray]:
    """(offset // S, offset % S) of the group's features (or of the given per-column offsets)."""
    offsets = np.asarray(g.offsets if offsets is None else offsets, np.int64)
    return offsets // g.shard_rows, offsets % g.shard_rows
