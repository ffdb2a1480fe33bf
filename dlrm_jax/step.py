"""Train state, the pure train step and the eval forward pass.

Shapes: B batch, F = 26 sparse features, D embed dim, R total table rows.
The functions here are pure; `dlrm_jax/parallel/steps.py` jits them with shardings
and donated state buffers.  The embedding tables are reached only through a
backend's `init`, `lookup` and `update` (`embedding/backend.py` states the
seam), so the same step runs on one device, a mesh or SparseCores.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import struct

from dlrm_jax import schedule
from dlrm_jax.data.base import NUM_DENSE, NUM_SPARSE
from dlrm_jax.embedding import tables as emb_lib
from dlrm_jax.embedding.backend import as_backend

# eps of the dense `adagrad_torch` (torch.optim.Adagrad as the MLPerf DLRMv2 reference sets it).
TORCH_ADAGRAD_EPS = 1e-8


@struct.dataclass
class TrainState:
    step: jax.Array                      # int32 scalar
    params: Any                          # dense (Flax) params: bottom + top MLP
    opt_state: Any                       # optax state of `params`
    emb: emb_lib.EmbeddingState          # tables + sparse optimizer state


def dense_optimizer(train_cfg) -> optax.GradientTransformation:
    """optax optimizer of the dense params with warm-up and decay, keyed by step."""
    steps, warmup = schedule.total_steps(train_cfg), schedule.warmup_steps(train_cfg)
    lr = train_cfg.learning_rate
    if train_cfg.decay == "none":
        after = optax.constant_schedule(lr)
    elif train_cfg.decay == "cosine":
        after = optax.cosine_decay_schedule(lr, max(1, steps - warmup))
    else:
        after = optax.linear_schedule(lr, 0.0, max(1, steps - warmup))
    lr_schedule = optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), after], [warmup]) if warmup else after
    if train_cfg.optimizer == "adagrad_torch":   # PyTorch's Adagrad: eps 1e-8 outside the root, acc from 0
        from dlrm_jax.embedding.optimizers import scale_by_torch_adagrad
        return optax.chain(scale_by_torch_adagrad(0.0, TORCH_ADAGRAD_EPS), optax.scale_by_learning_rate(lr_schedule))
    make = {"adam": optax.adam, "adagrad": optax.adagrad, "sgd": optax.sgd}[train_cfg.optimizer]
    return make(lr_schedule)


def init_state(key: jax.Array, model, tx: optax.GradientTransformation, embedding, emb_cfg) -> TrainState:
    """The initial state; `embedding` is a backend (or an EmbeddingLayout: the single-device one)."""
    backend = as_backend(embedding)
    k_dense, k_emb = jax.random.split(key)
    params = model.init(k_dense, jnp.zeros((1, NUM_DENSE)), jnp.zeros((1, NUM_SPARSE, backend.dim)))["params"]
    emb = backend.init(k_emb, emb_cfg.optimizer, emb_cfg.init_scale, emb_cfg.initial_accumulator)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), emb=emb)


def bce_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return optax.sigmoid_binary_cross_entropy(logits, labels).mean()


def make_train_step(model, tx: optax.GradientTransformation, embedding, emb_cfg, bags=None) -> Callable:
    """(state, dense [B,13], sparse [B,F], labels [B]) -> (state, loss, stats).

    The gradient is taken w.r.t. the dense params and the looked-up rows
    [B, F, D] only; the backend's `update` applies the sparse optimizer to
    touched rows.  `embedding` is a backend (or an EmbeddingLayout: the
    single-device one).  stats: the counters the backend's `update` returns
    with the new state (the sharded one's exchange rounds and overflowed ids;
    {} where a backend has none), which the train loop logs.  With multi-hot `bags`
    (embedding/bags.py) sparse is [B, K] and the rows [B, K, D] are pooled to
    [B, F, D] inside the loss, so each column's row gets its own gradient; a
    backend that pools bags itself (`pools_bags`) gives [B, F, D] and takes
    their gradients.
    """
    backend = as_backend(embedding)
    lookup, update, pool = _bag_path(backend, bags)

    def train_step(state: TrainState, dense, sparse, labels):
        rows = lookup(state.emb.table, sparse)               # [B, F, D] ([B, K, D] multi-hot, pooled later)

        def loss_fn(params, rows):
            return bce_loss(model.apply({"params": params}, dense, pool(rows)), labels)

        loss, (g_params, g_rows) = jax.value_and_grad(loss_fn, argnums=(0, 1))(state.params, rows)
        updates, opt_state = tx.update(g_params, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        emb, stats = update(state.emb, sparse, g_rows, emb_cfg.optimizer, emb_cfg.learning_rate, emb_cfg.eps)
        return TrainState(step=state.step + 1, params=params, opt_state=opt_state, emb=emb), loss, stats

    return train_step


def make_predict(model, embedding, bags=None) -> Callable:
    """(params, table, dense [B,13], sparse [B,F] or [B,K] multi-hot) -> logits [B]."""
    backend = as_backend(embedding)
    lookup, _, pool = _bag_path(backend, bags)

    def predict(params, table, dense, sparse):
        return model.apply({"params": params}, dense, pool(lookup(table, sparse)))

    return predict


def _bag_path(backend, bags):
    """(lookup, update, pool) of the step: a backend that pools bags itself (`pools_bags`, the sharded
    one: owners sum their rows per bag) looks up [B, F, D] and takes their gradients; else the
    step pools the [B, K, D] rows."""
    if bags is not None and getattr(backend, "pools_bags", False):
        return backend.lookup_bags, backend.update_bags, lambda rows: rows
    return backend.lookup, backend.update, (bags.pool if bags is not None else lambda rows: rows)
