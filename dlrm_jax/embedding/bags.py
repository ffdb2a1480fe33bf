"""Multi-hot features: a bag of ids per example and feature, pooled in the sparse arch.

Feature f carries sizes[f] ids per example (1: one-hot).  The batch's ids are
[B, K], K = sum(sizes), the bags side by side in feature order, so column k
belongs to feature `columns[k]`.  The single-device backend looks up [B, K, D]
rows, column k in feature columns[k]'s table, with no notion of bags, and the
train step pools them per feature to [B, F, D] (sum, or mean over the bag)
before the dense arch.  The sharded backend pools the bags itself
(`pools_bags`: `lookup_bags` gives [B, F, D], `update_bags` takes their
gradients), on the owners of the rows where that moves fewer bytes
(`pooled.py`).  Pooling is linear, so the
gradient of a column's row is its feature's pooled gradient (divided by the bag
size for mean), and the sparse optimizer's per-row dedup sums the gradients of
an id repeated within a bag or across bags exactly (MLPerf DLRMv2's multi-hot
Criteo repeats ids: its extra bag ids are drawn uniformly with replacement).
"""
from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np


@dataclass(frozen=True)
class Bags:
    sizes: tuple[int, ...]     # ids per example of each feature
    mode: str = "sum"          # sum | mean

    @property
    def columns(self) -> tuple[int, ...]:
        """Feature of each of the K id columns."""
        return tuple(f for f, k in enumerate(self.sizes) for _ in range(k))

    @property
    def width(self) -> int:
        """K: id columns per example."""
        return int(sum(self.sizes))

    def pool(self, rows: jax.Array) -> jax.Array:
        """rows [B, K, D] -> pooled [B, F, D]."""
        starts = np.concatenate([[0], np.cumsum(self.sizes)[:-1]])
        pooled = [rows[:, s:s + k].sum(axis=1) if k > 1 else rows[:, s] for s, k in zip(starts, self.sizes)]
        out = jnp.stack(pooled, axis=1)
        if self.mode == "mean":
            out = out / jnp.asarray(self.sizes, out.dtype)[None, :, None]
        return out


def from_config(model_cfg, num_features: int) -> Bags | None:
    """The bags `model.multi_hot` names, or None when every feature is one-hot."""
    sizes = model_cfg.multi_hot
    sizes = tuple(sizes) if isinstance(sizes, tuple) else (int(sizes),) * num_features
    if all(k == 1 for k in sizes):
        return None
    return Bags(sizes, model_cfg.multi_hot_pooling)
