"""Sparse optimizers: the rows a batch touched, and only those, are updated.

Why not `jax.grad` through `jnp.take` and optax: that gradient is a dense
[R, D] array and the optimizer then touches every row every step.  At paper
scale (1e8 to 1e11 rows) that is the whole cost (docs/DESIGN.md section 2.2).
Instead the train step differentiates w.r.t. the looked-up rows [B, F, D];
`sparse_update` sums the gradients of duplicate ids per unique row and applies
the optimizer to those rows only:

    sgd              w -= lr * g
    adagrad          a += g**2              w -= lr * g / sqrt(a + eps)   (a: [R, D])
    rowwise_adagrad  a += mean(g**2 over D) w -= lr * g / sqrt(a + eps)   (a: [R], FBGEMM / reference DLRM)

where g is the summed gradient of a row over the batch.  `adagrad_torch` and
`rowwise_adagrad_torch` are the same with PyTorch's / FBGEMM's placement of eps,
w -= lr * g / (sqrt(a) + eps) (torch.optim.Adagrad, FBGEMM EXACT_ROWWISE_ADAGRAD,
as the MLPerf DLRMv2 reference trains); kept distinct so existing runs are unchanged.  These equal the dense
optax updates on the full table exactly (rows with no gradient do not move),
which tests/embedding/test_embedding.py checks; `dense_reference` is that optax
transformation.

`sparse_update` takes `row_start` and drops ids outside [row_start, row_start +
local rows), so a row-sharded table applies it unchanged to its own shard.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from dlrm_jax.embedding.support import OPTIMIZERS
from dlrm_jax.embedding.tables import EmbeddingState

# Duplicate ids are found through a [rows] int32 buffer holding each row's first
# position in the batch when the table (or shard) has at most this many rows per
# looked-up id; larger tables sort the ids instead.  On CPU at B=2048, F=26 and
# 207k rows: first-position update 1.9 ms, sort-based 12.4 ms (XLA's sort of the
# 53k ids alone is ~8 ms).  The buffer costs 4 bytes per row per step, so at
# 10^8 rows per device the sort wins.  Both give identical results.
FIRST_POSITION_ROWS_PER_ID = 64


def dedup_gradients(ids: jax.Array, grads: jax.Array, num_rows: int, row_start: int | jax.Array = 0):
    """Sum the gradients of duplicate ids.

    ids [...] global rows, grads [..., D] -> (unique local rows [N], summed grads [N, D])
    with N = ids.size; unused slots and ids outside [row_start, row_start + num_rows)
    hold the sentinel `num_rows` (out of range, so scatters with mode="drop" skip them).
    """
    flat = _local_ids(ids, num_rows, row_start)
    n = flat.shape[0]
    g = grads.reshape(n, -1)
    if num_rows <= FIRST_POSITION_ROWS_PER_ID * n:
        # Each row is represented by its first occurrence: slot[i] = first position
        # of flat[i]'s row; gradients are summed into those slots.
        position = jnp.arange(n, dtype=jnp.int32)
        first = jnp.full((num_rows,), n, jnp.int32).at[flat].min(position, mode="drop")
        slot = first.at[flat].get(mode="fill", fill_value=0)   # sentinel ids: any slot, then dropped
        valid = flat < num_rows
        summed = jnp.zeros_like(g).at[jnp.where(valid, slot, n)].add(g, mode="drop")
        return jnp.where(valid & (slot == position), flat, num_rows), summed
    uniq, inv = jnp.unique(flat, size=n, return_inverse=True, fill_value=num_rows)
    summed = jax.ops.segment_sum(g, inv.reshape(-1), num_segments=n)
    return uniq, summed


def _local_ids(ids: jax.Array, num_rows: int, row_start) -> jax.Array:
    flat = ids.reshape(-1) - row_start
    return jnp.where((flat >= 0) & (flat < num_rows), flat, num_rows)


def _adagrad_step(acc, g, eps, rowwise: bool, torch_eps: bool = False):
    """(new accumulator, g / sqrt(acc + eps)), or g / (sqrt(acc) + eps) with torch_eps;
    rows with acc == 0 (no gradient yet) move by 0."""
    acc = acc + (jnp.mean(g * g, axis=-1) if rowwise else g * g)
    scale = jnp.where(acc > 0, 1.0 / (jnp.sqrt(acc) + eps) if torch_eps else jax.lax.rsqrt(acc + eps), 0.0)
    return acc, g * (scale[..., None] if rowwise else scale)


def sparse_update(state: EmbeddingState, ids: jax.Array, grads: jax.Array, optimizer: str,
                  learning_rate: float | jax.Array, eps: float = 1e-8,
                  row_start: int | jax.Array = 0) -> EmbeddingState:
    """Apply `optimizer` to the rows in `ids` only (see the module docstring)."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown embedding optimizer {optimizer!r}")
    num_rows = state.table.shape[0]
    grads = grads.astype(state.table.dtype)
    if optimizer == "sgd":
        # Plain SGD is linear in g: scatter-adding per-occurrence gradients equals
        # summing per row first, so no deduplication is needed.
        local = _local_ids(ids, num_rows, row_start)
        g = grads.reshape(local.shape[0], -1)
        return state.replace(table=state.table.at[local].add(-learning_rate * g, mode="drop"))
    uniq, g = dedup_gradients(ids, grads, num_rows, row_start)
    rowwise = optimizer.startswith("rowwise_adagrad")
    acc, step = _adagrad_step(state.accum.at[uniq].get(mode="fill", fill_value=0.0), g, eps, rowwise,
                              torch_eps=optimizer.endswith("_torch"))
    accum = state.accum.at[uniq].set(acc, mode="drop")
    table = state.table.at[uniq].add(-learning_rate * step, mode="drop")
    return EmbeddingState(table=table, accum=accum)


def dense_reference(optimizer: str, learning_rate: float, eps: float = 1e-8,
                    initial_accumulator: float = 0.0) -> optax.GradientTransformation:
    """The same optimizer as an optax transformation on the full [R, D] table.

    Used as the reference the sparse path must match, and by `bench --dense-embedding`
    to measure what the sparse path saves.
    """
    if optimizer == "sgd":
        return optax.sgd(learning_rate)
    if optimizer == "adagrad":
        return optax.adagrad(learning_rate, initial_accumulator_value=initial_accumulator, eps=eps)
    if optimizer == "rowwise_adagrad":
        return optax.chain(_scale_by_rowwise_rss(initial_accumulator, eps), optax.scale(-learning_rate))
    if optimizer in ("adagrad_torch", "rowwise_adagrad_torch"):
        return optax.chain(scale_by_torch_adagrad(initial_accumulator, eps, rowwise=optimizer.startswith("rowwise")),
                           optax.scale(-learning_rate))
    raise ValueError(f"unknown embedding optimizer {optimizer!r}")


def _scale_by_rowwise_rss(initial_accumulator: float, eps: float) -> optax.GradientTransformation:
    def init(params):
        return jax.tree.map(lambda p: jnp.full(p.shape[:-1], initial_accumulator, p.dtype), params)

    def update(updates, state, params=None):
        state = jax.tree.map(lambda a, g: a + jnp.mean(g * g, axis=-1), state, updates)
        updates = jax.tree.map(lambda g, a: g * jnp.where(a > 0, jax.lax.rsqrt(a + eps), 0.0)[..., None],
                               updates, state)
        return updates, state

    return optax.GradientTransformation(init, update)


def scale_by_torch_adagrad(initial_accumulator: float = 0.0, eps: float = 1e-8,
                           rowwise: bool = False) -> optax.GradientTransformation:
    """Adagrad's scaling as torch.optim.Adagrad (elementwise) and FBGEMM's exact row-wise
    Adagrad compute it: a += g**2 (row-wise: its mean over D), g / (sqrt(a) + eps).

    optax.adagrad instead divides by sqrt(a + eps) and starts a at 0.1; with eps 1e-8
    the two differ while a is small (the first steps of rarely seen rows).  The dense
    optimizer `adagrad_torch` (step.py) is this followed by the learning rate.
    """
    def init(params):
        return jax.tree.map(lambda p: jnp.full(p.shape[:-1] if rowwise else p.shape, initial_accumulator, p.dtype),
                            params)

    def update(updates, state, params=None):
        state = jax.tree.map(lambda a, g: a + (jnp.mean(g * g, axis=-1) if rowwise else g * g), state, updates)

        def scale(g, a):
            s = jnp.where(a > 0, 1.0 / (jnp.sqrt(a) + eps), 0.0)
            return g * (s[..., None] if rowwise else s)
        return jax.tree.map(scale, updates, state), state

    return optax.GradientTransformation(init, update)
