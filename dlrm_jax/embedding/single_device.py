"""The single-device backend: one concatenated table, a gather and a sparse scatter.

It implements `backend.EmbeddingBackend` (the seam the train step and the jit
assembly use) with no mesh and no collectives; `sharded.py` is the mesh's.
Every array sits on its one device (`SingleDeviceSharding`), and a batch is
handed to the step as the numpy it comes as: jit places it.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import SingleDeviceSharding

from dlrm_jax.data.base import NUM_DENSE
from dlrm_jax.embedding import optimizers, placement as placement_lib, support, tables


class SingleDeviceEmbedding:
    OPTIMIZERS = support.SINGLE_DEVICE_OPTIMIZERS
    mesh = None
    placement = None
    eval_multiple = 1     # eval chunks of any size
    eval_batch = None

    def __init__(self, layout: tables.EmbeddingLayout, columns: tuple[int, ...] | None = None, device=None):
        """columns: the feature of each id column (multi-hot bags, `bags.py`); default one per feature.
        device: where everything lives (default: JAX's first device)."""
        self.layout, self.dim = layout, layout.dim
        self.columns = None if columns is None or tuple(columns) == tuple(range(len(layout.rows))) else tuple(columns)
        self.device = jax.devices()[0] if device is None else device

    def _global(self, ids: jax.Array) -> jax.Array:
        """[B, K] per-feature ids -> rows of the concatenated table."""
        if self.columns is None:
            return self.layout.concatenated_ids(ids)
        if self.layout.total_rows >= 2 ** 31:
            raise ValueError(f"{self.layout.total_rows} rows do not fit int32 ids; shard tables into groups")
        return ids.astype(jnp.int32) + jnp.asarray(self.layout.offsets[np.asarray(self.columns)], jnp.int32)

    def init(self, key: jax.Array, optimizer: str, init_scale: float = 0.0,
             initial_accumulator: float = 0.0) -> tables.EmbeddingState:
        return tables.init_embedding(key, self.layout, optimizer, init_scale, initial_accumulator)

    def lookup(self, table: jax.Array, ids: jax.Array) -> jax.Array:
        return tables.lookup(table, self._global(ids))

    def update(self, state: tables.EmbeddingState, ids: jax.Array, grads: jax.Array, optimizer: str,
               learning_rate, eps: float = 1e-8) -> tuple[tables.EmbeddingState, dict]:
        """(the sparse optimizer's new state, {}: one device has no exchange to count)."""
        return optimizers.sparse_update(state, self._global(ids), grads, optimizer, learning_rate, eps), {}

    def describe(self) -> dict:
        """The single-device layout (one concatenated table) in `Placement.describe` form."""
        return placement_lib.plan("replicated", self.layout.rows, self.layout.dim, 1).describe()

    # ------------------------------------------------------------------ placement

    def sharding(self, role: str, ndim: int) -> jax.sharding.Sharding:
        return SingleDeviceSharding(self.device)

    def shardings(self) -> tables.EmbeddingState:
        one = SingleDeviceSharding(self.device)
        return tables.EmbeddingState(table=one, accum=one)

    def batch_shardings(self) -> tuple:
        return (SingleDeviceSharding(self.device),) * 3

    def abstract_batch(self, batch_size: int) -> tuple:
        k = len(self.layout.rows) if self.columns is None else len(self.columns)
        return tuple(jax.ShapeDtypeStruct(shape, dtype, sharding=s) for (shape, dtype), s in
                     zip((((batch_size, NUM_DENSE), jnp.float32), ((batch_size, k), jnp.int32),
                          ((batch_size,), jnp.float32)), self.batch_shardings()))

    def put_batch(self, batch) -> tuple:
        return tuple(batch)   # numpy as it comes: jit places it on the one device

    def put_eval(self, dense, sparse) -> tuple:
        return dense, sparse
