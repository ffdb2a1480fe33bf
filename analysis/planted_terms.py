"""Planted answers for terms a model may fail to represent, from plain parameters.

* `blind_gap`, `blind_gap_exact`: the NE a model loses when it cannot represent a term of
  the teacher, such as a bit-wise trilinear term that pairwise dot products carry none of;
* `rank_floor`, `dim_optimum`: the Eckart-Young floor of rank-D pair terms built from a
  latent spectrum m^-rho, and the embedding dimension that minimises floor + estimation
  error at each FLOP budget, with its allocation exponent a (-> 1 / (rho + 1)).

The data exponent's answer (a per-id teacher's excess curve, the count learner) is in
analysis/planted.py. Numpy and scipy only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize, special

from analysis.planted import entropy

# -- an architecture gap: the blind gap of a missing term --------------------------

def blind_gap(sigma_t: float, *, info: float, base_ctr: float) -> float:
    """NE lost by a model blind to a logit term of std sigma_t, independent of what it sees:
    about I sigma_t^2 / 2 / H (research note, section 2), I = E[p (1 - p)] of the world's
    click probabilities (`click_information`), H the entropy at its mean click rate."""
    if not (math.isfinite(sigma_t) and sigma_t >= 0):
        raise ValueError(f"blind_gap: sigma_t must be >= 0, got {sigma_t!r}")
    if not (math.isfinite(info) and 0 < info <= 0.25):
        raise ValueError(f"blind_gap: information I = E[p(1-p)] must be in (0, 0.25], got {info}")
    return 0.5 * info * sigma_t ** 2 / entropy(base_ctr)


def trilinear_draws(sigma_t: float, rank: int, draws: int, seed: int = 0) -> np.ndarray:
    """Draws of T = sigma_t / sqrt(r) sum_{k <= r} a_k b_k c_k, a, b, c iid N(0, 1): the
    element-wise trilinear term on three features with independent uniform ids."""
    if int(rank) != rank or rank < 1 or int(draws) != draws or draws < 1:
        raise ValueError("trilinear_draws: rank and draws must be counts >= 1, "
                         f"got {rank}, {draws}")
    abc = np.random.default_rng(seed).standard_normal((3, int(rank), int(draws)))
    return sigma_t / math.sqrt(rank) * np.prod(abc, axis=0).sum(axis=0)


def blind_gap_exact(sigma_t: float, *, base_ctr: float, rest_variance: float | None = None,
                    rest_logits=None, rank: int = 4, draws: int = 1 << 13,
                    seed: int = 0) -> float:
    """The excess NE of the best predictor blind to the trilinear term T, without the
    second-order expansion of `blind_gap`: it predicts q(x) = E_T[sigmoid(b + z(x) + T)]
    and loses E[h(q) - E_T h(sigmoid(b + z + T))] (h the binary entropy), over H.

    The rest of the logit z is Gaussian (`rest_variance`, 80 Gauss-Hermite nodes) or given
    as samples (`rest_logits`, intercept excluded); b is set so the mean click rate is
    `base_ctr`, as the generator sets its intercept. T is sampled (`trilinear_draws`),
    each draw with its mirror -T (T's law is symmetric): the note's table is reproduced to
    about 0.001 with the default `draws`.
    """
    if (rest_variance is None) == (rest_logits is None):
        raise ValueError("blind_gap_exact: give exactly one of rest_variance and rest_logits")
    if rest_variance is not None:
        if not (math.isfinite(rest_variance) and rest_variance >= 0):
            raise ValueError(f"blind_gap_exact: rest_variance must be >= 0, got {rest_variance}")
        x, wz = np.polynomial.hermite_e.hermegauss(80)
        z, wz = math.sqrt(rest_variance) * x, wz / wz.sum()
    else:
        z = np.asarray(rest_logits, np.float64).ravel()
        if z.size == 0 or not np.all(np.isfinite(z)):
            raise ValueError("blind_gap_exact: rest_logits must be finite and not empty")
        wz = np.full(z.size, 1.0 / z.size)
    t = trilinear_draws(sigma_t, rank, draws, seed)
    t = np.concatenate([t, -t])
    h = entropy(base_ctr)

    def over_t(b, fn):
        """sum_i wz_i fn(sigmoid(b + z_i + T)) averaged over T, in blocks of z."""
        out = np.empty(len(z))
        for lo in range(0, len(z), 256):
            p = special.expit(b + z[lo:lo + 256, None] + t[None, :])
            out[lo:lo + 256] = fn(p)
        return out

    b = optimize.brentq(lambda b: wz @ over_t(b, lambda p: p.mean(1)) - base_ctr, -40, 40,
                        xtol=1e-9)
    q = over_t(b, lambda p: p.mean(1))
    inner = over_t(b, lambda p: _binary_entropy(p).mean(1))
    return float(wz @ (_binary_entropy(q) - inner)) / h


def _binary_entropy(p: np.ndarray) -> np.ndarray:
    return -(special.xlogy(p, p) + special.xlogy(1 - p, 1 - p))


# -- a compute-optimal valley on the embedding dimension ---------------------------

def latent_spectrum(latent_dim: int, rho: float, pair_variance: float) -> np.ndarray:
    """lambda_m^2 [M] of pair terms built from shared latents: proportional to m^-rho and
    summing to `pair_variance` (the variance all pair terms add to the logit together)."""
    if int(latent_dim) != latent_dim or latent_dim < 1:
        raise ValueError(f"latent_spectrum: latent_dim must be a count >= 1, got {latent_dim!r}")
    if not (math.isfinite(rho) and rho > 0 and math.isfinite(pair_variance) and pair_variance >= 0):
        raise ValueError(f"latent_spectrum: need rho > 0 and pair_variance >= 0, got {rho}, "
                         f"{pair_variance}")
    w = np.arange(1, int(latent_dim) + 1, dtype=np.float64) ** -rho
    return pair_variance * w / w.sum()


def rank_floor(dims, *, rho: float, latent_dim: int, pair_variance: float, info: float,
               base_ctr: float) -> np.ndarray:
    """NE floor of a model whose pair terms are rank-D bilinear forms, at infinite data.

    Eckart-Young: the best rank-D approximation of sum_m lambda_m u_fm u_gm (independent,
    unit-variance latents) drops the components m > D, losing I/2 sum_{m > D} lambda_m^2
    of log loss; over H. Falls as D^-(rho - 1) while D << latent_dim.
    """
    dims = np.asarray(dims)
    if np.any(dims < 0) or np.any(dims != np.round(dims)):
        raise ValueError("rank_floor: dimensions must be whole numbers >= 0")
    lam2 = latent_spectrum(latent_dim, rho, pair_variance)
    tail = np.concatenate([np.cumsum(lam2[::-1])[::-1], [0.0]])     # tail[d] = sum_{m > d}
    d = np.minimum(dims.astype(np.int64), len(lam2))
    return 0.5 * info * tail[d] / entropy(base_ctr)


@dataclass
class DimOptimum:
    """Per FLOP budget: the best embedding dimension and the allocation exponent a."""
    budgets: np.ndarray
    dims: np.ndarray                  # the dimensions searched (whole numbers)
    best: np.ndarray                  # D* per budget
    loss: np.ndarray                  # [budgets, dims] predicted excess NE
    at_edge: np.ndarray               # D* at the smallest or largest dimension searched
    a: float                          # OLS slope of log D* on log C

    def to_dict(self) -> dict:
        return {"budgets": self.budgets.tolist(), "best_dim": self.best.tolist(),
                "at_edge": self.at_edge.tolist(), "a": self.a}


def dim_optimum(budgets, dims, *, floor, estimation: float, examples_exponent: float,
                ids: int, flops_per_example) -> DimOptimum:
    """The dimension D that minimises floor(D) + estimation * (n / ids)^-examples_exponent
    at each FLOP budget C, with n = C / flops_per_example(D), and a = d log D* / d log C.

    floor: NE floor per dimension in `dims` (`rank_floor`); flops_per_example: training
    FLOPs per example per dimension in `dims` (for a dot model without hidden layers,
    3 (1486 D + 702)). The estimation term's coefficient is a property of the learner
    (its efficiency), so it sets where the minimum sits; the exponent of the data term,
    (rho - 1) / rho for a latent spectrum m^-rho, and the floor's shape set a, which
    tends to 1 / (rho + 1) as the budgets grow.
    """
    budgets = np.asarray(budgets, np.float64)
    dims = np.asarray(dims, np.float64)
    floor, fpe = np.asarray(floor, np.float64), np.asarray(flops_per_example, np.float64)
    if len(budgets) < 2 or np.any(budgets <= 0):
        raise ValueError("dim_optimum: need at least 2 positive FLOP budgets")
    if not (dims.ndim == floor.ndim == fpe.ndim == 1 and len(dims) == len(floor) == len(fpe) >= 3):
        raise ValueError("dim_optimum: dims, floor and flops_per_example must be 1-D of one "
                         "length >= 3")
    if np.any(fpe <= 0) or estimation <= 0 or examples_exponent <= 0 or ids < 1:
        raise ValueError("dim_optimum: flops per example, the estimation coefficient and "
                         "exponent, and the id count must be > 0")
    n = budgets[:, None] / fpe[None, :]
    loss = floor[None, :] + estimation * (n / ids) ** -examples_exponent
    i = np.argmin(loss, axis=1)
    best = dims[i]
    a = float(np.polyfit(np.log(budgets), np.log(best), 1)[0])
    return DimOptimum(budgets, dims, best, loss, (i == 0) | (i == len(dims) - 1), a)
