"""Embedding tables: the concatenated layout, the state, initial values, the gather.

All F tables live in one concatenated table [R, D] (R = sum of rows), feature f
owning rows [offsets[f], offsets[f] + rows[f]), as FBGEMM's table-batched
embedding does: one gather for the lookup and one scatter for the update.  The
sparse optimizers that update it are in `optimizers.py`; how tables are split
over a mesh is `placement.py`.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct


class EmbeddingLayout(NamedTuple):
    rows: tuple[int, ...]   # rows of each feature's table
    dim: int                # D

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.rows)[:-1]]).astype(np.int64)

    @property
    def total_rows(self) -> int:
        return int(sum(self.rows))

    def concatenated_ids(self, sparse: jax.Array) -> jax.Array:
        """[B, F] per-feature ids -> [B, F] rows of the concatenated table (feature offsets added)."""
        if self.total_rows >= 2 ** 31:
            raise ValueError(f"{self.total_rows} rows do not fit int32 ids; shard tables into groups")
        return sparse.astype(jnp.int32) + jnp.asarray(self.offsets, jnp.int32)


@struct.dataclass
class EmbeddingState:
    table: jax.Array   # [R, D] float32
    accum: jax.Array   # adagrad [R, D]; rowwise_adagrad [R]; sgd [0]


def accum_shape(optimizer: str, rows: int, dim: int) -> tuple[int, ...]:
    """The sparse optimizer's state of `rows` rows: per element, per row, or none (SGD)."""
    return {"sgd": (0,), "adagrad": (rows, dim), "rowwise_adagrad": (rows,),
            "adagrad_torch": (rows, dim), "rowwise_adagrad_torch": (rows,)}[optimizer]


def init_embedding(key: jax.Array, layout: EmbeddingLayout, optimizer: str,
                   init_scale: float = 0.0, initial_accumulator: float = 0.0) -> EmbeddingState:
    """Uniform(+-scale) rows; scale 1/sqrt(rows of the feature) as the reference DLRM when 0.

    Feature f's rows are drawn from fold_in(key, f), so a table's values do not
    depend on how tables are grouped or placed.
    """
    table = jnp.concatenate([init_feature_rows(key, f, rows, layout.dim, init_scale)
                             for f, rows in enumerate(layout.rows)], axis=0)
    accum = jnp.full(accum_shape(optimizer, layout.total_rows, layout.dim), initial_accumulator, jnp.float32)
    return EmbeddingState(table=table, accum=accum)


def init_feature_rows(key: jax.Array, feature: int, rows: int, dim: int, init_scale: float = 0.0) -> jax.Array:
    """Feature `feature`'s initial table [rows, D]; placements (`placement.py`) reuse it."""
    scale = init_scale if init_scale > 0 else 1.0 / np.sqrt(rows)
    return jax.random.uniform(jax.random.fold_in(key, feature), (rows, dim), jnp.float32, -scale, scale)


def lookup(table: jax.Array, ids: jax.Array) -> jax.Array:
    """[R, D] table, [B, F] global ids -> [B, F, D] rows."""
    return jnp.take(table, ids, axis=0)


def table_bytes(layout: EmbeddingLayout, optimizer: str, dtype_bytes: int = 4) -> int:
    """Bytes of the table plus its optimizer state."""
    acc = int(np.prod(accum_shape(optimizer, layout.total_rows, layout.dim)))
    return (layout.total_rows * layout.dim + acc) * dtype_bytes


def layout_for(rows: Sequence[int], dim: int) -> EmbeddingLayout:
    return EmbeddingLayout(tuple(int(r) for r in rows), int(dim))
