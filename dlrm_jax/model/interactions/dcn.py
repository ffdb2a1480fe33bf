"""`dcn`: the DCNv2 cross network (Wang et al. 2021, "DCN V2", eq. 1 and its low-rank form, section 5.2).

    x0 = [x, e_1, ..., e_F] flattened to [B, N], N = (F+1) D
    x_{l+1} = x0 * (W_l (V_l x_l) + b_l) + x_l      V_l: r x N, W_l: N x r, b_l: N
    rank 0 is full rank:  x_{l+1} = x0 * (W_l x_l + b_l) + x_l,  W_l: N x N

Stacked (no parallel deep tower), Xavier-normal weights, zero bias, no bias on V
and no activation between V and W: TorchRec's `LowRankCrossNet`, as the MLPerf
DLRMv2 reference (`InteractionDCNArch`) uses it.  Output width N.
Knobs: model.dcn_layers (l), model.dcn_rank (r; 0: full rank).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

from dlrm_jax.model.interactions import Interaction, need_at_least, scaled
from dlrm_jax.model.interactions.cat import cat_interaction


class CrossNet(nn.Module):
    """DCNv2 cross layers on x0 [B, N] -> [B, N] (module docstring)."""
    layers: int
    rank: int                      # 0: full rank
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x0: jax.Array) -> jax.Array:
        n = x0.shape[-1]
        xavier = nn.initializers.glorot_normal()
        x = x0
        for layer in range(self.layers):
            b = self.param(f"bias_{layer}", nn.initializers.zeros, (n,), jnp.float32).astype(self.dtype)
            if self.rank:
                # x @ v is V_l x_l with V_l = v^T (r x N); then @ w is W_l (.) with W_l = w^T (N x r).
                v = self.param(f"v_{layer}", xavier, (n, self.rank), jnp.float32).astype(self.dtype)
                w = self.param(f"w_{layer}", xavier, (self.rank, n), jnp.float32).astype(self.dtype)
                xw = (x @ v) @ w + b
            else:
                w = self.param(f"w_{layer}", xavier, (n, n), jnp.float32).astype(self.dtype)
                xw = x @ w + b
            x = x0 * xw + x
        return x


def _module(model_cfg, dtype, name):
    net = CrossNet(model_cfg.dcn_layers, model_cfg.dcn_rank, dtype, name=name)
    return lambda x, emb: net(cat_interaction(x, emb))


def _width(model_cfg, num_sparse: int) -> int:
    return (num_sparse + 1) * model_cfg.embed_dim


def _counts(model_cfg, num_sparse: int) -> tuple[int, int]:
    n, r = (num_sparse + 1) * model_cfg.embed_dim, model_cfg.dcn_rank
    # per layer: W (V x) + b, V r x N and W N x r (rank 0: W N x N), bias N
    per_params = (2 * n * r if r else n * n) + n
    per_flops = 2 * n * r * 2 if r else 2 * n * n
    return model_cfg.dcn_layers * per_params, model_cfg.dcn_layers * per_flops


def _scale(model_cfg, q, num_sparse: int) -> dict:
    # The rank is the cross net's width; a full-rank base (rank 0) has none to scale, so
    # the sweep starts from N / 8.
    rank = model_cfg.dcn_rank or max(1, (num_sparse + 1) * model_cfg.embed_dim // 8)
    return {"model.dcn_rank": scaled(rank, q)}


def _validate(model_cfg) -> None:
    need_at_least(model_cfg, 0, "dcn_layers", "dcn_rank")


SPEC = Interaction("dcn", module=_module, width=_width, counts=_counts, scale=_scale, validate=_validate)
