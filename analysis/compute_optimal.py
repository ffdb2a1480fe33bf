"""Compute-optimal allocation: for a training-FLOP budget C, how big a model and how much data.

Three estimates, as Hoffmann et al. 2022 (Chinchilla) made them, of the power laws

    N_opt(C) = G * C**a        D_opt(C) = H * C**b

(N: dense, FLOP-bearing parameters; D: training examples; C: the run's FLOP budget,
from an IsoFLOP sweep, `sweeps/isoflop.py`):

* envelope (approach 1): per budget the run with the lowest NE; a line through
  (log C, log N) of those runs, and one through (log C, log D);
* IsoFLOP profiles (approach 2): per budget a parabola NE(log N) through its runs; its
  minimum (inside the sizes tried: the vertex, clipped to their range) and the D there
  (log D is linear in log N at fixed C, interpolated between the budget's runs); lines
  through the minima;
* joint law (approach 3): y = E + A / N**alpha + B / D**beta fitted on every run
  (`fit_additive_power_law`). With C = k N D, minimising it over N at fixed C gives
  N_opt = (alpha A / (beta B))**(1/(alpha+beta)) * (C/k)**a,  a = beta/(alpha+beta),
  D_opt = C / (k N_opt), b = alpha/(alpha+beta) (Hoffmann et al. eq. 4, with k = 6 for
  transformers). Here k = C / (N D) is measured from the runs (its geometric mean);
  along a DLRM scaling path it is not exactly constant (the interaction's FLOPs do
  not scale with N), so its spread is reported and flagged beyond 1.5x.

Intervals (bootstrap, percentile):
* joint: case resampling of runs, the law refitted on each resample (`analysis.bootstrap`);
* envelope and IsoFLOP: each replicate resamples runs within every budget (stratified),
  recomputes the per-budget optima and refits the lines, and adds a residual bootstrap
  of the lines' scatter (leverage-corrected residuals of the full-data line fit, drawn
  with replacement). The residual part carries what within-budget resampling cannot see:
  with few sizes per budget the optimum is quantised to the grid (envelope) or biased
  by the parabola's shape, and that shows as scatter about the line. With K budgets the
  scatter is estimated from K - 2 degrees of freedom, so the resampled residuals are
  inflated by t_{K-2} / z at the interval level: for Gaussian scatter the percentile
  interval then matches the exact t interval of the slope rather than a normal one
  that is too narrow (K = 4: 4.30 / 1.96).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from analysis.bootstrap import percentile_interval
from analysis.fitting import FitOptions
from analysis.laws import AdditivePowerLawFit, fit_additive_power_law
from analysis.study import Estimate
from analysis.validation import Flag

MIN_BUDGETS = 3          # a line through the optima needs a degree of freedom to check it
MIN_SIZES = 3            # a parabola needs 3 sizes per budget
BUDGET_COLUMN = "train.flop_budget"
K_SPREAD_FLAG = 1.5      # flag when C / (N D) varies more than this factor across runs
METHODS = ("envelope", "isoflop", "joint")
METHOD_LABELS = {"envelope": "envelope (best run per budget)",
                 "isoflop": "IsoFLOP profiles (parabola minima)",
                 "joint": "joint law E + A/N^alpha + B/D^beta"}


# -- input -------------------------------------------------------------------------

@dataclass(frozen=True)
class IsoFLOPData:
    """Validated runs of an IsoFLOP study, grouped by budget (budgets ascending).

    budget, n, d, y: (R,) per run; budgets: (K,); groups: K index arrays into the runs.
    """
    budget: np.ndarray
    n: np.ndarray
    d: np.ndarray
    y: np.ndarray
    runs: tuple[str, ...]
    budgets: np.ndarray
    groups: tuple[np.ndarray, ...]

    @property
    def k_flops(self) -> np.ndarray:
        """C / (N D) per run: training FLOPs per example per dense parameter."""
        return self.budget / (self.n * self.d)


def check_isoflop(budget, n, d, y, runs=None, who: str = "compute_optimal") -> IsoFLOPData:
    """Validate and group; ValueError naming the problem (which column, run or budget)."""
    cols = {}
    for name, v in (("budget", budget), ("n", n), ("d", d), ("y", y)):
        try:
            a = np.asarray(v, dtype=float)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{who}: {name} is not numeric ({e})") from None
        if a.ndim != 1:
            raise ValueError(f"{who}: {name} must be 1-D, got shape {a.shape}")
        cols[name] = a
    r = len(cols["y"])
    runs = tuple(str(x) for x in runs) if runs is not None else tuple(f"row{i}" for i in range(r))
    for name, a in cols.items():
        if len(a) != r or len(runs) != r:
            raise ValueError(f"{who}: {name} has {len(a)} values but y has {r}")
        bad = ~np.isfinite(a)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{who}: {name} of run {runs[i]} is {a[i]}, not finite")
        if (a <= 0).any():
            i = int(np.flatnonzero(a <= 0)[0])
            raise ValueError(f"{who}: {name} of run {runs[i]} is {a[i]:g}; it must be > 0")
    budgets = np.unique(cols["budget"])
    if len(budgets) < MIN_BUDGETS:
        raise ValueError(f"{who}: {len(budgets)} FLOP budget(s) ({', '.join(f'{c:.3g}' for c in budgets)}); "
                         f"need at least {MIN_BUDGETS} to fit how the optimum moves with compute")
    groups = tuple(np.flatnonzero(cols["budget"] == c) for c in budgets)
    for c, g in zip(budgets, groups):
        sizes = len(np.unique(cols["n"][g]))
        if sizes < MIN_SIZES:
            raise ValueError(f"{who}: budget {c:.4g} has {sizes} model size(s); need at least {MIN_SIZES} "
                             "per budget for an IsoFLOP profile")
    return IsoFLOPData(cols["budget"], cols["n"], cols["d"], cols["y"], runs, budgets, groups)


def isoflop_runs(df: pd.DataFrame, budget_column: str = BUDGET_COLUMN) -> pd.DataFrame:
    """The runs of a results DataFrame that belong to an IsoFLOP study (budget > 0)."""
    if budget_column not in df.columns:
        return df.iloc[0:0]
    b = pd.to_numeric(df[budget_column], errors="coerce")
    return df[np.isfinite(b) & (b > 0)]


def data_from_results(df: pd.DataFrame, budget_column: str = BUDGET_COLUMN) -> IsoFLOPData:
    """IsoFLOPData from `load_results` rows: budget, params_dense, train_examples, eval_ne."""
    sub = isoflop_runs(df, budget_column)
    if sub.empty:
        raise ValueError(f"no IsoFLOP runs: no run has a positive {budget_column!r} "
                         "(run `dlrm-scaling sweep isoflop`)")
    for col in ("params_dense", "train_examples", "eval_ne"):
        if col not in sub.columns:
            raise ValueError(f"IsoFLOP runs have no {col!r} column")
    return check_isoflop(pd.to_numeric(sub[budget_column], errors="coerce"), sub["params_dense"],
                         sub["train_examples"], sub["eval_ne"], sub["run"] if "run" in sub else None)


# -- per-budget optima -------------------------------------------------------------

def _best_run(logn, logd, y):
    """Envelope: (log N, log D, NE, at_edge) of the lowest-NE run."""
    i = int(np.argmin(y))
    return logn[i], logd[i], y[i], bool(logn[i] in (logn.min(), logn.max()))


def _parabola_min(logn, logd, y):
    """IsoFLOP: the minimum of the least-squares parabola NE(log N), clipped to the sizes tried.

    Returns (log N*, log D*, NE at the vertex, at_edge, coefficients (c2, c1, c0) in log N).
    at_edge: no valley (curvature <= 0) or the vertex outside the sizes tried.
    """
    c2, c1, c0 = np.polyfit(logn, y, 2)
    lo, hi = logn.min(), logn.max()
    if c2 > 0:
        u = -c1 / (2 * c2)
        at_edge = not (lo < u < hi)
        u = min(max(u, lo), hi)
    else:                        # no valley: the lower end of the parabola on the range
        u = lo if np.polyval((c2, c1, c0), lo) <= np.polyval((c2, c1, c0), hi) else hi
        at_edge = True
    # At fixed C, log D = log C - log k(N) - log N is close to linear in log N.
    s, t = np.polyfit(logn, logd, 1)
    return u, s * u + t, float(np.polyval((c2, c1, c0), u)), at_edge, (c2, c1, c0)


def _optima(data: IsoFLOPData, method: str, idx_per_budget=None):
    """(K, 2) log N*, log D* per budget (+ NE, at-edge flags) for one resample of runs."""
    logn, logd = np.log(data.n), np.log(data.d)
    out, ne, edge, coefs = np.empty((len(data.budgets), 2)), [], [], []
    for k, g in enumerate(data.groups):
        g = g if idx_per_budget is None else idx_per_budget[k]
        if method == "envelope":
            u, v, yy, e = _best_run(logn[g], logd[g], data.y[g])
            c = None
        else:
            u, v, yy, e, c = _parabola_min(logn[g], logd[g], data.y[g])
        out[k] = u, v
        ne.append(yy)
        edge.append(e)
        coefs.append(c)
    return out, ne, edge, coefs


def _line(logc: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """OLS of each column of z (K, m) on log C: (slopes (m,), intercepts (m,))."""
    x = logc - logc.mean()
    slope = (x[:, None] * z).sum(0) / (x ** 2).sum()
    return slope, z.mean(0) - slope * logc.mean()


# -- the result --------------------------------------------------------------------

@dataclass
class Allocation:
    """N_opt = G C**a and D_opt = H C**b from one method, with bootstrap samples."""
    method: str
    a: Estimate
    b: Estimate
    log_g: float
    log_h: float
    level: float
    samples: dict[str, np.ndarray] | None = field(default=None, repr=False)  # a, b, log_g, log_h
    per_budget: list[dict] = field(default_factory=list)

    def n_opt(self, c):
        return np.exp(self.log_g + self.a.value * np.log(c))

    def d_opt(self, c):
        return np.exp(self.log_h + self.b.value * np.log(c))

    def _interval(self, c, coef: str, expo: str):
        if self.samples is None:
            return None
        logc = np.log(np.atleast_1d(np.asarray(c, float)))
        s = np.exp(self.samples[coef][:, None] + self.samples[expo][:, None] * logc[None, :])
        lo, hi = percentile_interval(s, self.level)
        return (lo, hi) if np.ndim(c) else (float(lo[0]), float(hi[0]))

    def n_opt_interval(self, c):
        return self._interval(c, "log_g", "a")

    def d_opt_interval(self, c):
        return self._interval(c, "log_h", "b")

    def to_dict(self) -> dict:
        return {"method": self.method, "label": METHOD_LABELS[self.method], "a": self.a.to_dict(),
                "b": self.b.to_dict(), "G": float(np.exp(self.log_g)), "H": float(np.exp(self.log_h)),
                "law": "N_opt = G * C**a, D_opt = H * C**b", "per_budget": self.per_budget}


def _estimate(value: float, samples: np.ndarray | None, level: float) -> Estimate:
    if samples is None:
        return Estimate(float(value))
    lo, hi = percentile_interval(samples, level)
    return Estimate(float(value), float(lo), float(hi))


def _from_optima(method: str, data: IsoFLOPData, bootstrap: int, seed: int, level: float) -> Allocation:
    """Envelope or IsoFLOP allocation: lines through per-budget optima, two-part bootstrap."""
    logc = np.log(data.budgets)
    opt, ne, edge, _ = _optima(data, method)
    slope, icpt = _line(logc, opt)
    per = []
    for k, c in enumerate(data.budgets):
        per.append({"budget": float(c), "n_opt": float(np.exp(opt[k, 0])), "d_opt": float(np.exp(opt[k, 1])),
                    "ne": float(ne[k]), "at_edge": edge[k]})
    samples = None
    if bootstrap:
        rng = np.random.default_rng(seed)
        kb = len(logc)
        # Leverage-corrected residuals of the full-data line, inflated by t_{K-2}/z (module docstring).
        x = logc - logc.mean()
        h = 1 / kb + x ** 2 / (x ** 2).sum()
        resid = (opt - (icpt + slope * logc[:, None])) / np.sqrt(1 - h)[:, None]
        resid -= resid.mean(0)
        q = (1 + level) / 2
        resid *= stats.t.ppf(q, kb - 2) / stats.norm.ppf(q)
        draws = np.empty((bootstrap, 4))
        within = np.empty((bootstrap, kb, 2))      # per-budget optima of the within-budget resamples
        need = 1 if method == "envelope" else MIN_SIZES
        for s in range(bootstrap):
            idx = []
            for g in data.groups:
                for _ in range(100):
                    pick = g[rng.integers(0, len(g), len(g))]
                    if len(np.unique(data.n[pick])) >= need:
                        break
                idx.append(pick)
            o, *_ = _optima(data, method, idx)
            within[s] = o
            o = o + resid[rng.integers(0, kb, kb)]
            sl, ic = _line(logc, o)
            draws[s] = sl[0], sl[1], ic[0], ic[1]
        samples = {"a": draws[:, 0], "b": draws[:, 1], "log_g": draws[:, 2], "log_h": draws[:, 3]}
        lo, hi = percentile_interval(np.exp(within), level)     # (K, 2) each
        for k, p in enumerate(per):
            p.update(n_lo=float(lo[k, 0]), n_hi=float(hi[k, 0]), d_lo=float(lo[k, 1]), d_hi=float(hi[k, 1]))
    return Allocation(method, _estimate(slope[0], None if samples is None else samples["a"], level),
                      _estimate(slope[1], None if samples is None else samples["b"], level),
                      float(icpt[0]), float(icpt[1]), level, samples, per)


def envelope_allocation(data: IsoFLOPData, *, bootstrap: int = 200, seed: int = 0,
                        level: float = 0.95) -> Allocation:
    """Approach 1: lines through each budget's best run."""
    return _from_optima("envelope", data, bootstrap, seed, level)


def isoflop_allocation(data: IsoFLOPData, *, bootstrap: int = 200, seed: int = 0,
                       level: float = 0.95) -> Allocation:
    """Approach 2: lines through the minima of each budget's parabola NE(log N)."""
    return _from_optima("isoflop", data, bootstrap, seed, level)


def joint_allocation(fit: AdditivePowerLawFit, k_flops: float, budgets=()) -> Allocation:
    """Allocation from a fitted E + A/N^alpha + B/D^beta with C = k_flops * N * D."""
    def parts(A, alpha, B, beta):
        a = beta / (alpha + beta)
        log_g = np.log(alpha * A / (beta * B)) / (alpha + beta) - a * np.log(k_flops)
        return a, 1 - a, log_g, -np.log(k_flops) - log_g

    p = fit.params
    a, b, log_g, log_h = (float(v) for v in parts(p["A"], p["alpha"], p["B"], p["beta"]))
    samples = None
    if fit.samples is not None:
        s = fit.samples
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            sa, sb, sg, sh = parts(s["A"], s["alpha"], s["B"], s["beta"])
        # A refit with alpha = beta = 0 has no optimum; it counts as an unbounded draw.
        samples = {k: np.where(np.isfinite(v), v, np.inf) for k, v in
                   {"a": sa, "b": sb, "log_g": sg, "log_h": sh}.items()}
    out = Allocation("joint", _estimate(a, None if samples is None else samples["a"], fit.level),
                     _estimate(b, None if samples is None else samples["b"], fit.level),
                     log_g, log_h, fit.level, samples)
    for c in budgets:
        n_opt, d_opt = float(out.n_opt(c)), float(out.d_opt(c))
        out.per_budget.append({"budget": float(c), "n_opt": n_opt, "d_opt": d_opt,
                               "ne": float(fit.predict(n_opt, d_opt)), "at_edge": False})
    return out


@dataclass
class ComputeOptimal:
    """The three estimates side by side, the joint fit, and what a reader should check."""
    data: IsoFLOPData
    allocations: dict[str, Allocation]
    joint_fit: AdditivePowerLawFit
    k_flops: float                    # geometric mean of C / (N D)
    k_spread: float                   # max / min of C / (N D) over runs
    parabolas: list[tuple[float, float, float]]   # per budget: (c2, c1, c0) in log N
    flags: list[Flag] = field(default_factory=list)
    level: float = 0.95

    def disagreements(self) -> list[tuple[str, str]]:
        """Pairs of methods whose intervals for a do not overlap."""
        out = []
        names = [m for m in METHODS if self.allocations[m].a.lo is not None]
        for i, m1 in enumerate(names):
            for m2 in names[i + 1:]:
                e1, e2 = self.allocations[m1].a, self.allocations[m2].a
                if e1.hi < e2.lo or e2.hi < e1.lo:
                    out.append((m1, m2))
        return out


def compute_optimal(data: IsoFLOPData, *, bootstrap: int = 200, seed: int = 0, level: float = 0.95,
                    options: FitOptions | None = None) -> ComputeOptimal:
    """The three estimates of the compute-optimal allocation for one IsoFLOP study."""
    if not 0 < level < 1:
        raise ValueError(f"compute_optimal: level must be in (0, 1), got {level}")
    if isinstance(bootstrap, bool) or int(bootstrap) != bootstrap or bootstrap < 0:
        raise ValueError(f"compute_optimal: bootstrap must be a count >= 0, got {bootstrap!r}")
    k = data.k_flops
    k_flops, k_spread = float(np.exp(np.log(k).mean())), float(k.max() / k.min())
    fit = fit_additive_power_law(data.n, data.d, data.y, bootstrap=bootstrap, seed=seed, level=level,
                                 options=options)
    allocs = {"envelope": envelope_allocation(data, bootstrap=bootstrap, seed=seed, level=level),
              "isoflop": isoflop_allocation(data, bootstrap=bootstrap, seed=seed, level=level),
              "joint": joint_allocation(fit, k_flops, data.budgets)}
    _, _, _, coefs = _optima(data, "isoflop")
    out = ComputeOptimal(data, allocs, fit, k_flops, k_spread, coefs, level=level)
    out.flags = _flags(out)
    return out


def compute_optimal_from_results(df: pd.DataFrame, budget_column: str = BUDGET_COLUMN,
                                 **kw) -> ComputeOptimal:
    return compute_optimal(data_from_results(df, budget_column), **kw)


def _flags(co: ComputeOptimal) -> list[Flag]:
    flags = []
    for m1, m2 in co.disagreements():
        e1, e2 = co.allocations[m1].a, co.allocations[m2].a
        flags.append(Flag("methods_disagree",
                          f"{m1} a = {e1.value:.3g} [{e1.lo:.3g}, {e1.hi:.3g}] and {m2} a = {e2.value:.3g} "
                          f"[{e2.lo:.3g}, {e2.hi:.3g}]: the intervals do not overlap"))
    for m in ("envelope", "isoflop"):
        edges = [p["budget"] for p in co.allocations[m].per_budget if p["at_edge"]]
        if edges:
            what = "best run is the smallest or largest size" if m == "envelope" else \
                "parabola has no minimum inside the sizes tried"
            flags.append(Flag(f"{m}_at_edge",
                              f"{m}: at budget(s) {', '.join(f'{c:.3g}' for c in edges)} the {what}; "
                              "the optimum there is not measured (widen the sizes)"))
    if co.k_spread > K_SPREAD_FLAG:
        flags.append(Flag("flops_not_proportional",
                          f"C / (N D) varies {co.k_spread:.2f}x across runs (geometric mean {co.k_flops:.3g}): "
                          "the joint law's closed-form allocation assumes C = k N D"))
    j = co.allocations["joint"]
    if j.samples is not None and not np.all(np.isfinite(j.samples["a"])):
        flags.append(Flag("joint_no_optimum", "some bootstrap refits of the joint law have alpha = beta = 0 "
                          "(no optimum); the interval of a is unbounded"))
    return flags
