"""Study helpers (gains, multipliers, inversion, frontier, comparisons) and fit checks."""

import itertools

import numpy as np
import pandas as pd
import pytest

from analysis import (
    compare_schemes,
    compute_frontier,
    fit_flags,
    fit_power_law,
    gain_per_doubling,
    multiplier_for_improvement,
    resource_for_target,
)
from analysis.validation import residual_pattern_p

A, B, C = 4.0, 0.25, 0.55
X = np.logspace(4, 7, 8)


def law(x):
    return A * x ** -B + C


@pytest.fixture(scope="module")
def exact():
    return fit_power_law(X, law(X), bootstrap=30, seed=0)


@pytest.fixture(scope="module")
def noisy():
    rng = np.random.default_rng(7)
    return fit_power_law(X, law(X) * (1 + 2e-3 * rng.standard_normal(len(X))), bootstrap=60, seed=0)


def test_gain_per_doubling(exact, noisy):
    g = gain_per_doubling(exact)
    assert g.at == X.max()
    assert g.value == pytest.approx(law(X.max()) - law(2 * X.max()), rel=1e-5)
    g = gain_per_doubling(exact, at=1e5)
    assert g.value == pytest.approx(law(1e5) - law(2e5), rel=1e-5)
    g = gain_per_doubling(noisy)
    assert g.lo <= g.value <= g.hi
    assert g.lo <= law(X.max()) - law(2 * X.max()) <= g.hi


def test_multiplier_for_improvement(exact):
    x0 = X.max()
    m = multiplier_for_improvement(exact, 0.01)                # 1% better NE than at x0
    assert law(x0 * m.value) == pytest.approx(0.99 * law(x0), rel=1e-6)
    m = multiplier_for_improvement(exact, 0.005, relative=False, at=1e5)
    assert law(1e5 * m.value) == pytest.approx(law(1e5) - 0.005, rel=1e-6)
    # An improvement beyond the asymptote cannot be bought.
    m = multiplier_for_improvement(exact, law(x0) - C + 0.01, relative=False)
    assert m.value == np.inf
    with pytest.raises(ValueError):
        multiplier_for_improvement(exact, 0)


def test_resource_for_target(exact, noisy):
    inv = resource_for_target(exact, 0.6)
    assert inv.reachable and law(inv.value) == pytest.approx(0.6, rel=1e-6)
    inv = resource_for_target(noisy, 0.6)
    assert inv.lo <= inv.value <= inv.hi and "needs" in inv.message
    below = resource_for_target(noisy, 0.5, resource="training examples")
    assert not below.reachable and below.value == np.inf
    assert "below the fitted asymptote" in below.message and "training examples" in below.message
    assert below.share_reachable == 0.0
    # Target just above gamma: reachable for the point estimate, not for every refit.
    lo, hi = noisy.ci["gamma"]
    edge = resource_for_target(noisy, noisy.gamma + 0.25 * (hi - noisy.gamma))
    assert edge.reachable and edge.hi == np.inf and 0 < edge.share_reachable < 1
    assert "unbounded" in edge.message
    assert edge.to_dict()["hi"] == "inf"


def test_residual_pattern_test():
    x = np.arange(8.0)
    smooth = np.array([3, 2, 0.5, -1, -2, -1.5, 0, 2.0])          # a curve: neighbours agree
    assert residual_pattern_p(smooth, x) < 0.01
    alternating = np.array([1, -1, 1, -1, 1, -1, 1, -1.0])          # the opposite
    assert residual_pattern_p(alternating, x) > 0.99
    # Against exact enumeration of the orderings of 5 residuals.
    r = np.array([0.5, 1.0, -0.2, -1.0, -0.3])
    def dw(v):
        return (np.diff(v - v.mean()) ** 2).sum()
    exact = np.mean([dw(np.array(p)) <= dw(r) * (1 + 1e-12) for p in itertools.permutations(r)])
    assert residual_pattern_p(r, np.arange(5.0)) == pytest.approx(exact, abs=0.01)
    # Repeated runs at one x are averaged first; too few points: nothing to test.
    assert residual_pattern_p(np.array([1, -1, 2, -2.0]), np.array([1, 1, 2, 2.0])) == 1.0


def test_holdout_on_a_good_law():
    rng = np.random.default_rng(3)
    y = law(X) * (1 + 1e-3 * rng.standard_normal(len(X)))
    f = fit_power_law(X, y, bootstrap=60, holdout=1)
    h = f.holdout
    assert list(h.held_out) == [len(X) - 1] and h.fit.n_points == len(X) - 1
    assert h.max_abs_rel_error < 0.005
    assert h.inside.all()
    assert fit_flags(f) == []
    d = h.to_dict()
    assert d["all_inside"] and d["points"][0]["x"] == X.max()
    f2 = fit_power_law(X, y, bootstrap=0, holdout=2)
    assert len(f2.holdout.observed) == 2 and f2.holdout.inside is None
    with pytest.raises(ValueError, match="leaves too little"):
        fit_power_law(X, y, bootstrap=0, holdout=5)


def test_flags_for_the_learning_onset():
    """An S-shaped curve (flat, then falling, then bending: the onset of docs/DESIGN.md section 4.6) is not a
    power law plus constant; the fit must say so."""
    x = 2.0 ** np.arange(12, 24)
    y = 0.52 + 0.45 / (1 + (x / 2 ** 18) ** 1.2)
    f = fit_power_law(x, y, bootstrap=30, holdout=2)
    codes = {fl.code for fl in fit_flags(f, bayes_ne=0.52)}
    assert "residual_pattern" in codes
    assert codes & {"holdout_error", "holdout_outside"}


def test_flag_gamma_below_bayes(noisy):
    def codes(b):
        return {fl.code for fl in fit_flags(noisy, bayes_ne=b)}
    assert "below_bayes" in codes(noisy.ci["gamma"][1] + 0.01)
    assert "below_bayes" not in codes(noisy.ci["gamma"][0] - 0.01)
    assert "below_bayes" not in codes(None)


def runs_df():
    """Two schemes plus a compute sweep, as load_results would return them."""
    rows = []
    for i, n in enumerate(np.geomspace(1e5, 1e7, 6)):
        rows.append(dict(run=f"d{i}", sweep="data", train_examples=n, params_embedding=1e6, params_dense=1e4,
                         train_flops=3e4 * n, eval_ne=0.6 + 3 * n ** -0.2))
    for i, p in enumerate(np.geomspace(1e6, 1e8, 5)):
        rows.append(dict(run=f"e{i}", sweep="embedding_dim", train_examples=1e6, params_embedding=p,
                         params_dense=1e4 + p / 100, train_flops=1e6 * (3e4 + p / 10), eval_ne=0.65 + 20 * p ** -0.3))
    df = pd.DataFrame(rows)
    df["params_total"] = df["params_embedding"] + df["params_dense"]
    return df


def test_frontier_is_lower_envelope():
    df = pd.DataFrame({"run": list("abcdefgh"), "sweep": "s",
                       "train_flops": [1, 2, 2, 3, 4, 5, 8, 9.0],
                       "eval_ne": [0.9, 0.85, 0.8, 0.82, 0.7, 0.75, 0.65, 0.66]})
    fr = compute_frontier(df, bootstrap=0)
    assert list(fr.points["run"]) == ["a", "c", "e", "g"]
    assert fr.fit is not None and fr.fit.n_points == 4
    fr = compute_frontier(df.iloc[:6], bootstrap=0)              # a, c, e: too few to fit
    assert fr.fit is None and "need at least 4" in fr.skipped
    fr = compute_frontier(runs_df(), bootstrap=10)
    ne = fr.points["eval_ne"].to_numpy()
    assert np.all(np.diff(ne) < 0) and np.all(np.diff(fr.points["train_flops"]) > 0)
    assert fr.fit is not None and fr.fit.n_points == len(fr.points)


def test_compare_schemes_on_common_axes():
    cmp = compare_schemes(runs_df(), bootstrap=10)
    t = cmp.table
    got = set(zip(t["scheme"], t["axis"]))
    # data varies examples and FLOPs; embedding_dim varies all parameter counts and FLOPs.
    assert got == {("data", "train_examples"), ("data", "train_flops"), ("embedding_dim", "params_total"),
                   ("embedding_dim", "params_dense"), ("embedding_dim", "train_flops")}
    row = t[(t.scheme == "data") & (t.axis == "train_examples")].iloc[0]
    assert row["beta"] == pytest.approx(0.2, rel=1e-4) and row["gamma"] == pytest.approx(0.6, rel=1e-4)
    # FLOPs proportional to examples: same exponent, same asymptote.
    row_f = t[(t.scheme == "data") & (t.axis == "train_flops")].iloc[0]
    assert row_f["beta"] == pytest.approx(row["beta"], rel=1e-5)
    assert set(cmp.fits) == got


def test_flag_open_interval_when_runs_do_not_determine_a_parameter():
    # Four runs of the CPU demo's embedding-dimension sweep: the curve barely bends, so
    # many refits drop the asymptote to zero although the best fit does not.
    x = np.array([307785, 587953, 1148289, 2268961.0])
    f = fit_power_law(x, np.array([0.81073, 0.80487, 0.79682, 0.79221]), bootstrap=50)
    assert f.convergence.at_bound == ()
    flags = [fl for fl in fit_flags(f) if fl.code == "open_interval"]
    assert flags and "gamma" in flags[0].message
    assert f.ci["gamma"][0] < 1e-6
