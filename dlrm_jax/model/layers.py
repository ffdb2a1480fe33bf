"""Layers the model and the interactions share: the MLP, its initialisation and its counts.

Initialisation follows the reference DLRM: weights N(0, sqrt(2 / (fan_in + fan_out)))
(Glorot normal), biases N(0, sqrt(1 / fan_out)).  Parameters stay float32 whatever
the compute dtype.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn


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


def mlp_counts(widths: Sequence[int]) -> tuple[int, int]:
    """(params, forward FLOPs per example) of consecutive dense layers [in, hidden..., out].

    Matmuls only, 2 FLOPs per multiply-add; bias adds and ReLUs are left out
    (dlrm_jax/model/accounting.py states the convention)."""
    widths = list(widths)
    params = sum(a * b + b for a, b in zip(widths[:-1], widths[1:]))
    flops = sum(2 * a * b for a, b in zip(widths[:-1], widths[1:]))
    return params, flops
