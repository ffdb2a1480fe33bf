"""The sparse arch: embedding tables kept outside optax, updated row by row.

    tables         the concatenated layout [R, D], the state, initial values, the gather
    optimizers     sparse SGD / Adagrad / row-wise Adagrad on touched rows, optax references
    placement      which rows live where: table groups over the mesh's table axis
    single_device  backend: one device, no collectives
    sharded        backend: table groups on a mesh, shard_map lookups and updates

A backend is what the train step calls (`init`, `lookup`, `update`,
`describe`; `single_device.py` states the seam).  The names below are the
single-device building blocks most scripts and tests use.
"""
from dlrm_jax.embedding.optimizers import dedup_gradients, dense_reference, sparse_update
from dlrm_jax.embedding.tables import (EmbeddingLayout, EmbeddingState, accum_shape, init_embedding,
                                       init_feature_rows, layout_for, lookup, table_bytes)

__all__ = ["EmbeddingLayout", "EmbeddingState", "accum_shape", "dedup_gradients", "dense_reference",
           "init_embedding", "init_feature_rows", "layout_for", "lookup", "sparse_update", "table_bytes"]
