"""The fitting procedure: input checks, starting grid, L-BFGS-B polish, convergence.

Method (Hoffmann et al. 2022 approach 3, as corrected by Besiroglu et al. 2024, whose
refit of the Chinchilla points found that the original optimiser had stopped early):

1. Normalise: each resource is divided by its geometric mean and y by its geometric
   mean. The law is unchanged (coefficients are converted back at the end), but the
   log-coefficients become O(1) and the problem well conditioned.
2. Starts by variable projection: for every exponent vector on a grid, the linear
   coefficients (c_1..c_K, c0) minimise the relative squared error under c >= 0, a
   non-negative least-squares problem (scipy.optimize.nnls). Each start is scored with
   the real Huber objective.
3. Polish: the best few starts (grid local minima first, so different basins get a
   chance) are refined in the full parameter space with L-BFGS-B, exact gradients and
   tolerances near machine precision. The objective handed to L-BFGS-B is divided by
   delta**2: L-BFGS-B's ftol test is relative to max(|f|, 1), so an objective of order
   1e-6 (a good fit with delta = 1e-3) would otherwise stop after a few steps.
4. Report convergence: projected gradient norm at the optimum, the share of polished
   starts that reached the best objective, parameters stuck at a bound.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
from scipy import optimize

from analysis import objective
from analysis.blas import single_thread


@dataclass(frozen=True)
class FitOptions:
    """Every choice that affects a fit; written to fits.json so a fit can be redone.

    Bounds on log-coefficients are in normalised units (y and each x divided by its
    geometric mean): -30 means a term below 1e-13 of the typical y, i.e. absent.
    """
    huber_delta: float = 1e-3
    exponent_bounds: tuple[float, float] = (0.0, 4.0)
    log_coef_bounds: tuple[float, float] = (-30.0, 30.0)
    # Bounds of the constant's log-coefficient (gamma, E); None: log_coef_bounds. Equal
    # bounds hold it fixed: (-30, -30) fits y = alpha * x**(-beta) with no constant, as for
    # an excess over a known asymptote (`NO_CONSTANT`).
    log_constant_bounds: tuple[float, float] | None = None
    # Exponent grid per power term; None: geometric grids (see `exponent_grid`).
    grid: tuple[float, ...] | None = None
    n_polish: int = 5
    # Bootstrap refits polish the better (by starting objective) of the full-data optimum
    # and the grid's best start. More starts changed no percentile on the synthetic laws,
    # an onset-shaped curve or the Chinchilla points, and cost time in proportion.
    n_polish_bootstrap: int = 1
    ftol: float = 1e-14
    gtol: float = 1e-9
    maxiter: int = 10_000

    def __post_init__(self):
        if not (np.isfinite(self.huber_delta) and self.huber_delta > 0):
            raise ValueError(f"huber_delta must be a positive number, got {self.huber_delta!r}")
        if self.n_polish < 1 or self.n_polish_bootstrap < 1:
            raise ValueError(f"n_polish and n_polish_bootstrap must be >= 1, got {self.n_polish}, "
                             f"{self.n_polish_bootstrap}")
        lo, hi = self.exponent_bounds
        if not lo < hi:
            raise ValueError(f"exponent_bounds must be (lo, hi) with lo < hi, got {self.exponent_bounds}")
        if self.log_constant_bounds is not None:
            lo, hi = self.log_constant_bounds
            if not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi):
                raise ValueError("log_constant_bounds must be finite (lo, hi) with lo <= hi, "
                                 f"got {self.log_constant_bounds}")

    @property
    def constant_bounds(self) -> tuple[float, float]:
        """Bounds of the constant's normalised log-coefficient."""
        b = self.log_constant_bounds
        return self.log_coef_bounds if b is None else b

    @property
    def constant_fixed(self) -> bool:
        lo, hi = self.constant_bounds
        return lo == hi

    def exponent_grid(self, k: int) -> np.ndarray:
        """Grid values for each exponent. One term: 40 values 0.01..3 (NE laws have
        beta ~ 0.1, so the grid is geometric); two terms: 16 x 16 values 0.05..2."""
        if self.grid is not None:
            g = np.asarray(self.grid, float)
        elif k == 1:
            g = np.geomspace(0.01, 3.0, 40)
        else:
            g = np.geomspace(0.05, 2.0, 16)
        lo, hi = self.exponent_bounds
        return np.clip(g, lo, hi)

    def to_dict(self) -> dict:
        return {
            "huber_delta": self.huber_delta,
            "exponent_bounds": list(self.exponent_bounds),
            "log_coef_bounds_normalised": list(self.log_coef_bounds),
            "log_constant_bounds_normalised": list(self.constant_bounds),
            "grid": None if self.grid is None else list(self.grid),
            "n_polish": self.n_polish,
            "n_polish_bootstrap": self.n_polish_bootstrap,
            "ftol": self.ftol,
            "gtol": self.gtol,
            "maxiter": self.maxiter,
        }


@dataclass(frozen=True)
class Problem:
    """Validated, normalised data: logx (n, K), logy (n,), and the references."""
    logx: np.ndarray
    logy: np.ndarray
    log_xref: np.ndarray
    log_yref: float

    @property
    def k(self) -> int:
        return self.logx.shape[1]

    def subset(self, idx: np.ndarray) -> "Problem":
        """The same normalisation on a subset of points (keeps warm starts valid)."""
        return Problem(self.logx[idx], self.logy[idx], self.log_xref, self.log_yref)


def check_and_normalise(columns: dict[str, np.ndarray], y, who: str,
                        n_params: int) -> tuple[Problem, list[np.ndarray], np.ndarray]:
    """Validate inputs and normalise; raise ValueError with a message naming the problem.

    columns: resource name -> values (one power term each). Returns the problem and the
    raw arrays (float, 1-D) for storing on the fit.
    """
    y = _as_1d(y, "y", who)
    raw = []
    for name, c in columns.items():
        c = _as_1d(c, name, who)
        if len(c) != len(y):
            raise ValueError(f"{who}: {name} has {len(c)} values but y has {len(y)}")
        bad = ~np.isfinite(c)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{who}: {name}[{i}] = {c[i]} is not finite")
        if (c <= 0).any():
            i = int(np.flatnonzero(c <= 0)[0])
            raise ValueError(f"{who}: {name}[{i}] = {c[i]:g}; a power law needs {name} > 0")
        n_distinct = len(np.unique(c))
        if n_distinct < 2:
            raise ValueError(f"{who}: all {name} values are equal ({c[0]:g}); "
                             f"nothing to fit a power of {name} to")
        raw.append(c)
    bad = ~np.isfinite(y)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{who}: y[{i}] = {y[i]} is not finite (NaN or inf)")
    if (y <= 0).any():
        i = int(np.flatnonzero(y <= 0)[0])
        raise ValueError(f"{who}: y[{i}] = {y[i]:g}; the fit compares log y, so y must be > 0")
    if len(y) < n_params + 1:
        raise ValueError(f"{who}: {len(y)} points for {n_params} parameters; "
                         f"need at least {n_params + 1}")
    n_distinct = len(np.unique(np.column_stack(raw), axis=0))
    if n_distinct < n_params:
        raise ValueError(f"{who}: only {n_distinct} distinct resource values for "
                         f"{n_params} parameters; need at least {n_params}")
    logx = np.log(np.column_stack(raw))
    logy = np.log(y)
    log_xref = logx.mean(axis=0)
    log_yref = float(logy.mean())
    return Problem(logx - log_xref, logy - log_yref, log_xref, log_yref), raw, y


def _as_1d(a, name: str, who: str) -> np.ndarray:
    try:
        a = np.asarray(a, dtype=float)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{who}: {name} is not numeric ({e})") from None
    if a.ndim != 1:
        raise ValueError(f"{who}: {name} must be 1-D, got shape {a.shape}")
    return a


@dataclass(frozen=True)
class Convergence:
    """How much to trust the optimum found.

    objective: sum of Huber losses at the optimum (unscaled). grad_norm: max-abs
    projected gradient of that objective (0 at an interior optimum; components pushing
    into an active bound are not counted). share_reached: fraction of polished starts
    that ended within 1e-6 (relative, in delta**2 units) of the best objective.
    at_bound: parameters sitting on a bound (e.g. gamma -> 0 or beta -> 0).
    """
    objective: float
    grad_norm: float
    n_grid: int
    n_polished: int
    n_reached: int
    at_bound: tuple[str, ...]
    success: bool
    message: str
    iterations: int

    @property
    def share_reached(self) -> float:
        return self.n_reached / self.n_polished

    def to_dict(self) -> dict:
        return {
            "objective": self.objective, "grad_norm": self.grad_norm,
            "n_grid_starts": self.n_grid, "n_polished": self.n_polished,
            "n_reached_optimum": self.n_reached, "share_reached": self.share_reached,
            "at_bound": list(self.at_bound), "optimizer_success": self.success,
            "optimizer_message": self.message, "iterations": self.iterations,
        }


@dataclass(frozen=True)
class Solution:
    theta: np.ndarray = field(repr=False)
    convergence: Convergence


# The constant held at 1e-13 of the typical y, i.e. absent: the law alpha * x**(-beta).
NO_CONSTANT = FitOptions(log_constant_bounds=(-30.0, -30.0))


def bounds(k: int, options: FitOptions) -> list[tuple[float, float]]:
    return [options.log_coef_bounds] * k + [options.exponent_bounds] * k + [options.constant_bounds]


def grid_starts(problem: Problem, options: FitOptions, weights: np.ndarray | None
                ) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """Variable-projection starts on the exponent grid.

    Returns thetas (G, 2K+1), their objective values (G,), and the grid shape.
    For fixed exponents the coefficients minimise sum w ((Phi c - y) / y)**2, c >= 0:
    the relative error, a first-order stand-in for the log residual.
    """
    k = problem.k
    g = options.exponent_grid(k)
    lo, hi = options.log_coef_bounds
    y = np.exp(problem.logy)
    sw = np.ones_like(y) if weights is None else np.sqrt(weights)
    rows = (sw / y)[:, None]
    combos = np.array(list(itertools.product(g, repeat=k)))
    thetas = np.empty((len(combos), 2 * k + 1))
    c_lo, c_hi = options.constant_bounds
    # A fixed constant is moved to the target side; a free one is a column of ones.
    fixed = options.constant_fixed
    design = np.ones((len(y), k if fixed else k + 1))
    target = sw * (1 - np.exp(c_lo) / y) if fixed else sw
    for j, e in enumerate(combos):
        design[:, :k] = np.exp(-problem.logx * e)
        c, _ = optimize.nnls(design * rows, target)
        logc = np.log(np.clip(c[:k], np.exp(lo), np.exp(hi)))
        thetas[j, :k] = logc
        thetas[j, k:2 * k] = e
        thetas[j, 2 * k] = c_lo if fixed else np.log(np.clip(c[k], np.exp(c_lo), np.exp(c_hi)))
    values = objective.value(thetas, problem.logx, problem.logy, options.huber_delta, weights)
    return thetas, values, (len(g),) * k


def _grid_order(values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Indices of grid starts: local minima of the grid first (best first), then the rest.

    Taking the top few by value alone would pick neighbours in one basin; local minima
    give other basins a start.
    """
    v = values.reshape(shape)
    is_min = np.ones(shape, bool)
    for ax in range(len(shape)):
        pad = [(0, 0)] * len(shape)
        pad[ax] = (1, 1)
        p = np.pad(v, pad, constant_values=np.inf)
        sl_prev = [slice(None)] * len(shape)
        sl_next = [slice(None)] * len(shape)
        sl_prev[ax] = slice(0, -2)
        sl_next[ax] = slice(2, None)
        is_min &= (v <= p[tuple(sl_prev)]) & (v <= p[tuple(sl_next)])
    flat_min = is_min.ravel()
    order = np.argsort(values, kind="stable")
    return np.concatenate([order[flat_min[order]], order[~flat_min[order]]])


def polish(theta0: np.ndarray, problem: Problem, options: FitOptions,
           weights: np.ndarray | None):
    """One L-BFGS-B run from theta0; returns scipy's OptimizeResult (scaled objective)."""
    scale = 1.0 / options.huber_delta ** 2

    def fun(th):
        v, g = objective.value_and_grad(th, problem.logx, problem.logy, options.huber_delta, weights)
        return v * scale, g * scale

    return optimize.minimize(
        fun, theta0, jac=True, method="L-BFGS-B", bounds=bounds(problem.k, options),
        options={"ftol": options.ftol, "gtol": options.gtol, "maxiter": options.maxiter,
                 "maxfun": 2 * options.maxiter, "maxls": 50})


def projected_gradient(theta: np.ndarray, grad: np.ndarray, bnds) -> np.ndarray:
    """Gradient with components that push into an active bound zeroed."""
    g = grad.copy()
    for i, (lo, hi) in enumerate(bnds):
        if theta[i] <= lo + 1e-12 * (1 + abs(lo)) and g[i] > 0:
            g[i] = 0.0
        if theta[i] >= hi - 1e-12 * (1 + abs(hi)) and g[i] < 0:
            g[i] = 0.0
    return g


def solve(problem: Problem, options: FitOptions, names: tuple[str, ...],
          weights: np.ndarray | None = None, warm_starts: tuple[np.ndarray, ...] = (),
          n_polish: int | None = None) -> Solution:
    """Grid of starts, polish the best `n_polish`, keep the best result.

    Grid starts are taken local minima first. Warm starts (e.g. the full-data optimum
    in the bootstrap) join the grid's best few, and the `n_polish` with the lowest
    starting objective are polished.

    names: parameter names in theta order, for the at-bound report.
    """
    with single_thread():    # see analysis/blas.py: OpenBLAS threads only slow tiny problems
        return _solve(problem, options, names, weights, warm_starts, n_polish)


def _solve(problem, options, names, weights, warm_starts, n_polish) -> Solution:
    n_polish = options.n_polish if n_polish is None else n_polish
    thetas, values, shape = grid_starts(problem, options, weights)
    order = _grid_order(values, shape)[:n_polish]
    starts = [thetas[i] for i in order]
    if warm_starts:
        # Warm starts compete with the grid's best on their starting objective.
        cand = list(warm_starts) + starts
        v = [objective.value(w, problem.logx, problem.logy, options.huber_delta, weights)
             for w in warm_starts] + list(values[order])
        starts = [cand[i] for i in np.argsort(v, kind="stable")[:n_polish]]
    results = [polish(th, problem, options, weights) for th in starts]
    fs = np.array([r.fun for r in results])
    best = int(np.argmin(fs))
    res = results[best]
    n_reached = int((fs - fs[best] <= 1e-6 * max(fs[best], 1.0)).sum())

    theta = np.asarray(res.x, float)
    bnds = bounds(problem.k, options)
    f, g = objective.value_and_grad(theta, problem.logx, problem.logy, options.huber_delta, weights)
    pg = projected_gradient(theta, g, bnds)
    at_bound = tuple(names[i] for i, (lo, hi) in enumerate(bnds)
                     if theta[i] <= lo + 1e-6 * (1 + abs(lo)) or theta[i] >= hi - 1e-6 * (1 + abs(hi)))
    conv = Convergence(
        objective=f, grad_norm=float(np.abs(pg).max()), n_grid=len(values),
        n_polished=len(starts), n_reached=n_reached, at_bound=at_bound,
        success=bool(res.success), message=str(res.message), iterations=int(res.nit))
    return Solution(theta, conv)
