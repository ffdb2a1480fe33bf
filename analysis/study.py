"""Questions the study asks of fitted laws, and fits per scheme, per axis, on the frontier.

For one scheme (NE = alpha * x**(-beta) + gamma in its resource x):
* `gain_per_doubling`: NE(x) - NE(2x) at a given x (default: the largest measured);
* `multiplier_for_improvement`: the factor on x needed to lower NE by a given amount;
* `resource_for_target`: the x that reaches a target NE, or a clear "unreachable" when
  the target is at or below the fitted asymptote.
Each comes with a bootstrap percentile interval: the same quantity computed from every
refit, so the interval carries the correlation between alpha, beta and gamma.

Across schemes: `fit_schemes` fits each on its own resource (`results.RESOURCE_AXES`),
`compare_schemes` on common axes (parameters with and without embeddings, FLOPs,
examples), and `compute_frontier` fits the lower envelope of NE over training FLOPs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.bootstrap import percentile_interval
from analysis.laws import PowerLawFit, fit_power_law
from analysis.results import COMMON_AXES, ENVELOPE_SCHEMES, resource_axis
from analysis.validation import MIN_SPAN, Flag, fit_flags, holdout_check


@dataclass(frozen=True)
class Estimate:
    """A derived quantity with its bootstrap interval (None without a bootstrap)."""
    value: float
    lo: float | None = None
    hi: float | None = None
    at: float | None = None       # the resource value it refers to

    def to_dict(self) -> dict:
        return {"value": json_number(self.value), "lo": json_number(self.lo), "hi": json_number(self.hi),
                "at": json_number(self.at)}


def json_number(v):
    """JSON has no inf: write it as the string "inf" (and None stays None)."""
    if v is None:
        return None
    v = float(v)
    return v if np.isfinite(v) else ("inf" if v > 0 else "-inf" if v < 0 else None)


def _estimate(fit: PowerLawFit, fn, at: float | None = None) -> Estimate:
    """fn(alpha, beta, gamma) on the point estimate and on every bootstrap refit."""
    p = {k: np.float64(v) for k, v in fit.params.items()}   # numpy: (-1) ** 0.5 is nan, not complex
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        value = float(fn(p["alpha"], p["beta"], p["gamma"]))
    value = np.inf if np.isnan(value) else value
    if fit.samples is None:
        return Estimate(value, at=at)
    s = fit.samples
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        vals = np.asarray(fn(s["alpha"], s["beta"], s["gamma"]), float)
    vals = np.where(np.isnan(vals), np.inf, vals)
    lo, hi = percentile_interval(vals, fit.level)
    return Estimate(value, float(lo), float(hi), at)


def _largest_x(fit: PowerLawFit) -> float:
    return float(np.max(fit.data["x"]))


def gain_per_doubling(fit: PowerLawFit, at: float | None = None) -> Estimate:
    """NE(x) - NE(2x) = alpha * x**-beta * (1 - 2**-beta), at x = `at` (default: the
    largest measured x, i.e. what the next doubling beyond the data would buy)."""
    x = _largest_x(fit) if at is None else float(at)
    return _estimate(fit, lambda a, b, g: a * x ** -b * (1 - 2.0 ** -b), at=x)


def multiplier_for_improvement(fit: PowerLawFit, improvement: float, at: float | None = None,
                               relative: bool = True) -> Estimate:
    """Factor on the resource needed to lower NE by `improvement` from NE(at).

    relative=True: improvement is a fraction of NE(at) (0.01 = 1% better NE); else an
    absolute NE difference. inf when the improvement would cross the asymptote.
    """
    if not improvement > 0:
        raise ValueError(f"improvement must be > 0, got {improvement}")
    x = _largest_x(fit) if at is None else float(at)

    def mult(a, b, g):
        excess = a * x ** -b                       # NE(x) - gamma
        delta = improvement * (excess + g) if relative else improvement
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            m = (excess / (excess - delta)) ** (1.0 / b)
        return np.where((delta >= excess) | (b <= 0), np.inf, m)

    return _estimate(fit, mult, at=x)


@dataclass(frozen=True)
class Inversion:
    """The resource needed to reach a target NE."""
    target: float
    value: float                 # inf when the target is at or below gamma
    lo: float | None
    hi: float | None
    reachable: bool
    share_reachable: float | None  # share of bootstrap refits whose gamma < target
    message: str

    def to_dict(self) -> dict:
        return {"target": self.target, "value": json_number(self.value), "lo": json_number(self.lo),
                "hi": json_number(self.hi), "reachable": self.reachable,
                "share_reachable": self.share_reachable, "message": self.message}


def resource_for_target(fit: PowerLawFit, target: float, resource: str = "x") -> Inversion:
    """x with alpha * x**-beta + gamma = target, i.e. (alpha / (target - gamma))**(1/beta)."""
    def inv(a, b, g):
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            v = (a / (target - g)) ** (1.0 / b)
        return np.where((target <= g) | (b <= 0), np.inf, v)

    est = _estimate(fit, inv)
    g = fit.gamma
    g_ci = fit.ci.get("gamma")
    g_txt = f"{g:.4g}" + (f" [{g_ci[0]:.4g}, {g_ci[1]:.4g}]" if g_ci else "")
    share = None if fit.samples is None else float(np.mean(fit.samples["gamma"] < target))
    reachable = bool(np.isfinite(est.value))
    if not reachable:
        msg = (f"target {target:.4g} is at or below the fitted asymptote gamma = {g_txt}: "
               f"no amount of {resource} reaches it under this law")
        if share:
            msg += f" (though {share:.0%} of bootstrap refits put the asymptote below it)"
    elif est.hi is not None and not np.isfinite(est.hi):
        msg = (f"reaching {target:.4g} needs {resource} ~ {est.value:.3g}, but in "
               f"{1 - share:.0%} of bootstrap refits the asymptote is above the target, "
               "so the upper end is unbounded")
    else:
        msg = f"reaching {target:.4g} needs {resource} ~ {est.value:.3g}"
        if est.lo is not None:
            msg += f" [{est.lo:.3g}, {est.hi:.3g}]"
    return Inversion(target, est.value, est.lo, est.hi, reachable, share, msg)


# -- fits per scheme ---------------------------------------------------------------

@dataclass
class SchemeFit:
    """One scheme's law in its resource, with everything the report says about it."""
    scheme: str
    axis: str
    runs: list[str]
    fit: PowerLawFit | None
    bayes_ne: float | None
    flags: list[Flag] = field(default_factory=list)
    skipped: str | None = None          # why there is no fit
    holdout_skipped: str | None = None  # why there is no holdout check
    envelope: bool = False              # fitted to the lower envelope (grid schemes)
    n_scheme_runs: int = 0              # finished runs of the scheme usable on the axis


def points(df: pd.DataFrame, axis: str, y: str = "eval_ne") -> pd.DataFrame:
    """Rows usable on an axis: finite positive resource and finite NE."""
    if axis not in df.columns:
        return df.iloc[0:0]
    x = pd.to_numeric(df[axis], errors="coerce")
    ok = np.isfinite(x) & (x > 0) & np.isfinite(df[y])
    return df[ok]


def lower_envelope(df: pd.DataFrame, x: str, y: str = "eval_ne") -> pd.DataFrame:
    """Runs whose NE is strictly below that of every run with at most their x (a running
    minimum over x); among runs with equal x the best is kept."""
    pts = points(df, x, y)
    if x not in pts.columns:       # no such column: no points (as `points` says), not a KeyError
        return pts
    pts = pts.sort_values([x, y], kind="stable")
    keep, best = [], np.inf
    for i, v in zip(pts.index, pts[y]):
        if v < best:
            keep.append(i)
            best = v
    return pts.loc[keep]


def scheme_points(df: pd.DataFrame, scheme: str, axis: str) -> pd.DataFrame:
    """The runs a scheme's law is fitted to on an axis (the envelope for grid schemes)."""
    sub = df[df["sweep"].astype(str) == scheme]
    return lower_envelope(sub, axis) if scheme in ENVELOPE_SCHEMES else points(sub, axis)


def bayes_ne_of(df: pd.DataFrame) -> float | None:
    """The Bayes-optimal NE of the runs' evaluation set (None for real data)."""
    if "bayes_ne" not in df.columns:
        return None
    b = pd.to_numeric(df["bayes_ne"], errors="coerce")
    b = b[np.isfinite(b)]
    return float(b.median()) if len(b) else None


def fit_scheme(df: pd.DataFrame, scheme: str, axis: str | None = None, *, holdout: int = 1,
               **fit_kw) -> SchemeFit:
    """Fit NE against the scheme's resource; check by holdout; collect flags.

    Grid schemes (`results.ENVELOPE_SCHEMES`) are fitted to their lower envelope.
    Too few points is not an error here (the report lists the scheme as skipped).
    """
    axis = axis or resource_axis(scheme)
    own = df[df["sweep"].astype(str) == scheme]
    sub = scheme_points(df, scheme, axis)
    info = dict(scheme=scheme, axis=axis, runs=[str(r) for r in sub["run"]], bayes_ne=bayes_ne_of(own),
                envelope=scheme in ENVELOPE_SCHEMES, n_scheme_runs=len(points(own, axis)))
    if axis not in df.columns:
        return SchemeFit(fit=None, skipped=f"no column {axis!r} in the results", **info)
    try:
        f = fit_power_law(sub[axis].to_numpy(float), sub["eval_ne"].to_numpy(float), **fit_kw)
    except ValueError as e:
        return SchemeFit(fit=None, skipped=str(e), **info)
    out = SchemeFit(fit=f, **info)
    if holdout:
        try:
            f.holdout = holdout_check(_refit_x, {"x": f.data["x"]}, f.data["y"], k=holdout,
                                      who=f"{scheme} holdout", **fit_kw)
        except ValueError as e:
            out.holdout_skipped = str(e)
    out.flags = fit_flags(f, bayes_ne=out.bayes_ne, label=axis)
    return out


def _refit_x(columns, y, **fit_kw) -> PowerLawFit:
    return fit_power_law(columns["x"], y, **fit_kw)


def fit_schemes(df: pd.DataFrame, axes: dict[str, str] | None = None, *, holdout: int = 1,
                **fit_kw) -> dict[str, SchemeFit]:
    """`fit_scheme` for every scheme in df['sweep'], in order of appearance."""
    schemes = list(dict.fromkeys(df["sweep"].astype(str)))
    return {s: fit_scheme(df, s, resource_axis(s, axes), holdout=holdout, **fit_kw) for s in schemes}


@dataclass
class Comparison:
    """Schemes on common axes: a table and the fits behind it, keyed (scheme, axis)."""
    table: pd.DataFrame
    fits: dict[tuple[str, str], PowerLawFit]


def compare_schemes(df: pd.DataFrame, axes=COMMON_AXES, *, reuse: dict[str, SchemeFit] | None = None,
                    **fit_kw) -> Comparison:
    """Fit every scheme against every common axis it varies along.

    An axis counts when it takes >= 3 distinct values spanning at least a factor
    `MIN_SPAN` (a power law over a few percent of x is not a measurement). reuse:
    scheme fits already made (their own axis is not refitted). The table has beta,
    gamma, the NE gain per doubling of the axis at the scheme's largest value, and the
    codes of any flags (a flagged row should not decide a comparison).
    """
    rows, fits = [], {}
    for scheme in dict.fromkeys(df["sweep"].astype(str)):
        for axis in axes:
            sub = scheme_points(df, scheme, axis)
            if len(sub) == 0 or sub[axis].nunique() < 3 or sub[axis].max() < MIN_SPAN * sub[axis].min():
                continue
            sf = (reuse or {}).get(scheme)
            if sf is not None and sf.axis == axis and sf.fit is not None:
                f = sf.fit
            else:
                try:
                    f = fit_power_law(sub[axis].to_numpy(float), sub["eval_ne"].to_numpy(float), **fit_kw)
                except ValueError:
                    continue
            fits[(scheme, axis)] = f
            gain = gain_per_doubling(f)
            ci = f.ci
            rows.append({
                "scheme": scheme, "axis": axis, "n_points": f.n_points,
                "x_min": float(f.data["x"].min()), "x_max": float(f.data["x"].max()),
                "alpha": f.alpha, "beta": f.beta,
                "beta_lo": ci.get("beta", (None, None))[0], "beta_hi": ci.get("beta", (None, None))[1],
                "gamma": f.gamma,
                "gamma_lo": ci.get("gamma", (None, None))[0], "gamma_hi": ci.get("gamma", (None, None))[1],
                "gain_per_doubling": gain.value, "gain_lo": gain.lo, "gain_hi": gain.hi,
                "flags": ",".join(fl.code for fl in fit_flags(f, label=axis)),
            })
    return Comparison(pd.DataFrame(rows), fits)


@dataclass
class Frontier:
    """Compute-efficient frontier: runs not beaten by any run with fewer (or equal) FLOPs."""
    points: pd.DataFrame
    fit: PowerLawFit | None
    flags: list[Flag] = field(default_factory=list)
    skipped: str | None = None


def compute_frontier(df: pd.DataFrame, x: str = "train_flops", y: str = "eval_ne",
                     **fit_kw) -> Frontier:
    """Lower envelope of NE over FLOPs across all runs (a running minimum), then a fit.

    A run is on the frontier when its NE is strictly below that of every run with at
    most its FLOPs; ties in FLOPs keep the best run.
    """
    front = lower_envelope(df, x, y)
    bayes = bayes_ne_of(df)
    try:
        f = fit_power_law(front[x].to_numpy(float), front[y].to_numpy(float), **fit_kw)
    except ValueError as e:
        return Frontier(front, None, skipped=str(e))
    return Frontier(front, f, fit_flags(f, bayes_ne=bayes, label=x))
