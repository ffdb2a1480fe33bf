"""A constant plus power terms, in log space, and its Huber objective.

Both laws this package fits are a constant plus K power terms,

    y = c0 + sum_k c_k * x_k**(-e_k)        (c >= 0, e >= 0)

K = 1 is the NE law of Ardalani et al. 2022 (alpha * x**-beta + gamma); K = 2 is the
loss law of Hoffmann et al. 2022 (E + A / N**alpha + B / D**beta).

Following Hoffmann et al. (approach 3) and Besiroglu et al. 2024, the coefficients are
optimised as logarithms (so they stay positive without constraints that stall the
optimiser) and predictions are compared with observations on a log scale:

    log yhat = logsumexp(log c_1 - e_1 log x_1, ..., log c_K - e_K log x_K, log c0)
    objective = sum_i w_i * huber_delta(log yhat_i - log y_i)

The sum (not the mean) over points is deliberate: it is the objective Besiroglu et al.
minimise, and the Huber threshold delta is on the same per-point scale whatever the
number of points. Weights w_i are integer multiplicities, which is how the bootstrap
resamples runs without copying rows.

Parameter vector layout (`theta`), used throughout the package:
    [log c_1, ..., log c_K, e_1, ..., e_K, log c0]
"""

from __future__ import annotations

import numpy as np


def log_predict(theta: np.ndarray, logx: np.ndarray) -> np.ndarray:
    """log yhat, a stable logsumexp over the summands.

    theta: (p,) or a stack (S, p) of parameter vectors; logx: (n, K) logarithms of the
    (normalised) resources. Returns (n,) or (S, n).
    """
    theta = np.asarray(theta, float)
    k = (theta.shape[-1] - 1) // 2
    log_c = theta[..., None, :k]
    e = theta[..., None, k:2 * k]
    log_c0 = theta[..., 2 * k, None]
    t = log_c - logx * e                           # (..., n, K) log power terms
    m = np.maximum(t.max(axis=-1), log_c0)
    return m + np.log(np.exp(t - m[..., None]).sum(axis=-1) + np.exp(log_c0 - m))


def huber(r: np.ndarray, delta: float) -> np.ndarray:
    """Huber loss: r**2 / 2 inside [-delta, delta], linear (slope delta) outside."""
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def value_and_grad(theta: np.ndarray, logx: np.ndarray, logy: np.ndarray,
                   delta: float, weights: np.ndarray | None = None
                   ) -> tuple[float, np.ndarray]:
    """The objective and its exact gradient with respect to theta.

    d log yhat / d log c_k = s_k (the share of summand k in yhat), d log yhat / d e_k =
    -s_k log x_k, d log yhat / d log c0 = s_0; the Huber derivative psi is the residual
    clipped to [-delta, delta]. Written lean: L-BFGS-B calls it thousands of times per
    bootstrap.
    """
    k = (len(theta) - 1) // 2
    t = theta[:k] - logx * theta[k:2 * k]          # (n, K) log power terms
    lc0 = theta[2 * k]
    m = np.maximum(t.max(axis=1), lc0)
    p = np.exp(t - m[:, None])
    p0 = np.exp(lc0 - m)
    z = p.sum(axis=1) + p0
    r = m + np.log(z) - logy
    psi = np.clip(r, -delta, delta)
    loss = psi * (r - 0.5 * psi)                   # = huber(r, delta)
    if weights is not None:
        loss = loss * weights
        psi = psi * weights
    q = psi / z
    gp = p * q[:, None]                            # psi * share of each power term
    grad = np.concatenate([gp.sum(axis=0), -(gp * logx).sum(axis=0), [(p0 * q).sum()]])
    return float(loss.sum()), grad


def value(theta: np.ndarray, logx: np.ndarray, logy: np.ndarray, delta: float,
          weights: np.ndarray | None = None):
    """The objective alone (no gradient); for a stack of thetas (S, p), an array (S,)."""
    loss = huber(log_predict(theta, logx) - logy, delta)
    if weights is not None:
        loss = loss * weights
    total = loss.sum(axis=-1)
    return float(total) if np.ndim(total) == 0 else total
