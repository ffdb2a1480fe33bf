"""The embedding-backend seam: what the train step and the jit assembly ask of a backend.

Three backends implement `EmbeddingBackend`:

    single_device  one device, no collectives                    (single_device.py)
    sharded        table groups over a (data, model) mesh          (sharded.py)
    sparsecore     TPU SparseCores through jax-tpu-embedding       (sparsecore/backend.py)

`make_backend(cfg, layout, devices)` is the one place that chooses between
them: `embedding.backend=sparsecore` is the SparseCore one; `tensorcore` is
`single_device` when the mesh (`mesh.data` x `mesh.model`, -1 filled from the
devices) has one device, else `sharded`.  `dlrm_jax.parallel.steps` builds
the state, the jitted steps and the batch placement over this seam only, so
it holds no per-backend code; `step.py` reaches the tables only through
`init`, `lookup` and `update`.

Each backend class declares the sparse optimizers it implements
(`OPTIMIZERS`, from the JAX-free `support.py`, which `config.validate` also
reads: an unsupported one is exit 2 at config time, and `make_backend`
refuses it again for a config that skipped validation).
"""
from __future__ import annotations

from typing import Any, ClassVar, Protocol, Sequence

import jax

from dlrm_jax.embedding import bags as bags_lib, placement as placement_lib, tables as emb_lib
from dlrm_jax.embedding.sharded import ShardedEmbedding
from dlrm_jax.embedding.single_device import SingleDeviceEmbedding
from dlrm_jax.embedding.sparsecore.backend import SparseCoreEmbedding
from dlrm_jax.errors import UserError
from dlrm_jax.parallel.mesh import make_mesh, mesh_shape


class EmbeddingBackend(Protocol):
    """Shapes: B global batch, K id columns (F features, or a multi-hot bag's columns), D dim.

    `ids` are what `put_batch` gives the step: ids [B, K] on the TensorCore
    backends, the library's preprocessed input on SparseCores (`SparseCoreIds`).
    """
    OPTIMIZERS: ClassVar[tuple[str, ...]]   # the sparse optimizers it implements (support.py)
    dim: int                                # D
    mesh: jax.sharding.Mesh | None          # None: one device
    placement: placement_lib.Placement | None  # the table groups of a mesh (sharded only)
    eval_multiple: int                      # eval chunks are padded to a multiple of this
    eval_batch: int | None                  # predict takes exactly this many examples (None: any number)
    # Optional: a backend with `pools_bags` true pools multi-hot bags itself and the step calls
    # `lookup_bags(tables, ids) -> [B, F, D]` and `update_bags(state, ids, pooled grads [B, F, D], ...)`
    # instead of `lookup` and `update` (the sharded one: owners sum their rows per bag, pooled.py).

    def init(self, key: jax.Array, optimizer: str, init_scale: float = 0.0,
             initial_accumulator: float = 0.0) -> emb_lib.EmbeddingState:
        """The initial tables and optimizer state (the same values on every backend)."""
        ...

    def lookup(self, tables: Any, ids: Any) -> jax.Array:
        """The state's `table` tree and ids -> rows [B, K, D] (inside jit)."""
        ...

    def update(self, state: emb_lib.EmbeddingState, ids: Any, grads: jax.Array, optimizer: str, learning_rate,
               eps: float = 1e-8) -> tuple[emb_lib.EmbeddingState, dict]:
        """The sparse optimizer on the touched rows; grads [B, K, D] -> (new state, the step's counters).

        The counters are int32 scalars the train loop logs ({} where a backend has none)."""
        ...

    def describe(self) -> dict:
        """The embedding layout a checkpoint records (relayout.py reads it)."""
        ...

    def sharding(self, role: str, ndim: int) -> jax.sharding.Sharding:
        """The sharding of a non-embedding array by its role (`parallel/mesh.py`'s RULES): dense params,
        the step counter, host outputs."""
        ...

    def shardings(self) -> emb_lib.EmbeddingState:
        """The embedding state's shardings, in its pytree structure."""
        ...

    def batch_shardings(self) -> tuple:
        """(dense, ids, labels) shardings of a train batch as the step takes it."""
        ...

    def abstract_batch(self, batch_size: int) -> tuple:
        """(dense, ids, labels) ShapeDtypeStructs (global shapes, with shardings) of a batch: AOT compiles."""
        ...

    def put_batch(self, batch: Sequence[Any]) -> tuple:
        """This host's part of a global batch (dense [b, 13], sparse [b, K], labels [b], numpy) -> the step's
        (dense, ids, labels).  Runs in the data pipeline's background thread."""
        ...

    def put_eval(self, dense: Any, sparse: Any) -> tuple:
        """An eval chunk that every host holds whole -> predict's (dense, ids)."""
        ...


def make_backend(cfg, layout: emb_lib.EmbeddingLayout, devices: Sequence[Any] | None = None) -> EmbeddingBackend:
    """The backend of `cfg` over `devices` (default: all); UserError where it cannot run, before any compile."""
    e = cfg.embedding
    devices = list(jax.devices() if devices is None else devices)
    bags = bags_lib.from_config(cfg.model, len(layout.rows))
    if e.backend == "sparsecore":
        if bags is not None:  # its feature specs take one id per feature (input_shape [B, 1])
            raise UserError(f"model.multi_hot={cfg.model.multi_hot} is not supported by embedding.backend=sparsecore "
                            f"(one id per feature); use embedding.backend=tensorcore or model.multi_hot=1")
        backend: EmbeddingBackend = SparseCoreEmbedding.from_config(cfg, layout, devices)
        kind = "sparsecore"
    else:
        data, model_axis = mesh_shape(cfg.mesh, len(devices))
        columns = None if bags is None else bags.columns
        if data * model_axis == 1:
            backend, kind = SingleDeviceEmbedding(layout, columns, device=devices[0]), "single_device"
        else:
            mesh = make_mesh(cfg.mesh, devices)
            n = mesh.size
            if cfg.train.batch_size % n:
                raise UserError(f"train.batch_size={cfg.train.batch_size} is not divisible by the {n} devices of "
                                f"the mesh (mesh.data={data} x mesh.model={model_axis})")
            # Sharded groups split over every device (mesh.py), so the placement plans n blocks.
            pl = placement_lib.plan(e.sharding, layout.rows, layout.dim, n, e.replicate_below_rows)
            backend = ShardedEmbedding(mesh, pl, e.optimizer, columns=columns, headroom=e.exchange_headroom,
                                       bags=bags, bag_exchange=e.bag_exchange)
            kind = "sharded"
    if e.optimizer not in backend.OPTIMIZERS:  # config.validate refused it already, unless it was skipped
        raise UserError(f"embedding.optimizer={e.optimizer} is not supported by embedding.backend={e.backend} "
                        f"({kind}); it supports: {', '.join(backend.OPTIMIZERS)}")
    return backend


def as_backend(embedding) -> EmbeddingBackend:
    """A backend as it is, or an `EmbeddingLayout` as the single-device backend of that layout."""
    return SingleDeviceEmbedding(embedding) if isinstance(embedding, emb_lib.EmbeddingLayout) else embedding


# The class of each kind support.py names (tests check that their OPTIMIZERS agree).
KINDS = {"single_device": SingleDeviceEmbedding, "sharded": ShardedEmbedding, "sparsecore": SparseCoreEmbedding}
