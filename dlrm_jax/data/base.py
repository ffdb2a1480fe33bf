"""What every data source gives the train loop.

Shapes: B batch, F = 26 categorical features, 13 dense features.
A source is deterministic: the global example order is a pure function of its
configuration, so "the first N training examples" means the same set whatever
the batch size, host count or resume point.
"""
from __future__ import annotations

from typing import Iterator, NamedTuple, Protocol, Sequence

import numpy as np

NUM_DENSE = 13
NUM_SPARSE = 26


class Batch(NamedTuple):
    """One batch.  Arrays may be read-only views (memory-mapped shards): copy before writing."""
    dense: np.ndarray   # [B, 13] float32, already transformed (e.g. log1p)
    sparse: np.ndarray  # [B, F] int32, id of each feature, 0 <= id < table_sizes[f]
    labels: np.ndarray  # [B] float32 in {0, 1}


class DataSource(Protocol):
    table_sizes: Sequence[int]  # rows per categorical feature (F entries)
    num_train: int | None       # rows in the training split; None = unbounded stream

    def train_batches(self, batch_size: int, start: int, stop: int,
                      host_index: int = 0, host_count: int = 1) -> Iterator[Batch]:
        """Global training stream positions [start, stop), batch_size at a time.

        Positions index an endless stream: for a finite split of N rows, position
        p is row p % N of epoch p // N (each epoch in its own deterministic order
        when the source shuffles), so several epochs and resuming at any offset
        need nothing from the caller.

        With host_count > 1 each yielded Batch holds this host's contiguous slice
        (batch_size // host_count rows) of the global batch.  The last batch may
        be short only if (stop - start) is not a multiple of batch_size.
        """
        ...

    def eval_batch(self, num_examples: int) -> Batch:
        """The fixed held-out evaluation set (the same every call)."""
        ...

    def eval_true_probs(self, num_examples: int) -> np.ndarray | None:
        """True click probabilities of the eval examples, or None (real data)."""
        ...
