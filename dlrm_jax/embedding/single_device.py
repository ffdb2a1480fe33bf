"""The single-device backend: one concatenated table, a gather and a sparse scatter.

Every embedding backend offers the same seam to the train step
(`step.make_train_step`), so the model, loop, metrics and checkpoints do not
know which one runs:

    init(key, optimizer, init_scale, initial_accumulator) -> state
    lookup(tables, ids [B, F]) -> rows [B, F, D]       ids per feature, 0 <= id < rows[f]
    update(state, ids [B, F], grads [B, F, D], optimizer, learning_rate, eps) -> state
    (with multi-hot bags, `bags.py`, F is K id columns, column k of feature columns[k])
    describe() -> the layout a checkpoint records
    dim  D

This one needs no mesh and no collectives; `sharded.py` is the mesh's.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from dlrm_jax.embedding import optimizers, placement as placement_lib, tables


class SingleDeviceEmbedding:
    def __init__(self, layout: tables.EmbeddingLayout, columns: tuple[int, ...] | None = None):
        """columns: the feature of each id column (multi-hot bags, `bags.py`); default one per feature."""
        self.layout, self.dim = layout, layout.dim
        self.columns = None if columns is None or tuple(columns) == tuple(range(len(layout.rows))) else tuple(columns)

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
               learning_rate, eps: float = 1e-8) -> tables.EmbeddingState:
        return optimizers.sparse_update(state, self._global(ids), grads, optimizer,
                                        learning_rate, eps)

    def describe(self) -> dict:
        """The single-device layout (one concatenated table) in `Placement.describe` form."""
        return placement_lib.plan("replicated", self.layout.rows, self.layout.dim, 1).describe()


def as_backend(embedding) -> "SingleDeviceEmbedding":
    """A backend as it is, or an `EmbeddingLayout` as the single-device backend of that layout."""
    return SingleDeviceEmbedding(embedding) if isinstance(embedding, tables.EmbeddingLayout) else embedding
