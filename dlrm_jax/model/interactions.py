"""Interactions beyond DLRM's `dot` and `cat`: the DCNv2 cross network and Wukong.

Both take the bottom MLP's output x [B, D] and the looked-up rows [B, F, D]
and give the over arch's input [B, I]; `model.DLRM` picks one by name
(`model.interaction`), and `dlrm_jax/model/accounting.py` counts their parameters
and FLOPs from the same knobs.

dcn (Wang et al. 2021, "DCN V2", eq. 1 and its low-rank form, section 5.2)
    x0 = [x, e_1, ..., e_F] flattened to [B, N], N = (F+1) D
    x_{l+1} = x0 * (W_l (V_l x_l) + b_l) + x_l      V_l: r x N, W_l: N x r, b_l: N
    rank 0 is full rank:  x_{l+1} = x0 * (W_l x_l + b_l) + x_l,  W_l: N x N
  Stacked (no parallel deep tower), Xavier-normal weights, zero bias, no bias
  on V and no activation between V and W: TorchRec's `LowRankCrossNet`, as the
  MLPerf DLRMv2 reference (`InteractionDCNArch`) uses it.  Output width N.

wukong (Zhang et al. 2024, "Wukong: Towards a Scaling Law for Large-Scale
Recommendation", arXiv 2403.02545, section 3): the n = F+1 embeddings as a
matrix X_0 [n, D]; each layer
    X_{i+1} = LN(concat(FMB(X_i), LCB(X_i)) + residual(X_i))
    FMB(X) = reshape(MLP(LN(flatten(X (X^T Y)))), [n_F, D])   Y: n x k (the optimized FM)
    LCB(X) = W_L X                                            W_L: n_L x n
    residual(X) = X, or P X (P: (n_F+n_L) x n) when the widths differ
  LN over D for the layer output and over the n k flattened FM values inside
  the FMB (as the authors' description and the open reimplementation
  clabrugere/wukong-recommendation do); the MLP has ReLU hidden layers and a
  linear output.  Output width (n_F + n_L) D after >= 1 layers.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

# PyTorch's nn.LayerNorm default; Flax's is 1e-6.  The reference implementations are PyTorch.
LAYER_NORM_EPS = 1e-5


def embeddings_matrix(x: jax.Array, emb: jax.Array) -> jax.Array:
    """x [B, D], emb [B, F, D] -> [B, F+1, D], the dense vector first (as `dot` orders them)."""
    return jnp.concatenate([x[:, None, :], emb], axis=1)


class CrossNet(nn.Module):
    """DCNv2 cross layers on x0 [B, N] -> [B, N] (module docstring, `dcn`)."""
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


def dcn_width(num_sparse: int, dim: int) -> int:
    return (num_sparse + 1) * dim


class WukongLayer(nn.Module):
    """One Wukong layer: X [B, n, D] -> [B, n_F + n_L, D]."""
    n_f: int
    n_l: int
    k: int
    mlp: Sequence[int]
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        from dlrm_jax.model.dlrm import MLP  # model.py imports this module; MLP is defined there
        b, n, d = x.shape
        xavier = nn.initializers.glorot_normal()
        # Factorization-machine block: X (X^T Y) is the [n, n] FM matrix X X^T times Y,
        # computed in O(n d k) rather than O(n^2 d).
        y = self.param("fm_projection", xavier, (n, self.k), jnp.float32).astype(self.dtype)
        xty = jnp.einsum("bnd,nk->bdk", x, y)                              # [B, D, k]
        fm = jnp.einsum("bnd,bdk->bnk", x, xty).reshape(b, n * self.k)     # [B, n k]
        fm = nn.LayerNorm(epsilon=LAYER_NORM_EPS, dtype=self.dtype, param_dtype=jnp.float32, name="fmb_norm")(fm)
        fmb = MLP(tuple(self.mlp) + (self.n_f * d,), relu_last=False, dtype=self.dtype, name="fmb_mlp")(fm)
        fmb = fmb.reshape(b, self.n_f, d)                                  # [B, n_F, D]
        # Linear compression block: n_L linear combinations of the n embeddings.
        w_l = self.param("lcb", xavier, (self.n_l, n), jnp.float32).astype(self.dtype)
        lcb = jnp.einsum("ln,bnd->bld", w_l, x)                            # [B, n_L, D]
        out = jnp.concatenate([fmb, lcb], axis=1)
        if n != self.n_f + self.n_l:
            p = self.param("residual_projection", xavier, (self.n_f + self.n_l, n), jnp.float32).astype(self.dtype)
            x = jnp.einsum("mn,bnd->bmd", p, x)
        return nn.LayerNorm(epsilon=LAYER_NORM_EPS, dtype=self.dtype, param_dtype=jnp.float32, name="norm")(out + x)


class Wukong(nn.Module):
    """x [B, D], emb [B, F, D] -> [B, I]: the stacked Wukong layers, flattened."""
    layers: int
    n_f: int
    n_l: int
    k: int
    mlp: Sequence[int]
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, emb: jax.Array) -> jax.Array:
        h = embeddings_matrix(x, emb)
        for layer in range(self.layers):
            h = WukongLayer(self.n_f, self.n_l, self.k, tuple(self.mlp), self.dtype, name=f"layer_{layer}")(h)
        return h.reshape(h.shape[0], -1)


def wukong_width(num_sparse: int, dim: int, layers: int, n_f: int, n_l: int) -> int:
    return (n_f + n_l) * dim if layers else (num_sparse + 1) * dim
