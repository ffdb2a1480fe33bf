"""Uncertainty by bootstrapping over runs.

Each resample draws as many runs as there are, with replacement, and refits: the grid
of variable-projection starts is recomputed on the resample, the full-data optimum is
added as a start, and the best of them by starting objective is polished with L-BFGS-B
(`FitOptions.n_polish_bootstrap`, default 1). A resampled run counts with its
multiplicity as a weight in the summed Huber objective, identical to duplicating it.

Intervals are percentile intervals of the refitted parameters (and of predictions, for
any x, computed from each resample's parameters). With few runs the percentile
bootstrap tends to be somewhat narrow; the held-out check in `validation` is the
empirical test of whether the intervals can be trusted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from analysis.fitting import FitOptions, Problem, solve


@dataclass(frozen=True)
class Bootstrap:
    """Refitted parameter vectors (theta layout, normalised units) and bookkeeping."""
    thetas: np.ndarray = field(repr=False)       # (n_samples, 2K + 1)
    n_samples: int
    seed: int
    n_redrawn: int          # resamples rejected for too few distinct points, redrawn
    n_polish: int
    max_grad_norm: float    # worst projected gradient norm over the refits

    def to_dict(self) -> dict:
        return {"n_samples": self.n_samples, "seed": self.seed,
                "method": "case resampling over runs, percentile intervals",
                "n_redrawn": self.n_redrawn, "polished_starts_per_refit": self.n_polish,
                "max_grad_norm": self.max_grad_norm}


def run_bootstrap(problem: Problem, theta: np.ndarray, options: FitOptions,
                  names: tuple[str, ...], n_samples: int, seed: int,
                  n_polish: int | None = None) -> Bootstrap:
    """Refit on `n_samples` resamples of the points; deterministic given `seed`.

    A resample with fewer distinct resource values than parameters cannot determine
    the law; it is redrawn (and counted), at most 100 times per sample.
    """
    if n_samples < 1:
        raise ValueError(f"bootstrap needs at least 1 sample, got {n_samples}")
    n_polish = options.n_polish_bootstrap if n_polish is None else n_polish
    rng = np.random.default_rng(seed)
    n = len(problem.logy)
    # As many distinct resource values as parameters, like the full fit requires.
    need = min(len(theta), len(np.unique(problem.logx, axis=0)))
    thetas = np.empty((n_samples, len(theta)))
    redrawn, worst = 0, 0.0
    for s in range(n_samples):
        for _ in range(100):
            w = np.bincount(rng.integers(0, n, n), minlength=n)
            keep = np.flatnonzero(w)
            if len(np.unique(problem.logx[keep], axis=0)) >= need:
                break
            redrawn += 1
        sol = solve(problem.subset(keep), options, names, weights=w[keep].astype(float),
                    warm_starts=(theta,), n_polish=n_polish)
        thetas[s] = sol.theta
        worst = max(worst, sol.convergence.grad_norm)
    return Bootstrap(thetas, n_samples, seed, redrawn, n_polish, worst)


def percentile_interval(samples: np.ndarray, level: float, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Equal-tailed percentile interval; works with +inf entries (unreachable targets)."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    q = [(1 - level) / 2, 1 - (1 - level) / 2]
    # 'inverted_cdf' picks order statistics, so an inf in the tail gives inf, not NaN.
    lo, hi = np.quantile(samples, q, axis=axis, method="inverted_cdf") if np.isinf(samples).any() \
        else np.quantile(samples, q, axis=axis)
    return lo, hi
