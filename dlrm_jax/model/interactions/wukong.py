"""`wukong`: stacked factorization-machine and linear-compression layers.

Zhang et al. 2024, "Wukong: Towards a Scaling Law for Large-Scale Recommendation",
arXiv 2403.02545, section 3: the n = F+1 embeddings as a matrix X_0 [n, D]; each layer

    X_{i+1} = LN(concat(FMB(X_i), LCB(X_i)) + residual(X_i))
    FMB(X) = reshape(MLP(LN(flatten(X (X^T Y)))), [n_F, D])   Y: n x k (the optimized FM)
    LCB(X) = W_L X                                            W_L: n_L x n
    residual(X) = X, or P X (P: (n_F+n_L) x n) when the widths differ

LN over D for the layer output and over the n k flattened FM values inside the
FMB (as the authors' description and the open reimplementation
clabrugere/wukong-recommendation do); the MLP has ReLU hidden layers and a
linear output.  Output width (n_F + n_L) D after >= 1 layers.
Knobs: model.wukong_layers, wukong_fmb_k (k), wukong_nf (n_F), wukong_nl (n_L), wukong_mlp.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from dlrm_jax.errors import UserError
from dlrm_jax.model.interactions import Interaction, need_at_least, scaled
from dlrm_jax.model.layers import MLP, mlp_counts

# PyTorch's nn.LayerNorm default; Flax's is 1e-6.  The reference implementations are PyTorch.
LAYER_NORM_EPS = 1e-5


def embeddings_matrix(x: jax.Array, emb: jax.Array) -> jax.Array:
    """x [B, D], emb [B, F, D] -> [B, F+1, D], the dense vector first (as `dot` orders them)."""
    return jnp.concatenate([x[:, None, :], emb], axis=1)


class WukongLayer(nn.Module):
    """One Wukong layer: X [B, n, D] -> [B, n_F + n_L, D]."""
    n_f: int
    n_l: int
    k: int
    mlp: Sequence[int]
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
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


def _module(m, dtype, name):
    return Wukong(m.wukong_layers, m.wukong_nf, m.wukong_nl, m.wukong_fmb_k, tuple(m.wukong_mlp), dtype, name=name)


def _width(m, num_sparse: int) -> int:
    return (m.wukong_nf + m.wukong_nl) * m.embed_dim if m.wukong_layers else (num_sparse + 1) * m.embed_dim


def _counts(m, num_sparse: int) -> tuple[int, int]:
    # The layer norms' scale and bias are parameters; their few FLOPs an element are left
    # out, as the MLPs' bias adds and ReLUs are.
    d = m.embed_dim
    params = flops = 0
    n, k, out = num_sparse + 1, m.wukong_fmb_k, m.wukong_nf + m.wukong_nl
    for _ in range(m.wukong_layers):
        mlp_p, mlp_f = mlp_counts([n * k, *m.wukong_mlp, m.wukong_nf * d])
        params += n * k + 2 * n * k + mlp_p            # Y, the FM layer norm (scale, bias), MLP
        flops += 2 * n * d * k * 2 + mlp_f             # X^T Y, then X (X^T Y)
        params += m.wukong_nl * n                      # LCB
        flops += 2 * m.wukong_nl * n * d
        if out != n:                                   # residual projection
            params += out * n
            flops += 2 * out * n * d
        params += 2 * d                                # the output layer norm
        n = out
    return params, flops


def _scale(m, q, num_sparse: int) -> dict:
    return {"model.wukong_mlp": tuple(scaled(w, q) for w in m.wukong_mlp)}


def _validate(m) -> None:
    need_at_least(m, 0, "wukong_layers", "wukong_nl")
    need_at_least(m, 1, "wukong_fmb_k", "wukong_nf")
    if not all(h > 0 for h in m.wukong_mlp):
        raise UserError(f"model.wukong_mlp sizes must be positive, got {m.wukong_mlp}")


SPEC = Interaction("wukong", module=_module, width=_width, counts=_counts, scale=_scale, validate=_validate)
