"""`parallel.Parallel` for embedding.backend=sparsecore: the mesh, the SparseCore backend, jitted steps.

The same contract as `parallel.parallelize` (state created sharded, jitted
`train_step` / `predict` with explicit shardings and donated state), with two
differences the train loop does not see:

* `put_batch` runs the library's host-side preprocessing (ids to its
  partitioned CSR format, `SparseCoreEmbedding.preprocess`) before placing
  the batch; the train loop maps `put_batch` inside the prefetch thread
  (`data/prefetch.py`), so it overlaps the step instead of running in it;
* `predict` takes eval chunks of any size and runs them in pieces of the
  train batch (the SparseCore feature specs are built for one batch size).

Asked for on devices without SparseCores (CPU, GPU, TPU v5e, v4) or without
jax-tpu-embedding, it raises UserError (exit code 2 at the CLI) before
anything is compiled.
"""
from __future__ import annotations

import itertools

import jax
import numpy as np
from jax.sharding import NamedSharding

from dlrm_jax import step as step_lib
from dlrm_jax.parallel import distributed
from dlrm_jax.embedding.sparsecore import backend as sc_lib
from dlrm_jax.errors import UserError
from dlrm_jax.parallel.mesh import make_mesh, spec


def backend_for(cfg, layout, devices) -> sc_lib.SparseCoreEmbedding:
    """The SparseCore backend of `cfg` over `devices`; UserError where it cannot run."""
    devices = list(devices)
    sparsecores = sc_lib.sparsecores_per_device(devices[0])   # first: CPU/GPU/v5e need no library to be told
    sc_lib.require_library()
    mesh = make_mesh(cfg.mesh, devices)
    if cfg.train.batch_size % mesh.size:
        raise UserError(f"train.batch_size={cfg.train.batch_size} is not divisible by the {mesh.size} devices")
    local = sum(1 for d in mesh.devices.flat if d.process_index == jax.process_index())
    return sc_lib.SparseCoreEmbedding(mesh, layout.rows, layout.dim, cfg.embedding, cfg.train.batch_size,
                                      sparsecores, local_devices=local)


def parallelize_sparsecore(cfg, model, tx, layout, devices=None):
    from dlrm_jax.parallel.steps import Parallel
    e = cfg.embedding
    backend = backend_for(cfg, layout, jax.devices() if devices is None else devices)
    mesh = backend.mesh

    def named(role, ndim):
        return NamedSharding(mesh, spec(role, ndim))

    def init_state(key):
        return step_lib.init_state(key, model, tx, backend, e)

    abstract = jax.eval_shape(init_state, jax.random.PRNGKey(0))
    state_sh = step_lib.TrainState(step=named("scalar", 0),
                                   params=jax.tree.map(lambda x: named("dense_param", x.ndim), abstract.params),
                                   opt_state=jax.tree.map(lambda x: named("dense_param", x.ndim), abstract.opt_state),
                                   emb=backend.shardings())
    ids_sh = backend.batch_shardings()
    batch_sh = (named("batch", 2), ids_sh, named("batch", 1))               # dense, ids, labels
    init = jax.jit(lambda seed: init_state(jax.random.PRNGKey(seed)), out_shardings=state_sh)

    step_fn = step_lib.make_train_step(model, tx, backend, e)
    abstract_state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, state_sh)
    b = cfg.train.batch_size
    abstract_batch = (jax.ShapeDtypeStruct((b, 13), np.float32, sharding=batch_sh[0]), backend.abstract_batch(),
                      jax.ShapeDtypeStruct((b,), np.float32, sharding=batch_sh[2]))
    # (state, loss) or (state, loss, stats): whatever the step returns, everything after the
    # state is a small host output.
    outputs = jax.eval_shape(step_fn, abstract_state, *abstract_batch)
    out_sh = (state_sh, *jax.tree.map(lambda x: named("host_output", 0), tuple(outputs[1:])))
    train_step = jax.jit(step_fn, in_shardings=(state_sh, *batch_sh), out_shardings=out_sh, donate_argnums=0)
    forward = jax.jit(step_lib.make_predict(model, backend),
                      in_shardings=(state_sh.params, state_sh.emb.table, batch_sh[0], ids_sh),
                      out_shardings=named("host_output", 1))
    counter = itertools.count(1)
    hosts, host = jax.process_count(), jax.process_index()

    def place(x, sharding):
        return distributed.global_batch(np.asarray(x), sharding)

    def put_ids(sparse_host: np.ndarray):
        ids = backend.preprocess(sparse_host, batch_number=next(counter))
        return jax.tree.map(place, ids, ids_sh)

    def put_batch(batch):
        dense, sparse, labels = batch
        return place(dense, batch_sh[0]), put_ids(sparse), place(labels, batch_sh[2])

    def predict(params, tables, dense, sparse):
        """Eval chunk [n, ...] (every host holds all of it) -> logits [n], in pieces of the train batch."""
        n, out = len(dense), []
        for lo in range(0, n, b):
            d, s = dense[lo:lo + b], sparse[lo:lo + b]
            pad = b - len(d)
            if pad:
                d = np.concatenate([d, np.zeros((pad, d.shape[1]), d.dtype)])
                s = np.concatenate([s, np.zeros((pad, s.shape[1]), s.dtype)])
            rows = slice(host * b // hosts, (host + 1) * b // hosts)                # this host's part
            logits = forward(params, tables, place(d[rows], batch_sh[0]), put_ids(s[rows]))
            out.append(np.asarray(logits)[:b - pad])
        return np.concatenate(out)

    return Parallel(mesh, None, init, train_step, predict, put_batch, 1, backend.describe(), abstract_state,
                    abstract_batch)
