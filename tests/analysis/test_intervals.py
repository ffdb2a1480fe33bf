"""Bootstrap intervals: what is reported is the percentile interval of the refits at
the fit's level; the level changes it; and a resampled run counts as often as it was
drawn (a weight equals repeating the point).  Interval width against the spread of
fits over noise draws is checked with the coverage test in test_analysis_fitting.py,
which has those fits at hand."""

import numpy as np
import pytest

from analysis import FitOptions, bootstrap as bootstrap_lib, fit_power_law
from analysis.fitting import check_and_normalise, solve
from analysis.laws import PowerLawFit

X = np.logspace(3, 6, 8)
NAMES = PowerLawFit.theta_names()


def _y(seed, noise=2e-3):
    rng = np.random.default_rng(seed)
    return (5.0 * X ** -0.3 + 0.5) * (1 + noise * rng.standard_normal(len(X)))


@pytest.fixture(scope="module")
def fit():
    return fit_power_law(X, _y(3), bootstrap=60, seed=1, level=0.8)


def test_reported_interval_is_the_percentile_interval_of_the_refits(fit):
    assert fit.level == 0.8 and fit.to_dict()["level"] == 0.8
    for name, samples in fit.samples.items():
        assert samples.shape == (60,) and np.unique(samples).size > 50       # distinct refits
        want = np.percentile(samples, [10, 90])                              # 80%: 10th..90th
        np.testing.assert_allclose(fit.ci[name], want, rtol=1e-12)
        np.testing.assert_allclose(fit.to_dict()["ci"][name], want, rtol=1e-12)
        np.testing.assert_allclose(fit.intervals(0.5)[name], np.percentile(samples, [25, 75]), rtol=1e-12)
    xs = np.array([1e4, 1e8])
    lo, hi = fit.predict_interval(xs)
    want = np.percentile(fit.predict_samples(xs), [10, 90], axis=0)
    np.testing.assert_allclose([lo, hi], want, rtol=1e-12)


def test_a_narrower_level_lies_strictly_inside(fit):
    i50, i90 = fit.intervals(0.5), fit.intervals(0.9)
    for name in fit.names:
        (lo50, hi50), (lo90, hi90) = i50[name], i90[name]
        assert lo90 < lo50 < fit.params[name] < hi50 < hi90, name
    xs = np.array([1e4, 1e8])
    lo50, hi50 = fit.predict_interval(xs, level=0.5)
    lo90, hi90 = fit.predict_interval(xs, level=0.9)
    assert np.all(lo90 < lo50) and np.all(lo50 < hi50) and np.all(hi50 < hi90)
    # The level a fit is made with is the one it reports.
    again = fit_power_law(X, _y(3), bootstrap=60, seed=1, level=0.5)
    np.testing.assert_array_equal(again.bootstrap.thetas, fit.bootstrap.thetas)   # same refits
    assert again.ci == i50


def test_a_weight_equals_repeating_the_point():
    problem, _, _ = check_and_normalise({"x": X}, _y(5), "test", len(NAMES))
    w = np.array([1, 3, 1, 2, 1, 1, 4, 1])
    weighted = solve(problem, FitOptions(), NAMES, weights=w.astype(float))
    repeated = solve(problem.subset(np.repeat(np.arange(len(X)), w)), FitOptions(), NAMES)
    np.testing.assert_allclose(weighted.theta, repeated.theta, rtol=1e-6, atol=1e-8)
    plain = solve(problem, FitOptions(), NAMES)
    assert np.abs(plain.theta - weighted.theta).max() > 1e-3      # the weights matter here


def test_bootstrap_refits_count_each_run_as_often_as_drawn(monkeypatch):
    """Each refit sees n draws: the distinct runs drawn, weighted by how often, and its
    result is the fit of the resample with every run repeated that often."""
    calls, real = [], bootstrap_lib.solve

    def recording(problem, options, names, weights=None, **kw):
        sol = real(problem, options, names, weights=weights, **kw)
        calls.append((problem, weights, kw, sol))
        return sol

    monkeypatch.setattr(bootstrap_lib, "solve", recording)
    y = _y(7)
    f = fit_power_law(X, y, bootstrap=6, seed=2)
    assert len(calls) == 6
    full_logx = np.log(X) - np.log(X).mean()
    for problem, weights, kw, sol in calls:
        assert weights is not None and weights.sum() == len(X) and weights.min() >= 1 and weights.max() > 1
        assert np.isin(problem.logx[:, 0], full_logx).all() and len(problem.logy) == len(weights)
        counts = weights.astype(int)
        assert np.array_equal(counts, weights)
        resample = problem.subset(np.repeat(np.arange(len(counts)), counts))
        np.testing.assert_allclose(real(resample, f.options, NAMES, **kw).theta, sol.theta, rtol=1e-6, atol=1e-8)
    np.testing.assert_array_equal(f.bootstrap.thetas, [c[3].theta for c in calls])
