"""Data sources: the synthetic generator (default) and prepared Criteo shards."""
from __future__ import annotations

from typing import Iterator

import numpy as np

from dlrm_jax.data.base import Batch, DataSource
from dlrm_jax.errors import UserError


def make_source(cfg) -> DataSource:
    """The DataSource a Config names (`data.source`), with ids fitted to the model's table rows."""
    if cfg.data.source == "synthetic":
        from dlrm_jax.data import synthetic
        return synthetic.from_config(cfg)
    if cfg.data.source.startswith("criteo:"):
        from dlrm_jax.data.criteo_source import CriteoSource
        from dlrm_jax.data.synthetic import table_rows_for
        src = CriteoSource(cfg.data.source.split(":", 1)[1], train_split=cfg.data.train_split,
                           eval_split=cfg.data.eval_split, shuffle_window=cfg.data.shuffle_window,
                           seed=cfg.seed)
        rows = table_rows_for(cfg.model.table_rows, src.table_sizes)
        return src if tuple(rows) == tuple(src.table_sizes) else HashedRows(src, rows)
    raise UserError(f"unknown data.source {cfg.data.source!r}")


class HashedRows:
    """A source whose ids are folded (mod) into smaller tables: `model.table_rows` below the data's."""

    def __init__(self, inner: DataSource, rows):
        if len(rows) != len(inner.table_sizes):
            raise UserError(f"model.table_rows has {len(rows)} entries, the data has {len(inner.table_sizes)} features")
        self.inner, self.table_sizes = inner, tuple(rows)
        self.num_train = inner.num_train
        self._rows = np.asarray(rows, np.int32)

    def _fold(self, b: Batch) -> Batch:
        return Batch(b.dense, (b.sparse % self._rows).astype(np.int32), b.labels)

    def train_batches(self, batch_size, start, stop, host_index=0, host_count=1) -> Iterator[Batch]:
        for b in self.inner.train_batches(batch_size, start, stop, host_index, host_count):
            yield self._fold(b)

    def eval_batch(self, n):
        return self._fold(self.inner.eval_batch(n))

    def eval_true_probs(self, n):
        return self.inner.eval_true_probs(n)
