"""Ids into model table rows: shared by the synthetic and the Criteo sources.

A model may hold fewer rows per feature than the data has ids
(`model.table_rows` caps them, as the paper's embedding-rows scheme and
MLPerf's `max-ind-range` do); ids are then folded into the table by a modulo,
the hashing trick of the reference DLRM.  Both sources fold the same way, so
a capped table means the same thing whatever the data.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from dlrm_jax.data.base import Batch, DataSource
from dlrm_jax.errors import UserError


def table_rows_for(table_rows: int | Sequence[int], cardinalities: Sequence[int]) -> tuple[int, ...]:
    """Model rows per feature: an explicit list, or the cardinalities capped at one number (0: no cap)."""
    if isinstance(table_rows, int):
        return tuple(min(c, table_rows) if table_rows > 0 else c for c in cardinalities)
    return tuple(int(r) for r in table_rows)


def fold_ids(ids: np.ndarray, rows: Sequence[int]) -> np.ndarray:
    """[B, F] ids (any int dtype) -> [B, F] int32 rows, id mod rows[f]."""
    return (ids % np.asarray(rows, dtype=np.int64)).astype(np.int32)


class HashedRows:
    """A source whose ids are folded into smaller tables: `model.table_rows` below the data's."""

    def __init__(self, inner: DataSource, rows):
        if len(rows) != len(inner.table_sizes):
            raise UserError(f"model.table_rows has {len(rows)} entries, the data has {len(inner.table_sizes)} features")
        self.inner, self.table_sizes = inner, tuple(rows)
        self.num_train = inner.num_train

    def _fold(self, b: Batch) -> Batch:
        return Batch(b.dense, fold_ids(b.sparse, self.table_sizes), b.labels)

    def train_batches(self, batch_size, start, stop, host_index=0, host_count=1) -> Iterator[Batch]:
        for b in self.inner.train_batches(batch_size, start, stop, host_index, host_count):
            yield self._fold(b)

    def eval_batch(self, n):
        return self._fold(self.inner.eval_batch(n))

    def eval_true_probs(self, n):
        return self.inner.eval_true_probs(n)
