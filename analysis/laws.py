"""The public fits: `fit_power_law`, `fit_additive_power_law` and the objects they return.

    f = fit_power_law(x, y)                  # y = alpha * x**(-beta) + gamma
    f.alpha, f.beta, f.gamma, f.predict(x), f.ci, f.predict_interval(x)
    g = fit_additive_power_law(n, d, y)      # y = E + A * n**(-alpha) + B * d**(-beta)
    g.E, g.A, g.alpha, g.B, g.beta, g.predict(n, d)

Parameters are reported in the caller's units; internally the fit works on resources
and y divided by their geometric means (see `fitting`). `ci` holds percentile
intervals from a bootstrap over points (runs), `bootstrap=0` skips it.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from analysis import objective
from analysis.bootstrap import Bootstrap, percentile_interval, run_bootstrap
from analysis.fitting import FitOptions, check_and_normalise, solve
from analysis.validation import HoldoutCheck, holdout_check


class LawFit:
    """Common machinery; subclasses name the terms.

    terms: (coefficient name, exponent name, resource name) per power term;
    constant: the name of the additive constant.
    """
    form: str = ""
    terms: tuple[tuple[str, str, str], ...] = ()
    constant: str = ""
    names: tuple[str, ...] = ()          # public order, for tables

    def __init__(self, columns: dict[str, np.ndarray], y: np.ndarray, *, bootstrap: int = 200,
                 seed: int = 0, level: float = 0.95, options: FitOptions | None = None,
                 holdout: int = 0, who: str = "fit"):
        if not 0 < level < 1:
            raise ValueError(f"{who}: level must be in (0, 1), got {level}")
        if int(bootstrap) != bootstrap or bootstrap < 0:
            raise ValueError(f"{who}: bootstrap must be a count >= 0, got {bootstrap!r}")
        self.options = options or FitOptions()
        problem, raw, y = check_and_normalise(columns, y, who, len(self.theta_names()))
        self._problem = problem
        self.data = {**dict(zip(columns, raw)), "y": y}
        self.level = level
        sol = solve(problem, self.options, self.theta_names())
        self._theta = sol.theta
        self.convergence = sol.convergence
        self.params = self._params(self._theta)
        self.bootstrap: Bootstrap | None = None
        self.samples: dict[str, np.ndarray] | None = None
        self.ci: dict[str, tuple[float, float]] = {}
        if bootstrap:
            self.bootstrap = run_bootstrap(problem, self._theta, self.options, self.theta_names(),
                                           int(bootstrap), seed)
            self.samples = self._params(self.bootstrap.thetas)
            self.ci = self.intervals(level)
        self.holdout: HoldoutCheck | None = None
        if holdout:
            def refit(cols, yy, **kw):
                return type(self)(cols, yy, who=who, **kw)
            self.holdout = holdout_check(refit, dict(zip(columns, raw)), y, k=holdout, who=who,
                                         bootstrap=bootstrap, seed=seed, level=level, options=self.options)

    @classmethod
    def theta_names(cls) -> tuple[str, ...]:
        """Names in the internal parameter order [coefs..., exponents..., constant]."""
        return tuple(t[0] for t in cls.terms) + tuple(t[1] for t in cls.terms) + (cls.constant,)

    # -- parameters and predictions ------------------------------------------------
    def _params(self, theta: np.ndarray) -> dict:
        """Internal (normalised, log) parameters -> caller's units; theta (p,) or (S, p)."""
        k = len(self.terms)
        p = self._problem
        out = {}
        for j, (coef, expo, _) in enumerate(self.terms):
            e = theta[..., k + j]
            out[coef] = np.exp(p.log_yref + theta[..., j] + e * p.log_xref[j])
            out[expo] = e.copy() if np.ndim(e) else float(e)
        out[self.constant] = np.exp(p.log_yref + theta[..., 2 * k])
        if np.ndim(theta) == 1:
            out = {n: float(v) for n, v in out.items()}
        return {n: out[n] for n in self.names}

    def _logx(self, *resources) -> tuple[np.ndarray, tuple]:
        arrays = np.broadcast_arrays(*[np.asarray(r, float) for r in resources])
        shape = arrays[0].shape
        for (_, _, name), a in zip(self.terms, arrays):
            if not np.all(np.isfinite(a) & (a > 0)):
                raise ValueError(f"predict: {name} must be positive and finite")
        logx = np.column_stack([np.log(a).ravel() for a in arrays]) - self._problem.log_xref
        return logx, shape

    def _predict(self, *resources) -> np.ndarray:
        logx, shape = self._logx(*resources)
        out = np.exp(objective.log_predict(self._theta, logx) + self._problem.log_yref)
        return out.reshape(shape) if shape else float(out[0])

    def _predict_samples(self, *resources) -> np.ndarray:
        """Predictions of every bootstrap refit, shape (n_samples, *shape)."""
        if self.bootstrap is None:
            raise ValueError("no bootstrap samples: fit with bootstrap > 0 for intervals")
        logx, shape = self._logx(*resources)
        out = np.exp(objective.log_predict(self.bootstrap.thetas, logx) + self._problem.log_yref)
        return out.reshape((len(out),) + shape)

    def _predict_interval(self, *resources, level: float | None = None):
        lo, hi = percentile_interval(self._predict_samples(*resources), level or self.level)
        return (lo, hi) if np.ndim(lo) else (float(lo), float(hi))

    def intervals(self, level: float | None = None) -> dict[str, tuple[float, float]]:
        """Percentile interval of every parameter at `level` (default: the fit's level)."""
        if self.samples is None:
            return {}
        out = {}
        for n, s in self.samples.items():
            lo, hi = percentile_interval(s, level or self.level)
            out[n] = (float(lo), float(hi))
        return out

    @property
    def log_residuals(self) -> np.ndarray:
        """log(prediction) - log(observation) per point, the quantity the loss sees."""
        pred = self._predict(*[self.data[t[2]] for t in self.terms])
        return np.log(pred) - np.log(self.data["y"])

    @property
    def n_points(self) -> int:
        return len(self.data["y"])

    def to_dict(self) -> dict:
        """A JSON-ready description: form, parameters, intervals, convergence, choices."""
        return {
            "form": self.form,
            "params": dict(self.params),
            "ci": {n: list(v) for n, v in self.ci.items()},
            "level": self.level,
            "n_points": self.n_points,
            "rms_log_residual": float(np.sqrt(np.mean(self.log_residuals ** 2))),
            "convergence": self.convergence.to_dict(),
            "bootstrap": None if self.bootstrap is None else self.bootstrap.to_dict(),
            "options": self.options.to_dict(),
            "holdout": None if self.holdout is None else self.holdout.to_dict(),
        }

    def __repr__(self) -> str:
        parts = []
        for n in self.names:
            s = f"{n}={self.params[n]:.4g}"
            if n in self.ci:
                s += f" [{self.ci[n][0]:.4g}, {self.ci[n][1]:.4g}]"
            parts.append(s)
        return f"{type(self).__name__}({', '.join(parts)}; {self.n_points} points)"


class PowerLawFit(LawFit):
    """y = alpha * x**(-beta) + gamma (Ardalani et al. 2022)."""
    form = "y = alpha * x**(-beta) + gamma"
    terms = (("alpha", "beta", "x"),)
    constant = "gamma"
    names = ("alpha", "beta", "gamma")

    alpha = property(lambda self: self.params["alpha"], doc="coefficient (y units * x**beta)")
    beta = property(lambda self: self.params["beta"], doc="exponent")
    gamma = property(lambda self: self.params["gamma"], doc="asymptote: y as x -> infinity")

    def predict(self, x):
        """Fitted y at x (scalar or array)."""
        return self._predict(x)

    def predict_interval(self, x, level: float | None = None):
        """(lo, hi) percentile interval of the fitted curve at x, extrapolation included."""
        return self._predict_interval(x, level=level)

    def predict_samples(self, x) -> np.ndarray:
        return self._predict_samples(x)


class AdditivePowerLawFit(LawFit):
    """y = E + A * n**(-alpha) + B * d**(-beta) (Hoffmann et al. 2022, approach 3)."""
    form = "y = E + A * n**(-alpha) + B * d**(-beta)"
    terms = (("A", "alpha", "n"), ("B", "beta", "d"))
    constant = "E"
    names = ("E", "A", "alpha", "B", "beta")

    E = property(lambda self: self.params["E"], doc="irreducible term")
    A = property(lambda self: self.params["A"], doc="coefficient of n**(-alpha)")
    alpha = property(lambda self: self.params["alpha"], doc="exponent of n")
    B = property(lambda self: self.params["B"], doc="coefficient of d**(-beta)")
    beta = property(lambda self: self.params["beta"], doc="exponent of d")

    def predict(self, n, d):
        return self._predict(n, d)

    def predict_interval(self, n, d, level: float | None = None):
        return self._predict_interval(n, d, level=level)

    def predict_samples(self, n, d) -> np.ndarray:
        return self._predict_samples(n, d)


def _options(options: FitOptions | None, huber_delta: float | None) -> FitOptions:
    options = options or FitOptions()
    return options if huber_delta is None else replace(options, huber_delta=float(huber_delta))


def fit_power_law(x, y, *, bootstrap: int = 200, seed: int = 0, level: float = 0.95,
                  huber_delta: float | None = None, holdout: int = 0,
                  options: FitOptions | None = None) -> PowerLawFit:
    """Fit y = alpha * x**(-beta) + gamma (alpha, gamma >= 0, 0 <= beta <= 4).

    bootstrap: resamples over points for `ci` and `predict_interval` (0: none).
    holdout: if k > 0, also fit on all but the k largest x values and attach the check
    of the held-out points as `f.holdout` (the returned fit uses every point).
    huber_delta: Huber threshold on log residuals (default 1e-3, as Besiroglu et al.).
    Raises ValueError on unusable input (see `fitting.check_and_normalise`).
    """
    return PowerLawFit({"x": x}, y, bootstrap=bootstrap, seed=seed, level=level,
                       options=_options(options, huber_delta), holdout=holdout, who="fit_power_law")


def fit_additive_power_law(n, d, y, *, bootstrap: int = 200, seed: int = 0, level: float = 0.95,
                           huber_delta: float | None = None, holdout: int = 0,
                           options: FitOptions | None = None) -> AdditivePowerLawFit:
    """Fit y = E + A * n**(-alpha) + B * d**(-beta) (model size n, data d).

    Same method and options as `fit_power_law`; holdout holds out the k largest n * d
    (compute-like scale).
    """
    return AdditivePowerLawFit({"n": n, "d": d}, y, bootstrap=bootstrap, seed=seed, level=level,
                               options=_options(options, huber_delta), holdout=holdout,
                               who="fit_additive_power_law")
