"""The DLRM dense part in Flax: dense arch, interaction, over arch.

    dense [B, 13] --bottom MLP--> x [B, D]
    x, embedded rows [B, F, D] --interaction--> [B, I]
    [B, I] --top MLP--> logit [B]

The embedding rows come in as an input, looked up by the sparse arch
(dlrm_jax/embedding/): tables are not Flax params, so optax never sees them
and gradients w.r.t. the rows stay [B, F, D] (docs/DESIGN.md section 2.2).

Names follow TorchRec's DLRM: dense arch (bottom MLP), interaction, over arch
(top MLP).  The MLPs are dlrm_jax/model/layers.py's; the interaction is the one
`model.interaction` names in dlrm_jax/model/interactions/ (REGISTRY), built from
the same config, under the Flax name "interaction".
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

from dlrm_jax.config import ModelConfig
from dlrm_jax.model.interactions import REGISTRY
from dlrm_jax.model.layers import MLP


def compute_dtype(model_cfg: ModelConfig) -> jnp.dtype:
    """The MLPs' and the interaction's compute dtype (params stay float32)."""
    return jnp.bfloat16 if model_cfg.compute_dtype == "bfloat16" else jnp.float32


class DLRM(nn.Module):
    cfg: ModelConfig   # the model config: widths, the interaction and its knobs, compute dtype

    @nn.compact
    def __call__(self, dense: jax.Array, emb: jax.Array) -> jax.Array:
        """dense [B, 13] float, emb [B, F, D] -> logits [B] float32."""
        m, dtype = self.cfg, compute_dtype(self.cfg)
        x = MLP(tuple(m.bottom_mlp) + (m.embed_dim,), relu_last=True, dtype=dtype,
                name="dense_arch")(dense.astype(dtype))
        interaction = REGISTRY[m.interaction].module(m, dtype, "interaction")
        z = interaction(x, emb.astype(dtype))
        logit = MLP(tuple(m.top_mlp) + (1,), relu_last=False, dtype=dtype, name="over_arch")(z)
        return logit[:, 0].astype(jnp.float32)


def from_config(model_cfg: ModelConfig) -> DLRM:
    return DLRM(model_cfg)
