"""What each embedding backend supports, without JAX: config validation reads it here.

The backend classes declare their `OPTIMIZERS` from these tuples
(`SingleDeviceEmbedding.OPTIMIZERS = SINGLE_DEVICE_OPTIMIZERS`, ...), and
`config.validate` asks `optimizer_error` about the backend a config will get, so
an optimizer a backend does not implement is one line and exit 2 before any
device is touched.  This module imports nothing: `dlrm_jax.config` (and
with it every CLI error path) stays importable without JAX.

`embedding.backend` has two values.  `sparsecore` is one backend.
`tensorcore` picks by device count when the run starts (`backend.make_backend`):
one device is `single_device`, a mesh of more is `sharded`.  The config knows
the device count only when `mesh.data` and `mesh.model` fix it, so otherwise it
accepts what both of them support.
"""
from __future__ import annotations

# Every sparse optimizer `optimizers.py` implements (its formulas are there).
OPTIMIZERS = ("sgd", "adagrad", "rowwise_adagrad", "adagrad_torch", "rowwise_adagrad_torch")

# The TensorCore backends run `optimizers.sparse_update` itself: all of them.
SINGLE_DEVICE_OPTIMIZERS = OPTIMIZERS
SHARDED_OPTIMIZERS = OPTIMIZERS
# The SparseCores run the update inside jax-tpu-embedding; only these have an exact
# form there (sparsecore/backend.py says why row-wise and the *_torch forms do not).
SPARSECORE_OPTIMIZERS = ("sgd", "adagrad")

BY_KIND = {"single_device": SINGLE_DEVICE_OPTIMIZERS, "sharded": SHARDED_OPTIMIZERS,
           "sparsecore": SPARSECORE_OPTIMIZERS}
# Where a kind's refusals are explained (added to the error line).
WHY = {"sparsecore": "dlrm_jax/embedding/sparsecore/backend.py says why the others have no exact SparseCore form"}
# embedding.backend -> the backend kinds it can become (tensorcore: by device count).
KINDS = {"tensorcore": ("single_device", "sharded"), "sparsecore": ("sparsecore",)}


def kinds_for(backend: str, mesh_data: int = -1, mesh_model: int = 1) -> tuple[str, ...]:
    """The kinds `embedding.backend` can become with this mesh config (before the device count is known).

    mesh.data / mesh.model of -1 fill the devices; with the other one above 1 the
    mesh has more than one device whatever their number, so only `sharded` is left.
    """
    kinds = KINDS[backend]
    if backend != "tensorcore":
        return kinds
    fixed = [n for n in (mesh_data, mesh_model) if n != -1]
    product = 1
    for n in fixed:
        product *= n
    if product > 1:
        return ("sharded",)
    if len(fixed) == 2:      # both given, product 1: one device
        return ("single_device",)
    return kinds


def supported(backend: str, mesh_data: int = -1, mesh_model: int = 1) -> tuple[str, ...]:
    """The optimizers that every kind `embedding.backend` can become supports."""
    kinds = kinds_for(backend, mesh_data, mesh_model)
    return tuple(o for o in BY_KIND[kinds[0]] if all(o in BY_KIND[k] for k in kinds[1:]))


def optimizer_error(backend: str, optimizer: str, mesh_data: int = -1, mesh_model: int = 1) -> str | None:
    """None when the backend `embedding.backend` becomes supports `optimizer`; else the one-line error."""
    ok = supported(backend, mesh_data, mesh_model)
    if optimizer in ok:
        return None
    kinds = kinds_for(backend, mesh_data, mesh_model)
    which = f" ({' or '.join(kinds)})" if kinds != (backend,) else ""
    why = "".join(f" ({WHY[k]})" for k in kinds if k in WHY)
    return (f"embedding.optimizer={optimizer} is not supported by embedding.backend={backend}{which}; "
            f"it supports: {', '.join(ok)}{why}")
