"""The train loop's view of the devices: jitted steps with explicit shardings.

`parallelize` turns a config, a model and its optimizer into a `Parallel`:
the mesh (`mesh.py`), the embedding backend (`embedding/single_device.py` or
`embedding/sharded.py` over a placement), the state created already sharded
(`jax.eval_shape` -> shardings -> `jit(init)`), and `train_step` / `predict`
jitted with those shardings and donated state buffers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import jax
from jax.sharding import NamedSharding

from dlrm_jax import step as step_lib
from dlrm_jax.parallel import distributed
from dlrm_jax.embedding import bags as bags_lib, placement as placement_lib, tables as emb_lib
from dlrm_jax.embedding.sharded import ShardedEmbedding
from dlrm_jax.embedding.single_device import SingleDeviceEmbedding
from dlrm_jax.errors import UserError
from dlrm_jax.parallel.mesh import make_mesh, mesh_shape, spec


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
    train_step: Callable                        # jitted (state, dense, sparse, labels) -> (state, loss, stats)
    predict: Callable                           # (params, tables, dense, sparse) -> logits [B] (numpy in)
    put_batch: Callable                         # Batch -> (dense, sparse, labels) for train_step
    eval_multiple: int                          # eval chunks are padded to a multiple of this
    layout: dict                                # the embedding layout a checkpoint records
    abstract_state: Any                         # ShapeDtypeStructs (with shardings) of the state
    abstract_batch: Any = None                  # (dense, ids, labels) ShapeDtypeStructs where ids are not [B, F]

    @property
    def devices(self) -> int:
        return 1 if self.mesh is None else self.mesh.size


def parallelize(cfg, model, tx, layout: emb_lib.EmbeddingLayout, devices=None) -> Parallel:
    """The mesh, placement and jitted steps of `cfg`; a mesh or placement that cannot work
    raises UserError here, before anything is compiled."""
    e = cfg.embedding
    if e.backend == "sparsecore":  # TPU SparseCores through jax-tpu-embedding (an optional extra)
        from dlrm_jax.embedding.sparsecore.parallel import parallelize_sparsecore
        return parallelize_sparsecore(cfg, model, tx, layout, devices)
    num_devices = len(jax.devices() if devices is None else devices)
    data, model_axis = mesh_shape(cfg.mesh, num_devices)
    if data * model_axis == 1:
        return _single_device(cfg, model, tx, layout)
    mesh = make_mesh(cfg.mesh, devices)
    n = mesh.size
    if cfg.train.batch_size % n:
        raise UserError(f"train.batch_size={cfg.train.batch_size} is not divisible by the {n} devices of the "
                        f"mesh (mesh.data={data} x mesh.model={model_axis})")
    # Sharded groups split over every device (mesh.py), so the placement plans n blocks.
    pl = placement_lib.plan(e.sharding, layout.rows, layout.dim, n, e.replicate_below_rows)
    bags = bags_lib.from_config(cfg.model, len(layout.rows))
    sharded = ShardedEmbedding(mesh, pl, e.optimizer, headroom=e.exchange_headroom,
                               columns=None if bags is None else bags.columns)

    def init_state(key):
        return step_lib.init_state(key, model, tx, sharded, e)

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

    train_step = jax.jit(step_lib.make_train_step(model, tx, sharded, e, bags),
                         in_shardings=(state_sh, *batch_sh),
                         out_shardings=(state_sh, named("host_output", 0), named("host_output", 0)),
                         donate_argnums=0)
    predict_jit = jax.jit(step_lib.make_predict(model, sharded, bags),
                          in_shardings=(state_sh.params, state_sh.emb.table, batch_sh[0], batch_sh[1]),
                          out_shardings=named("host_output", 1))

    def predict(params, tables, dense, sparse):
        return predict_jit(params, tables, *(distributed.replicated_input(x, s)
                                             for x, s in zip((dense, sparse), batch_sh)))

    def put_batch(batch):
        return tuple(distributed.global_batch(x, s) for x, s in zip(batch, batch_sh))

    abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, state_sh)
    return Parallel(mesh, pl, init, train_step, predict, put_batch, n, sharded.describe(), abstract)


def _single_device(cfg, model, tx, layout) -> Parallel:
    bags = bags_lib.from_config(cfg.model, len(layout.rows))
    backend = SingleDeviceEmbedding(layout, None if bags is None else bags.columns)
    init = jax.jit(lambda key: step_lib.init_state(key, model, tx, backend, cfg.embedding))
    abstract = jax.eval_shape(init, jax.random.PRNGKey(0))
    return Parallel(mesh=None, placement=None,
                    init=lambda seed: init(jax.random.PRNGKey(seed)),
                    train_step=jax.jit(step_lib.make_train_step(model, tx, backend, cfg.embedding, bags),
                                       donate_argnums=0),
                    predict=jax.jit(step_lib.make_predict(model, backend, bags)),
                    put_batch=tuple,  # numpy as it comes: jit places it on the one device
                    eval_multiple=1, layout=backend.describe(), abstract_state=abstract)
