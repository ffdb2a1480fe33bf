"""Scaling-law fits: recovery of known laws, the published Chinchilla refit, bad input."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import optimize

from analysis import FitOptions, fit_additive_power_law, fit_power_law, objective

CHINCHILLA = Path(__file__).resolve().parents[3] / "shared" / "data" / "chinchilla_epoch_svg_extracted.csv"


def noisy_law(seed, a=5.0, b=0.3, c=0.5, n=8, decades=3, noise=1e-3):
    x = np.logspace(3, 3 + decades, n)
    rng = np.random.default_rng(seed)
    return x, (a * x ** -b + c) * (1 + noise * rng.standard_normal(n))


def test_gradient_is_exact():
    rng = np.random.default_rng(0)
    logx, logy = rng.normal(size=(12, 2)), 0.1 * rng.normal(size=12)
    w = rng.integers(1, 4, 12).astype(float)
    for delta in (1e-3, 0.05, 10.0):          # linear, mixed and quadratic Huber regimes
        theta = 0.5 * rng.normal(size=5)
        err = optimize.check_grad(lambda t: objective.value_and_grad(t, logx, logy, delta, w)[0],
                                  lambda t: objective.value_and_grad(t, logx, logy, delta, w)[1], theta)
        assert err < 1e-6 * (1 + np.abs(objective.value_and_grad(theta, logx, logy, delta, w)[1]).max())


def test_objective_is_summed_huber_of_log_residuals():
    x = np.array([1.0, 2.0, 4.0, 8.0])
    y = np.array([2.0, 1.5, 1.3, 1.2])
    theta = np.array([np.log(1.0), 0.5, np.log(1.0)])       # y_hat = x**-0.5 + 1
    r = np.log(x ** -0.5 + 1) - np.log(y)
    d = 0.05
    expected = np.where(np.abs(r) <= d, 0.5 * r ** 2, d * (np.abs(r) - d / 2)).sum()
    assert objective.value(theta, np.log(x)[:, None], np.log(y), d) == pytest.approx(expected, rel=1e-12)


def test_exact_law_is_recovered_to_high_precision():
    x = np.logspace(2, 6, 10)
    f = fit_power_law(x, 3.0 * x ** -0.25 + 0.6, bootstrap=0)
    assert f.alpha == pytest.approx(3.0, rel=1e-6)
    assert f.beta == pytest.approx(0.25, rel=1e-6)
    assert f.gamma == pytest.approx(0.6, rel=1e-6)
    c = f.convergence
    assert c.grad_norm < 1e-10 and c.share_reached == 1.0 and c.at_bound == ()
    assert f.predict(1e8) == pytest.approx(3.0 * 1e8 ** -0.25 + 0.6, rel=1e-6)


def test_recovery_and_interval_coverage_over_seeds():
    """16 points over 3 decades, 0.1% noise: median beta within 3%; 95% intervals cover
    the truth in >= 85% of seeds and are as wide as the fits scatter over seeds: median
    width within a factor 2 of the 95% spread of the fitted values (2 x 1.96 sd).

    Measured ratios (width / spread), seeds 0-19: 1.10, 1.15, 1.13 (alpha, beta,
    gamma); 1.09-1.16 over 40 seeds with 100 resamples.  With 8 points the case bootstrap is wider than
    the scatter: 1.44-1.65 over 60 seeds, up to 1.94 for 20 of them, too close to 2 to
    test there."""
    truth = {"alpha": 5.0, "beta": 0.3, "gamma": 0.5}
    fits = [fit_power_law(*noisy_law(seed, n=16), bootstrap=60, seed=seed) for seed in range(20)]
    assert abs(np.median([f.beta for f in fits]) / truth["beta"] - 1) < 0.03
    for k, v in truth.items():
        covered = np.mean([f.ci[k][0] <= v <= f.ci[k][1] for f in fits])
        assert covered >= 0.85, (k, covered)
        width = np.median([f.ci[k][1] - f.ci[k][0] for f in fits])
        spread = 2 * 1.96 * np.std([f.params[k] for f in fits], ddof=1)
        assert 0.5 < width / spread < 2, (k, width / spread)


def test_additive_law_is_recovered():
    rng = np.random.default_rng(1)
    n = np.repeat(np.logspace(7, 10, 6), 5)
    d = np.tile(np.logspace(9, 12, 5), 6) * rng.uniform(0.8, 1.25, 30)
    y = (1.7 + 400 * n ** -0.34 + 1500 * d ** -0.28) * (1 + 1e-3 * rng.standard_normal(30))
    g = fit_additive_power_law(n, d, y, bootstrap=0)
    assert g.E == pytest.approx(1.7, rel=0.02)
    assert g.alpha == pytest.approx(0.34, rel=0.05)
    assert g.beta == pytest.approx(0.28, rel=0.05)
    assert g.predict(1e9, 1e11) == pytest.approx(1.7 + 400 * 1e9 ** -0.34 + 1500 * 1e11 ** -0.28, rel=2e-3)


def test_intervals_and_extrapolation():
    x, y = noisy_law(3)
    f = fit_power_law(x, y, bootstrap=50, seed=1, level=0.9)
    assert set(f.ci) == {"alpha", "beta", "gamma"}
    for k, (lo, hi) in f.ci.items():
        assert lo <= f.params[k] <= hi
    xs = np.array([1e4, 1e6, 1e8, 1e10])                  # last two: extrapolation
    lo, hi = f.predict_interval(xs)
    mid = f.predict(xs)
    assert lo.shape == hi.shape == (4,)
    assert np.all(lo <= mid) and np.all(mid <= hi)
    width = (hi - lo) / mid
    assert width[-1] > width[1]                          # wider far beyond the data
    # Same seed, same intervals; another seed, different ones.
    assert fit_power_law(x, y, bootstrap=50, seed=1, level=0.9).ci == f.ci
    assert fit_power_law(x, y, bootstrap=50, seed=2, level=0.9).ci != f.ci


def test_pure_power_law_reports_gamma_at_bound():
    x = np.logspace(1, 5, 9)
    f = fit_power_law(x, 2.0 * x ** -0.2, bootstrap=0)
    assert f.beta == pytest.approx(0.2, rel=1e-4)
    assert "gamma" in f.convergence.at_bound


def test_huber_delta_is_configurable_and_limits_outliers():
    x, y = noisy_law(5, n=10)
    y = y.copy()
    y[4] *= 1.05                                          # one 5% outlier
    robust = fit_power_law(x, y, bootstrap=0)
    assert robust.options.huber_delta == 1e-3
    squares = fit_power_law(x, y, bootstrap=0, huber_delta=1.0)   # ~ least squares in log space
    assert squares.options.huber_delta == 1.0
    assert abs(robust.beta - 0.3) < abs(squares.beta - 0.3)


@pytest.mark.parametrize("x, y, match", [
    ([1, 2, 3], [3, 2, 1], "need at least 4"),
    ([1, 2, 0, 4, 5], [5, 4, 3, 2, 1], "x > 0"),
    ([1, 2, -3, 4, 5], [5, 4, 3, 2, 1], "x > 0"),
    ([1, 2, 3, 4, 5], [5, 4, np.nan, 2, 1], "not finite"),
    ([1, 2, 3, 4, 5], [5, 4, np.inf, 2, 1], "not finite"),
    ([1, 2, 3, 4, 5], [5, 4, 0, 2, 1], "y must be > 0"),
    ([2, 2, 2, 2, 2], [5, 4, 3, 2, 1], "all x values are equal"),
    ([1, 1, 2, 2, 2], [5, 4, 3, 2, 1], "distinct"),
    ([1, 2, 3, 4], [5, 4, 3], "has 4 values but y has 3"),
    ([1, 2, np.inf, 4, 5], [5, 4, 3, 2, 1], "not finite"),
])
def test_bad_input_raises_value_error(x, y, match):
    with pytest.raises(ValueError, match=match):
        fit_power_law(x, y, bootstrap=0)


def test_bad_input_additive_and_options():
    n = np.logspace(7, 9, 6)
    with pytest.raises(ValueError, match="need at least 6"):
        fit_additive_power_law(n[:5], n[:5] * 20, np.linspace(3, 2, 5), bootstrap=0)
    with pytest.raises(ValueError, match="all d values are equal"):
        fit_additive_power_law(n, np.full(6, 1e10), np.linspace(3, 2, 6), bootstrap=0)
    with pytest.raises(ValueError, match="huber_delta"):
        FitOptions(huber_delta=0)
    with pytest.raises(ValueError, match="bootstrap"):
        fit_power_law([1, 2, 3, 4], [4, 3, 2, 1.5], bootstrap=-1)
    f = fit_power_law([1, 2, 3, 4, 5], [4, 3, 2.5, 2.2, 2], bootstrap=0)
    with pytest.raises(ValueError, match="bootstrap"):
        f.predict_interval(10)
    with pytest.raises(ValueError, match="positive"):
        f.predict(-1)


def chinchilla_points():
    df = pd.read_csv(CHINCHILLA)
    df = df.drop(df["loss"].nlargest(5).index)            # as Epoch AI did
    n = df["Model Size"].to_numpy(float)
    return n, df["Training FLOP"].to_numpy(float) / (6 * n), df["loss"].to_numpy(float)


@pytest.mark.skipif(not CHINCHILLA.exists(), reason="shared/data/chinchilla_epoch_svg_extracted.csv not present")
def test_chinchilla_refit_reproduces_epoch_ai():
    """Besiroglu et al. 2024 refit: E 1.817, alpha 0.348, beta 0.366, A ~482, B ~2085."""
    n, d, y = chinchilla_points()
    assert len(y) == 240
    g = fit_additive_power_law(n, d, y, bootstrap=20, seed=0)
    # Our objective's optimum (the published numbers, to the optimiser's noise).
    assert g.E == pytest.approx(1.8172, abs=5e-4)
    assert g.alpha == pytest.approx(0.3473, abs=5e-4)
    assert g.beta == pytest.approx(0.3672, abs=5e-4)
    assert g.A == pytest.approx(482, rel=0.05)
    assert g.B == pytest.approx(2085, rel=0.05)
    c = g.convergence
    assert c.grad_norm < 1e-6 and c.at_bound == () and c.n_reached >= 2
    for k in g.names:
        lo, hi = g.ci[k]
        assert lo <= g.params[k] <= hi
    assert g.ci["E"][1] - g.ci["E"][0] < 0.3
