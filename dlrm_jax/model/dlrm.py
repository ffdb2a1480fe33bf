"""The DLRM dense part in Flax: dense arch, interaction, over arch.

    dense [B, 13] --bottom MLP--> x [B, D]
    x, embedded rows [B, F, D] --interaction--> [B, I]
    [B, I] --top MLP--> logit [B]

The embedding rows come in as an input, looked up by the sparse arch
(dlrm_jax/embedding/): tables are not Flax params, so optax never sees them
and gradients w.r.t. the rows stay [B, F, D] (docs/DESIGN.md section 2.2).

Names follow TorchRec's DLRM: dense arch (bottom MLP), interaction, over arch
(top MLP).  Initialisation follows the reference DLRM: weights
N(0, sqrt(2 / (fan_in + fan_out))) (Glorot normal), biases N(0, sqrt(1 / fan_out)).
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from dlrm_jax.model import interactions


def _bias_init(key, shape, dtype=jnp.float32):
    return jax.random.normal(key, shape, dtype) * np.sqrt(1.0 / shape[-1])


class MLP(nn.Module):
    """Dense layers with ReLU; the last layer's ReLU is optional."""
    features: Sequence[int]
    relu_last: bool
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        for i, width in enumerate(self.features):
            x = nn.Dense(width, dtype=self.dtype, param_dtype=jnp.float32,
                         kernel_init=nn.initializers.glorot_normal(), bias_init=_bias_init,
                         name=f"dense_{i}")(x)
            if i < len(self.features) - 1 or self.relu_last:
                x = nn.relu(x)
        return x


def dot_interaction(x: jax.Array, emb: jax.Array) -> jax.Array:
    """Reference DLRM `dot`: x [B, D], emb [B, F, D] -> [B, D + (F+1)F/2].

    Pairwise dot products of all F + 1 vectors, strict lower triangle, after x.
    """
    t = jnp.concatenate([x[:, None, :], emb], axis=1)          # [B, F+1, D]
    return jnp.concatenate([x, pairwise_dots(t)], axis=1)


@jax.custom_vjp
def pairwise_dots(t: jax.Array) -> jax.Array:
    """t [B, N, D] -> [B, N(N-1)/2]: t_i . t_j for i > j, in np.tril_indices(N, -1) order.

    Why a custom gradient: autodiff of einsum("bid,bjd->bij") then a triangle
    gather gives a scatter-add (which XLA's CPU backend runs serially) and two
    batched matmuls, one per operand.  With G the symmetric [B, N, N] matrix
    holding each pair's gradient at (i, j) and (j, i), the gradient is one
    batched matmul, dt = G t, and G is a single gather from the pairs' gradient.
    On the 2-core CPU (criteo-kaggle, B=2048) the train step goes from ~59k to
    ~65k examples/s (docs/BENCHMARKS.md).
    """
    return _pairwise_dots_fwd(t)[0]


def _pairwise_dots_fwd(t):
    n = t.shape[1]
    li, lj = np.tril_indices(n, k=-1)
    z = jnp.einsum("bid,bjd->bij", t, t)                        # [B, N, N]
    return z.reshape(z.shape[0], n * n)[:, li * n + lj], t


def _pairwise_dots_bwd(t, g):
    b, n = t.shape[0], t.shape[1]
    li, lj = np.tril_indices(n, k=-1)
    source = np.full(n * n, len(li))                       # the diagonal reads a zero column
    source[li * n + lj] = source[lj * n + li] = np.arange(len(li))
    g_ext = jnp.concatenate([g, jnp.zeros((b, 1), g.dtype)], axis=1)
    sym = g_ext[:, source].reshape(b, n, n)
    return (jnp.einsum("bij,bjd->bid", sym, t),)


pairwise_dots.defvjp(_pairwise_dots_fwd, _pairwise_dots_bwd)


def cat_interaction(x: jax.Array, emb: jax.Array) -> jax.Array:
    """`cat`: x [B, D], emb [B, F, D] -> [B, (F+1) D]."""
    return jnp.concatenate([x, emb.reshape(emb.shape[0], -1)], axis=1)


INTERACTIONS = {"dot": dot_interaction, "cat": cat_interaction}   # parameter-free; dcn, wukong: interactions.py


def interaction_width(kind: str, num_sparse: int, dim: int, model_cfg=None) -> int:
    """Width I of the interaction output (the over arch's input); wukong reads its knobs from model_cfg."""
    if kind == "dot":
        return dim + (num_sparse + 1) * num_sparse // 2
    if kind == "wukong":
        m = model_cfg
        return interactions.wukong_width(num_sparse, dim, m.wukong_layers, m.wukong_nf, m.wukong_nl)
    return (num_sparse + 1) * dim   # cat, dcn


class DLRM(nn.Module):
    embed_dim: int
    bottom_mlp: Sequence[int]
    top_mlp: Sequence[int]
    interaction: str = "dot"
    dtype: jnp.dtype = jnp.float32   # compute dtype of MLPs and interaction; params stay float32
    # Knobs of the interactions with parameters (interactions.py; config.ModelConfig documents them).
    dcn_layers: int = 3
    dcn_rank: int = 0
    wukong_layers: int = 2
    wukong_fmb_k: int = 8
    wukong_nf: int = 8
    wukong_nl: int = 8
    wukong_mlp: Sequence[int] = (64,)

    @nn.compact
    def __call__(self, dense: jax.Array, emb: jax.Array) -> jax.Array:
        """dense [B, 13] float, emb [B, F, D] -> logits [B] float32."""
        x = MLP(tuple(self.bottom_mlp) + (self.embed_dim,), relu_last=True, dtype=self.dtype,
                name="dense_arch")(dense.astype(self.dtype))
        emb = emb.astype(self.dtype)
        if self.interaction == "dcn":
            z = interactions.CrossNet(self.dcn_layers, self.dcn_rank, self.dtype,
                                      name="interaction")(cat_interaction(x, emb))
        elif self.interaction == "wukong":
            z = interactions.Wukong(self.wukong_layers, self.wukong_nf, self.wukong_nl, self.wukong_fmb_k,
                                    tuple(self.wukong_mlp), self.dtype, name="interaction")(x, emb)
        else:
            z = INTERACTIONS[self.interaction](x, emb)
        logit = MLP(tuple(self.top_mlp) + (1,), relu_last=False, dtype=self.dtype, name="over_arch")(z)
        return logit[:, 0].astype(jnp.float32)


def from_config(model_cfg) -> DLRM:
    return DLRM(embed_dim=model_cfg.embed_dim, bottom_mlp=tuple(model_cfg.bottom_mlp),
                top_mlp=tuple(model_cfg.top_mlp), interaction=model_cfg.interaction,
                dtype=jnp.bfloat16 if model_cfg.compute_dtype == "bfloat16" else jnp.float32,
                dcn_layers=model_cfg.dcn_layers, dcn_rank=model_cfg.dcn_rank,
                wukong_layers=model_cfg.wukong_layers, wukong_fmb_k=model_cfg.wukong_fmb_k,
                wukong_nf=model_cfg.wukong_nf, wukong_nl=model_cfg.wukong_nl,
                wukong_mlp=tuple(model_cfg.wukong_mlp))
