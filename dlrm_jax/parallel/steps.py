"""The train loop's view of the devices: jitted steps with explicit shardings.

`parallelize` turns a config, a model and its optimizer into a `Parallel`:
the embedding backend (`embedding.backend.make_backend`: single-device,
sharded over a mesh, or SparseCores), the state created already sharded
(`jax.eval_shape` -> shardings -> `jit(init)`), and `train_step` / `predict`
jitted with those shardings and donated state buffers.  It is one path for
every backend: what differs between them (shardings, batch placement, a fixed
predict batch) is asked of the backend's `EmbeddingBackend` seam.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import jax
import numpy as np

from dlrm_jax import step as step_lib
from dlrm_jax.embedding import bags as bags_lib, placement as placement_lib, tables as emb_lib
from dlrm_jax.embedding.backend import EmbeddingBackend, make_backend


@dataclass
class Parallel:
    """How the train loop and the bench run on the devices: one device, a mesh, or SparseCores.

    `init(seed)` gives the state already sharded (its shardings come from
    `jax.eval_shape` before anything is allocated), `train_step` and `predict`
    are jitted with those shardings, `put_batch` turns this host's slice of a
    global batch into what `train_step` takes.
    """
    mesh: jax.sharding.Mesh | None
    placement: placement_lib.Placement | None   # None: not table groups on a mesh (one device, SparseCores)
    init: Callable[[int], Any]                  # seed -> TrainState (jitted)
    train_step: Callable                        # jitted (state, dense, ids, labels) -> (state, loss, stats)
    predict: Callable                           # (params, tables, dense, sparse) -> logits [B] (numpy in)
    put_batch: Callable                         # Batch -> (dense, ids, labels) for train_step
    eval_multiple: int                          # eval chunks are padded to a multiple of this
    layout: dict                                # the embedding layout a checkpoint records
    abstract_state: Any                         # ShapeDtypeStructs (with shardings) of the state
    abstract_batch: Any = None                  # (dense, ids, labels) ShapeDtypeStructs of a train batch
    backend: EmbeddingBackend | None = None     # the embedding backend all of the above asks

    @property
    def devices(self) -> int:
        return 1 if self.mesh is None else self.mesh.size


def parallelize(cfg, model, tx, layout: emb_lib.EmbeddingLayout, devices=None) -> Parallel:
    """The backend and jitted steps of `cfg`; a mesh, placement or backend that cannot work
    raises UserError here, before anything is compiled."""
    e = cfg.embedding
    backend = make_backend(cfg, layout, devices)
    bags = bags_lib.from_config(cfg.model, len(layout.rows))
    named = backend.sharding

    def init_state(key):
        return step_lib.init_state(key, model, tx, backend, e)

    abstract = jax.eval_shape(init_state, jax.random.PRNGKey(0))
    state_sh = step_lib.TrainState(step=named("scalar", 0),
                                   params=jax.tree.map(lambda x: named("dense_param", x.ndim), abstract.params),
                                   opt_state=jax.tree.map(lambda x: named("dense_param", x.ndim), abstract.opt_state),
                                   emb=backend.shardings())
    batch_sh = backend.batch_shardings()                                    # dense, ids, labels
    host = named("host_output", 0)

    # The key is made inside from the (replicated) seed: no host array is placed on the mesh.
    init = jax.jit(lambda seed: init_state(jax.random.PRNGKey(seed)), out_shardings=state_sh)
    # The loss and every counter of the step's stats are small outputs every host reads.
    train_step = jax.jit(step_lib.make_train_step(model, tx, backend, e, bags),
                         in_shardings=(state_sh, *batch_sh), out_shardings=(state_sh, host, host),
                         donate_argnums=0)
    forward = jax.jit(step_lib.make_predict(model, backend, bags),
                      in_shardings=(state_sh.params, state_sh.emb.table, batch_sh[0], batch_sh[1]),
                      out_shardings=named("host_output", 1))
    abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, state_sh)
    return Parallel(backend.mesh, backend.placement, init, train_step, _predict(backend, forward), backend.put_batch,
                    backend.eval_multiple, backend.describe(), abstract, backend.abstract_batch(cfg.train.batch_size),
                    backend)


def _predict(backend: EmbeddingBackend, forward: Callable) -> Callable:
    """predict(params, tables, dense [n, 13], sparse [n, K]) of an eval chunk every host holds whole.

    A backend whose predict takes a fixed batch (`eval_batch`: SparseCore feature
    specs are built for one batch size) gets the chunk in pieces of that size, the
    last one padded with zero rows whose logits are dropped."""
    b = backend.eval_batch
    if b is None:
        return lambda params, tables, dense, sparse: forward(params, tables, *backend.put_eval(dense, sparse))

    def predict(params, tables, dense, sparse):
        out = []
        for lo in range(0, len(dense), b):
            d, s = np.asarray(dense[lo:lo + b]), np.asarray(sparse[lo:lo + b])
            pad = b - len(d)
            if pad:
                d = np.concatenate([d, np.zeros((pad, *d.shape[1:]), d.dtype)])
                s = np.concatenate([s, np.zeros((pad, *s.shape[1:]), s.dtype)])
            out.append(np.asarray(forward(params, tables, *backend.put_eval(d, s)))[:b - pad])
        return np.concatenate(out)

    return predict
