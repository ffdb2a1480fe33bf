"""Is the fit to be trusted? Held-out extrapolation and flags for poor fits.

A scaling law is used to extrapolate, so the honest test is to extrapolate: fit on all
but the largest k scales and compare the prediction (and its bootstrap interval) with
the held-out runs. The flags collect what a careful reader would check before quoting
a fit: the optimiser's own evidence, a systematic pattern in the residuals (the wrong
functional form, e.g. the learning onset of docs/DESIGN.md section 4.6), a large held-out error,
and an asymptote below the Bayes-optimal NE, which no model can beat.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from analysis.fitting import bounds

# Thresholds, in one place so the report can quote them.
PATTERN_P = 0.05               # residuals smoother along x than chance at this level
HOLDOUT_RMS_FACTOR = 3.0       # held-out error is big beyond 3x the in-sample RMS residual,
HOLDOUT_MIN_REL_ERROR = 0.005  # ... but never below 0.5% (noise between seeds)
HOLDOUT_MAX_REL_ERROR = 0.02   # ... and always beyond 2% (an NE gap that decides comparisons)
MIN_SHARE_REACHED = 0.5        # share of polished starts reaching the optimum
GRAD_REL_TOL = 1e-4            # projected gradient vs max(objective, delta**2)
MIN_SPAN = 2.0                 # a resource range narrower than this factor measures no power law


@dataclass(frozen=True)
class HoldoutCheck:
    """Fit on all but the k largest scales; predictions for the held-out points."""
    k: int
    held_out: np.ndarray            # indices into the caller's points
    resources: dict                 # resource name -> held-out values
    observed: np.ndarray
    predicted: np.ndarray
    lo: np.ndarray | None
    hi: np.ndarray | None
    fit: object = field(repr=False)  # the fit on the remaining points

    @property
    def rel_error(self) -> np.ndarray:
        """(predicted - observed) / observed per held-out point."""
        return (self.predicted - self.observed) / self.observed

    @property
    def max_abs_rel_error(self) -> float:
        return float(np.abs(self.rel_error).max())

    @property
    def inside(self) -> np.ndarray | None:
        if self.lo is None:
            return None
        return (self.lo <= self.observed) & (self.observed <= self.hi)

    def to_dict(self) -> dict:
        inside = self.inside
        points = []
        for i in range(len(self.observed)):
            p = {name: float(v[i]) for name, v in self.resources.items()}
            p.update(observed=float(self.observed[i]), predicted=float(self.predicted[i]),
                     rel_error=float(self.rel_error[i]))
            if inside is not None:
                p.update(lo=float(self.lo[i]), hi=float(self.hi[i]), inside=bool(inside[i]))
            points.append(p)
        return {
            "k": self.k, "n_held_out": len(self.observed), "points": points,
            "max_abs_rel_error": self.max_abs_rel_error,
            "all_inside": None if inside is None else bool(inside.all()),
            "fit_on_rest": {"params": dict(self.fit.params),
                            "ci": {n: list(v) for n, v in self.fit.ci.items()},
                            "n_points": self.fit.n_points},
        }


def holdout_check(refit: Callable, columns: dict, y, *, k: int = 1, who: str = "fit",
                  **fit_kwargs) -> HoldoutCheck:
    """Refit without the points at the k largest scales and predict them.

    refit(columns, y, **fit_kwargs) -> fit: how to fit the remaining points (the same
    procedure as the full fit, without a holdout of its own).

    The scale of a point is the product of its resources (x for one term, n * d for
    two: proportional to compute for a dense model). All runs at a held-out scale
    (e.g. several seeds) are held out together.
    """
    if int(k) != k or k < 1:
        raise ValueError(f"{who}: holdout must be a count >= 1, got {k!r}")
    cols = {n: np.asarray(c, float) for n, c in columns.items()}
    y = np.asarray(y, float)
    scale = np.prod(np.column_stack(list(cols.values())), axis=1)
    distinct = np.unique(scale)
    if k >= len(distinct):
        raise ValueError(f"{who}: holdout {k} would hold out all {len(distinct)} scales")
    held = scale >= distinct[-k]
    try:
        rest = refit({n: c[~held] for n, c in cols.items()}, y[~held], **fit_kwargs)
    except ValueError as e:
        raise ValueError(f"{who}: holding out the {k} largest scale(s) leaves too little to fit: {e}") from None
    held_cols = [c[held] for c in cols.values()]
    predicted = np.atleast_1d(rest._predict(*held_cols))
    lo = hi = None
    if rest.bootstrap is not None:
        lo, hi = (np.atleast_1d(v) for v in rest._predict_interval(*held_cols))
    return HoldoutCheck(k=int(k), held_out=np.flatnonzero(held),
                        resources={n: c[held] for n, c in cols.items()},
                        observed=y[held], predicted=predicted, lo=lo, hi=hi, fit=rest)


def residual_pattern_p(residuals: np.ndarray, x: np.ndarray, n_perm: int = 20_000) -> float:
    """Permutation p-value for smooth (positively autocorrelated) residuals along x.

    Statistic: the Durbin-Watson ratio sum((r[i+1] - r[i])**2) / sum((r - mean)**2) of
    the residuals ordered by x; small when neighbours agree, i.e. the residuals trace a
    curve the law cannot follow (noise gives ~2). p = share of `n_perm` random
    orderings of the same residuals with a ratio at most the observed one (fixed seed,
    so the report is reproducible).
    Residuals of repeated runs at one x are averaged first. Fitted residuals of a
    correct law are slightly anti-correlated, so the test errs on the quiet side.
    """
    xs = np.unique(x)
    r = np.array([residuals[x == v].mean() for v in xs])
    if len(r) < 4 or np.ptp(r) == 0:
        return 1.0
    r = r - r.mean()
    rng = np.random.default_rng(0)
    rp = rng.permuted(np.tile(r, (n_perm, 1)), axis=1)
    stat = (np.diff(rp, axis=1) ** 2).sum(axis=1)
    observed = (np.diff(r) ** 2).sum()
    return float(np.mean(stat <= observed * (1 + 1e-12)))


@dataclass(frozen=True)
class Flag:
    code: str       # stable, for scripts: not_converged, multiple_optima, at_bound, ...
    message: str    # one sentence for the report

    def to_dict(self) -> dict:
        return {"code": self.code, "message": self.message}


def fit_flags(fit, x: np.ndarray | None = None, bayes_ne: float | None = None,
              asymptote: str | None = None, label: str | None = None) -> list[Flag]:
    """Everything suspicious about a fit, most serious first.

    x: the resource to order residuals by (default: the fit's first resource);
    bayes_ne: Bayes-optimal NE of the evaluation data, if known; asymptote: name of the
    parameter compared with it (default: the fit's constant); label: what to call a
    one-term fit's resource in messages (e.g. "train_flops").
    """
    flags = []
    c = fit.convergence
    if c.grad_norm > GRAD_REL_TOL * max(c.objective, fit.options.huber_delta ** 2):
        flags.append(Flag("not_converged", f"projected gradient norm {c.grad_norm:.2g} is large "
                          f"for objective {c.objective:.3g}: the optimiser did not converge"))
    if c.share_reached < MIN_SHARE_REACHED:
        flags.append(Flag("multiple_optima", f"only {c.n_reached} of {c.n_polished} polished starts "
                          "reached the best objective: the law may have several optima"))
    for name in c.at_bound:
        why = {"gamma": "the asymptote collapsed to ~0, typical of points in the learning onset "
                        "rather than the power-law regime",
               "E": "the irreducible term collapsed to ~0"}.get(name, "the data do not pin it down")
        flags.append(Flag("at_bound", f"{name} is at a bound of the search range: {why}"))
    if fit.bootstrap is not None:
        # A parameter that many refits push onto a bound has an open-ended interval. A
        # coefficient counts as on its lower bound once its term is below 1e-6 of the
        # typical y (normalised log < log 1e-6): the term has vanished either way.
        th = fit.bootstrap.thetas
        k = len(fit.terms)
        for i, (name, (lo, hi)) in enumerate(zip(fit.theta_names(), bounds(k, fit.options))):
            is_coef = i < k or i == 2 * k
            floor = max(lo + 1e-6 * (1 + abs(lo)), np.log(1e-6)) if is_coef else lo + 1e-6 * (1 + abs(lo))
            share = float(np.mean((th[:, i] <= floor) | (th[:, i] >= hi - 1e-6 * (1 + abs(hi)))))
            if share > (1 - fit.level) / 2 and name not in c.at_bound:
                flags.append(Flag("open_interval", f"{share:.0%} of bootstrap refits put {name} on a bound of the "
                                  "search range: its interval is open-ended, the runs do not determine it"))
    resource = x if x is not None else fit.data[fit.terms[0][2]]
    for _, _, name in fit.terms:
        v = fit.data[name]
        if v.max() < MIN_SPAN * v.min():
            shown = label if label and len(fit.terms) == 1 else name
            flags.append(Flag("narrow_range", f"{shown} spans only a factor {v.max() / v.min():.3g}: "
                              "too narrow to measure a power law (exponent and asymptote are guesses)"))
    p = residual_pattern_p(fit.log_residuals, resource)
    if p < PATTERN_P:
        flags.append(Flag("residual_pattern", f"residuals follow a smooth curve along the resource "
                          f"(permutation p = {p:.3f}): systematic misfit, the form may be wrong"))
    h = fit.holdout
    if h is not None:
        rms = float(np.sqrt(np.mean(fit.log_residuals ** 2)))
        limit = min(max(HOLDOUT_MIN_REL_ERROR, HOLDOUT_RMS_FACTOR * rms), HOLDOUT_MAX_REL_ERROR)
        if h.max_abs_rel_error > limit:
            flags.append(Flag("holdout_error", f"held-out relative error {h.max_abs_rel_error:.2%} exceeds "
                              f"{limit:.2%} (3x the in-sample RMS residual, kept within 0.5%..2%)"))
        if h.inside is not None and not h.inside.all():
            flags.append(Flag("holdout_outside", f"{int((~h.inside).sum())} of {len(h.inside)} held-out "
                              "point(s) fall outside the bootstrap interval of the extrapolation"))
    name = asymptote or fit.constant
    if bayes_ne is not None and np.isfinite(bayes_ne):
        hi = fit.ci.get(name, (None, fit.params[name]))[1]
        if hi < bayes_ne:
            flags.append(Flag("below_bayes", f"fitted asymptote {name} = {fit.params[name]:.4g} "
                              f"(upper end {hi:.4g}) is below the Bayes-optimal NE {bayes_ne:.4g}, "
                              "which no model can beat: the fit extrapolates wrongly"))
    return flags
