"""Multi-hot bags from one-hot ids, as MLPerf DLRMv2 makes its multi-hot Criteo 1TB.

MLPerf's `materialize_synthetic_multihot_dataset.py` (mlcommons/training,
recommendation_v2/torchrec_dlrm/scripts) seeds NumPy's legacy global RNG with 0 and,
for each feature in order, builds a table [rows, k] whose column 0 is the row's own
id and whose other k - 1 columns are `randint(0, rows, (rows, k - 1))`; an
example's bag of feature f is row `id_f` of that table.  So the one-hot id is
always in its bag, and the other ids are a fixed function of it.

`mlperf_table_chunks` yields those tables chunk by chunk with bounded memory: the
legacy int64 `randint` draws each value independently of the call's size, so
consecutive chunks give the one-shot table's values exactly (the byte-for-byte
test in tests/data/test_multihot.py checks it).  `MultiHotSource` applies the tables to
any source's batches on the fly, giving [B, K] ids, K = sum(sizes), bags side by
side in feature order (`embedding/bags.py`).
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from dlrm_jax.data.base import Batch, DataSource
from dlrm_jax.errors import UserError

CHUNK_ROWS = 1 << 20
# On-the-fly bags keep every table in memory (int32): refuse more than this many ids.
MAX_TABLE_IDS = 1 << 28


def mlperf_table_chunks(rows: Sequence[int], sizes: Sequence[int], chunk_rows: int = CHUNK_ROWS
                        ) -> Iterator[tuple[int, int, np.ndarray]]:
    """(feature, first row, table rows [n, k] int64) in the order MLPerf draws them."""
    rng = np.random.RandomState(0)
    for f, (n, k) in enumerate(zip(rows, sizes)):
        for lo in range(0, n, chunk_rows):
            hi = min(n, lo + chunk_rows)
            extra = rng.randint(0, n, size=(hi - lo, k - 1))
            yield f, lo, np.concatenate([np.arange(lo, hi, dtype=np.int64)[:, None], extra], axis=1)


class MultiHotSource:
    """A source's one-hot ids [B, F] as MLPerf bags [B, K] (module docstring)."""

    def __init__(self, inner: DataSource, sizes: Sequence[int]):
        self.inner, self.sizes = inner, tuple(int(k) for k in sizes)
        self.table_sizes, self.num_train = inner.table_sizes, inner.num_train
        ids = sum(n * (k - 1) for n, k in zip(self.table_sizes, self.sizes))
        if ids > MAX_TABLE_IDS:
            raise UserError(f"model.multi_hot: on-the-fly bags need {ids:,} table ids in memory (limit "
                            f"{MAX_TABLE_IDS:,}); materialise them with `dlrm-scaling data criteo-multihot`")
        tables = [np.empty((n, k), np.int32) for n, k in zip(self.table_sizes, self.sizes)]
        for f, lo, chunk in mlperf_table_chunks(self.table_sizes, self.sizes):
            tables[f][lo:lo + len(chunk)] = chunk
        self._tables = tables

    def bags(self, sparse: np.ndarray) -> np.ndarray:
        """[B, F] one-hot ids -> [B, K] bags."""
        return np.concatenate([t[sparse[:, f]] for f, t in enumerate(self._tables)], axis=1)

    def _expand(self, b: Batch) -> Batch:
        return Batch(b.dense, self.bags(b.sparse), b.labels)

    def train_batches(self, batch_size, start, stop, host_index=0, host_count=1) -> Iterator[Batch]:
        for b in self.inner.train_batches(batch_size, start, stop, host_index, host_count):
            yield self._expand(b)

    def eval_batch(self, n):
        return self._expand(self.inner.eval_batch(n))

    def eval_true_probs(self, n):
        # The teacher sees the one-hot id, and every bag is a fixed function of it
        # (column 0 is the id itself), so the true probabilities are unchanged.
        return self.inner.eval_true_probs(n)
