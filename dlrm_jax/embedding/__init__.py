"""The sparse arch: embedding tables kept outside optax, updated row by row.

    backend        the seam: `EmbeddingBackend` (what the train step and the jit assembly use),
                   `make_backend(cfg, layout, devices)`, the one place a backend is chosen
    support        which optimizers each backend supports (no JAX: config validation reads it)
    tables         the concatenated layout [R, D], the state, initial values, the gather
    optimizers     sparse SGD / Adagrad / row-wise Adagrad on touched rows, optax references
    placement      which rows live where: table groups over the mesh's table axis
    exchange       the sharded backend's id / row all-to-all with bounded capacity
    pooled         its multi-hot exchange: owners sum their rows per bag (partial pooling)
    bags           multi-hot id columns and their pooling
    single_device  backend: one device, no collectives
    sharded        backend: table groups on a mesh, shard_map lookups and updates
    sparsecore/    backend: TPU SparseCores through jax-tpu-embedding (backend, layout, conversion)
    relayout       a checkpoint's tables from the layout it was saved in to the run's

The names below are the single-device building blocks most scripts and tests
use (`from dlrm_jax import embedding as E; E.lookup(...)`).  They are looked up
on first use, not imported here, so that importing a JAX-free module of this
package (`support`, which `dlrm_jax.config` reads) does not import JAX.
"""
import importlib

_NAMES = {"EmbeddingLayout": "tables", "EmbeddingState": "tables", "accum_shape": "tables",
          "init_embedding": "tables", "init_feature_rows": "tables", "layout_for": "tables", "lookup": "tables",
          "table_bytes": "tables", "dedup_gradients": "optimizers", "dense_reference": "optimizers",
          "sparse_update": "optimizers"}

__all__ = sorted(_NAMES)


def __getattr__(name: str):
    if name in _NAMES:
        return getattr(importlib.import_module(f"{__name__}.{_NAMES[name]}"), name)
    if not name.startswith("_"):  # a submodule not imported yet (`E.placement` after `import dlrm_jax.embedding`)
        try:
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"{__name__}.{name}":  # the submodule exists and lacks something it imports
                raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
