"""`cat`: plain concatenation, x [B, D], emb [B, F, D] -> [B, (F+1) D].  No parameters."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from dlrm_jax.model.interactions import Interaction


def cat_interaction(x: jax.Array, emb: jax.Array) -> jax.Array:
    """`cat`: x [B, D], emb [B, F, D] -> [B, (F+1) D]."""
    return jnp.concatenate([x, emb.reshape(emb.shape[0], -1)], axis=1)


def _module(model_cfg, dtype, name):
    return cat_interaction


def _width(model_cfg, num_sparse: int) -> int:
    return (num_sparse + 1) * model_cfg.embed_dim


def _counts(model_cfg, num_sparse: int) -> tuple[int, int]:
    return 0, 0


SPEC = Interaction("cat", module=_module, width=_width, counts=_counts)
