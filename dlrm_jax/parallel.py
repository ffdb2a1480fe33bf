"""The device mesh, the rules table, and the sharded sparse arch.

Model code names tensor roles; `RULES` maps each role to mesh axes (MaxText's
logical axis rules, in small).  The mesh has two axes:

    data   data parallelism: replicas of the tables
    model  model parallelism: row blocks of the sharded table groups

The batch is split over *both* axes (every device runs the dense arch on
B / devices examples), dense params are replicated (their gradient all-reduce
comes from jit's sharding propagation), and each table group
(dlrm_jax/placement.py) is replicated or row-sharded over `model`.

Collectives of a row- (or table-) sharded group, per step, with M = mesh.model:

    lookup   all-gather ids over `model`          [B/N, F_g] -> [B/data, F_g]
             each device gathers the ids it owns (others give zero rows)
             psum-scatter over `model` on batch   [B/data, F_g, D] -> [B/N, F_g, D]
    update   all-gather ids and row gradients over (data, model)  [B, F_g(, D)]
             each device applies the sparse optimizer to its own rows

A table is never gathered: only ids and [B, F, D] row gradients move.  A
replicated group looks up locally and all-gathers ids and gradients so every
replica applies the same update.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from dlrm_jax import distributed, embedding as emb_lib, placement as placement_lib, step as step_lib
from dlrm_jax.errors import UserError

AXES = ("data", "model")

# Tensor role -> mesh axes of its leading dimension (None: replicated).
RULES: dict[str, str | tuple[str, ...] | None] = {
    "batch": ("data", "model"),     # examples [B, ...]
    "table_rows": "model",          # rows of a sharded table group [rows, ...]
    "replicated_table": None,       # small tables, every device
    "dense_param": None,            # MLP weights and their optimizer state
    "scalar": None,                 # step counter
    "host_output": None,            # loss, eval logits: every host reads them whole
}


def spec(role: str, ndim: int = 1) -> P:
    """PartitionSpec of a tensor with `ndim` dims whose leading dim plays `role`."""
    return P(RULES[role], *([None] * (ndim - 1))) if ndim else P()


def mesh_shape(mesh_cfg, num_devices: int) -> tuple[int, int]:
    """(data, model) with -1 filled; UserError when the devices cannot be split so."""
    data, model = mesh_cfg.data, mesh_cfg.model
    if data == -1 or model == -1:
        fixed, name = (model, "mesh.model") if data == -1 else (data, "mesh.data")
        if num_devices % fixed:
            raise UserError(f"{name}={fixed} does not divide the {num_devices} devices")
        data, model = (num_devices // fixed, model) if data == -1 else (data, num_devices // fixed)
    if data * model > num_devices:
        raise UserError(f"mesh.data={data} x mesh.model={model} needs {data * model} devices; "
                        f"{num_devices} are available")
    return data, model


def make_mesh(mesh_cfg, devices=None) -> jax.sharding.Mesh:
    """The (data, model) mesh; a mesh smaller than the devices uses the first ones (one process only)."""
    devices = list(jax.devices() if devices is None else devices)
    data, model = mesh_shape(mesh_cfg, len(devices))
    if data * model < len(devices) and jax.process_count() > 1:
        raise UserError(f"mesh.data={data} x mesh.model={model} leaves devices idle; with several "
                        f"processes the mesh must use all {len(devices)} devices")
    auto = (jax.sharding.AxisType.Auto,) * 2
    return jax.make_mesh((data, model), AXES, axis_types=auto, devices=devices[:data * model])


def _locate(ids, div: np.ndarray, mod: np.ndarray, shard_rows: int):
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
    """`lookup` and `update` for `make_train_step(lookup=..., update=...)` on a mesh.

    ids are per feature ([B, F], `Placement.global_ids`), tables the
    placement's groups (`placement.init_embedding`).  A group with shards > 1
    is row-sharded over `model`; with 1 it is replicated.
    """

    def __init__(self, mesh: jax.sharding.Mesh, placement: placement_lib.Placement, optimizer: str):
        self.mesh, self.placement, self.optimizer = mesh, placement, optimizer
        order = np.concatenate([g.features for g in placement.groups])
        self._inverse = np.argsort(order)   # group-concatenated feature order -> feature order
        self._identity = bool(np.all(order == np.arange(len(order))))
        self._batch = RULES["batch"]

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
        for g, table in zip(self.placement.groups, placement_lib.as_groups(tables)):
            g_ids = self._columns(g, ids)                                           # [B, F_g]
            body = partial(self._lookup_sharded if g.shards > 1 else self._lookup_replicated, g)
            parts.append(self._shard_map(body, (self._specs(g)[0], spec("batch", 2)), spec("batch", 3))(table, g_ids))
        rows = parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=1)
        return rows if self._identity else jnp.take(rows, self._inverse, axis=1)

    @staticmethod
    def _lookup_replicated(g, table, ids):                      # [rows, D], [b, F_g]
        return jnp.take(table, ids + jnp.asarray(g.offsets, jnp.int32), axis=0)

    def _lookup_sharded(self, g, table, ids):                   # [S, D], [b, F_g] -> [b, F_g, D]
        s = g.shard_rows
        ids = jax.lax.all_gather(ids, "model", axis=0, tiled=True)                 # [b * M, F_g]
        shard, local = _locate(ids, *_split_offsets(g), s)
        local = jnp.where(shard == jax.lax.axis_index("model"), local, s)         # s: not here
        rows = jnp.take(table, local, axis=0, mode="fill", fill_value=0)           # [b * M, F_g, D]
        # Exactly one device contributes each row (others add zeros), so the sum is exact.
        return jax.lax.psum_scatter(rows, "model", scatter_dimension=0, tiled=True)

    # ------------------------------------------------------------------ update

    def update(self, emb, ids: jax.Array, grads: jax.Array, optimizer: str, learning_rate, eps: float = 1e-8):
        """The sparse optimizer on each group's own rows; ids [B, F], grads [B, F, D] (batch-sharded)."""
        out = []
        for g, st in zip(self.placement.groups, placement_lib.as_groups(emb)):
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
        ids = jax.lax.all_gather(ids, self._batch, axis=0, tiled=True)
        grads = jax.lax.all_gather(grads, self._batch, axis=0, tiled=True)
        if g.shards > 1:
            shard, local = _locate(ids, *_split_offsets(g), g.shard_rows)
            rows = jnp.where(shard == jax.lax.axis_index("model"), local, g.shard_rows)  # others: dropped
        else:
            rows = ids + jnp.asarray(g.offsets, jnp.int32)
        st = emb_lib.sparse_update(emb_lib.EmbeddingState(table=table, accum=accum), rows, grads,
                                   optimizer, learning_rate, eps)
        return st.table, st.accum


def _split_offsets(g: placement_lib.TableGroup) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.asarray(g.offsets, np.int64)
    return offsets // g.shard_rows, offsets % g.shard_rows


# --------------------------------------------------------------------------- the train loop's view

@dataclass
class Parallel:
    """How the train loop and the bench run on the devices: one device, or a mesh.

    `init(seed)` gives the state already sharded (its shardings come from
    `jax.eval_shape` before anything is allocated), `train_step` and `predict`
    are jitted with those shardings, `put_batch` turns this host's slice of a
    global batch into global arrays.  On one device all of it is the plain
    single-device code (no mesh, no collectives).
    """
    mesh: jax.sharding.Mesh | None
    placement: placement_lib.Placement | None   # None: the single-device layout
    init: Callable[[int], Any]                  # seed -> TrainState (jitted on a mesh)
    train_step: Callable                        # jitted (state, dense, sparse, labels) -> (state, loss)
    predict: Callable                           # (params, tables, dense, sparse) -> logits [B] (numpy in)
    put_batch: Callable                         # Batch -> (dense, sparse, labels) for train_step
    eval_multiple: int                          # eval chunks are padded to a multiple of this
    layout: dict                                # the embedding layout a checkpoint records
    abstract_state: Any                         # ShapeDtypeStructs (with shardings) of the state

    @property
    def devices(self) -> int:
        return 1 if self.mesh is None else self.mesh.size


def parallelize(cfg, model, tx, layout: emb_lib.EmbeddingLayout, devices=None) -> Parallel:
    """The mesh, placement and jitted steps of `cfg`; a mesh or placement that cannot work
    raises UserError here, before anything is compiled."""
    e = cfg.embedding
    num_devices = len(jax.devices() if devices is None else devices)
    data, model_axis = mesh_shape(cfg.mesh, num_devices)
    if data * model_axis == 1:
        return _single_device(cfg, model, tx, layout)
    mesh = make_mesh(cfg.mesh, devices)
    n = mesh.size
    if cfg.train.batch_size % n:
        raise UserError(f"train.batch_size={cfg.train.batch_size} is not divisible by the {n} devices of the "
                        f"mesh (mesh.data={data} x mesh.model={model_axis})")
    pl = placement_lib.plan(e.sharding, layout.rows, layout.dim, model_axis, e.replicate_below_rows)
    sharded = ShardedEmbedding(mesh, pl, e.optimizer)

    def init_state(key):
        return step_lib.init_state(key, model, tx, pl, e, init_embedding=placement_lib.init_embedding)

    def named(role, ndim):
        return NamedSharding(mesh, spec(role, ndim))

    abstract = jax.eval_shape(init_state, jax.random.PRNGKey(0))
    state_sh = step_lib.TrainState(step=named("scalar", 0),
                                   params=jax.tree.map(lambda x: named("dense_param", x.ndim), abstract.params),
                                   opt_state=jax.tree.map(lambda x: named("dense_param", x.ndim), abstract.opt_state),
                                   emb=sharded.shardings())
    batch_sh = tuple(named("batch", nd) for nd in (2, 2, 1))                # dense, sparse, labels

    # The key is made inside from the (replicated) seed: no host array is placed on the mesh.
    init = jax.jit(lambda seed: init_state(jax.random.PRNGKey(seed)), out_shardings=state_sh)

    train_step = jax.jit(step_lib.make_train_step(model, tx, pl, e, lookup=sharded.lookup, update=sharded.update),
                         in_shardings=(state_sh, *batch_sh), out_shardings=(state_sh, named("host_output", 0)),
                         donate_argnums=0)
    predict_jit = jax.jit(step_lib.make_predict(model, pl, lookup=sharded.lookup),
                          in_shardings=(state_sh.params, state_sh.emb.table, batch_sh[0], batch_sh[1]),
                          out_shardings=named("host_output", 1))

    def predict(params, tables, dense, sparse):
        return predict_jit(params, tables, *(distributed.replicated_input(x, s)
                                             for x, s in zip((dense, sparse), batch_sh)))

    def put_batch(batch):
        return tuple(distributed.global_batch(x, s) for x, s in zip(batch, batch_sh))

    abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, state_sh)
    return Parallel(mesh, pl, init, train_step, predict, put_batch, n, pl.describe(), abstract)


def _single_device(cfg, model, tx, layout) -> Parallel:
    init = jax.jit(lambda key: step_lib.init_state(key, model, tx, layout, cfg.embedding))
    abstract = jax.eval_shape(init, jax.random.PRNGKey(0))
    return Parallel(mesh=None, placement=None,
                    init=lambda seed: init(jax.random.PRNGKey(seed)),
                    train_step=jax.jit(step_lib.make_train_step(model, tx, layout, cfg.embedding), donate_argnums=0),
                    predict=jax.jit(step_lib.make_predict(model, layout)),
                    put_batch=tuple,  # numpy as it comes: jit places it on the one device
                    eval_multiple=1, layout=placement_lib.describe_layout(layout), abstract_state=abstract)
