"""One builder: a config to everything a train step needs, written once.

    source -> embedding layout -> model -> dense optimizer -> accounting -> Parallel

`train`, `bench`, `compile` (TensorCore and SparseCore steps alike) all start
here, so the step they time or compile is the step that trains (as MaxText's
`train_compile.py` reuses its trainer's step builder).  Nothing is allocated:
`Parallel.init` creates the state, and `Built.lower()` lowers the step for the
backend's abstract batch, to compile it for devices that cannot run it (a TPU slice described
by libtpu on a CPU host).  A mesh or placement that cannot work raises
UserError here, before anything is compiled.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dlrm_jax import config as config_lib, embedding as emb_lib, step as step_lib
from dlrm_jax.data import make_source
from dlrm_jax.data.base import DataSource
from dlrm_jax.model import accounting as accounting_lib, dlrm as model_lib
from dlrm_jax.parallel import steps as parallel


@dataclass(frozen=True)
class Built:
    cfg: config_lib.Config
    source: DataSource
    layout: emb_lib.EmbeddingLayout
    model: Any                      # the Flax DLRM
    tx: Any                         # the dense optimizer (optax)
    accounting: accounting_lib.Accounting
    par: parallel.Parallel

    @property
    def embedding_sharding(self) -> str:
        """How the tables are laid out, as reports name it: sparsecore, a placement kind, or single-device."""
        if self.cfg.embedding.backend == "sparsecore":
            return "sparsecore"
        return self.par.placement.kind if self.par.placement is not None else "single-device"

    @property
    def mesh_shape(self) -> dict:
        from dlrm_jax.parallel.mesh import AXES
        return dict(self.par.mesh.shape) if self.par.mesh is not None else dict.fromkeys(AXES, 1)

    def lower(self):
        """The train step lowered for the backend's abstract batch ([B, F] ids, [B, K] bags,
        SparseCore's CSR input); compile it with `.compile()`."""
        return self.par.train_step.lower(self.par.abstract_state, *self.par.abstract_batch)


def build(cfg: config_lib.Config, devices=None, source: DataSource | None = None) -> Built:
    """Everything `cfg`'s train step needs over `devices` (default: all of JAX's); `source`
    when the caller has made it already (train checks its splits before building)."""
    source = make_source(cfg) if source is None else source
    layout = emb_lib.layout_for(source.table_sizes, cfg.model.embed_dim)
    model = model_lib.from_config(cfg.model)
    tx = step_lib.dense_optimizer(cfg.train)
    acct = accounting_lib.account(cfg.model, layout.rows, cfg.embedding.optimizer)
    par = parallel.parallelize(cfg, model, tx, layout, devices)
    return Built(cfg, source, layout, model, tx, acct, par)
