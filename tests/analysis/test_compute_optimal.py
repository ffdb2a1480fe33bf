"""Compute-optimal allocation: known joint laws recovered, Chinchilla's a, bad input, flags."""

import numpy as np
import pytest

from analysis import fit_additive_power_law
from analysis.compute_optimal import (
    METHODS,
    check_isoflop,
    compute_optimal,
    envelope_allocation,
    isoflop_allocation,
    joint_allocation,
)
from tests.analysis.test_fitting import CHINCHILLA, chinchilla_points

# A known joint law y = E + A / N**alpha + B / D**beta with C = 6 N D.
LAW = dict(E=0.5, A=40.0, alpha=0.34, B=60.0, beta=0.28)
A_TRUE = LAW["beta"] / (LAW["alpha"] + LAW["beta"])          # 0.4516
G_TRUE = (LAW["alpha"] * LAW["A"] / (LAW["beta"] * LAW["B"])) ** (1 / (LAW["alpha"] + LAW["beta"]))


def law(n, d):
    return LAW["E"] + LAW["A"] * n ** -LAW["alpha"] + LAW["B"] * d ** -LAW["beta"]


def synthetic_study(seed, k_budgets=4, sizes=7, step=2.0, noise=3e-3, k=6.0):
    """K budgets x 4 apart, `sizes` model sizes a factor `step` apart around the true
    optimum (offset at random by up to half a step, as a real grid would be), NE with
    multiplicative Gaussian noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in 1e15 * 4.0 ** np.arange(k_budgets):
        centre = G_TRUE * (c / k) ** A_TRUE * step ** rng.uniform(-0.5, 0.5)
        for j in range(sizes):
            n = centre * step ** (j - (sizes - 1) / 2)
            d = c / (k * n)
            rows.append((c, n, d, law(n, d) * (1 + noise * rng.standard_normal())))
    r = np.array(rows)
    return check_isoflop(r[:, 0], r[:, 1], r[:, 2], r[:, 3])


def test_known_joint_law_recovered_by_all_three_methods_over_seeds():
    """Each estimate's interval holds the true a in >= 85% of seeds (measured: 12/12 for the
    envelope and the IsoFLOP profiles, 11-12/12 for the joint law), and the IsoFLOP and
    joint point estimates are close."""
    seeds = range(12)
    hits = {m: 0 for m in METHODS}
    points = {m: [] for m in METHODS}
    for s in seeds:
        co = compute_optimal(synthetic_study(s), bootstrap=50, seed=s)
        assert co.k_flops == pytest.approx(6.0, rel=1e-9) and co.k_spread == pytest.approx(1.0)
        for m, al in co.allocations.items():
            hits[m] += al.a.lo <= A_TRUE <= al.a.hi
            points[m].append(al.a.value)
            assert al.b.value == pytest.approx(1 - al.a.value, abs=1e-9 if m == "joint" else 0.02)
    for m in METHODS:
        assert hits[m] >= 0.85 * len(seeds), (m, hits)
    assert abs(np.median(points["isoflop"]) - A_TRUE) < 0.01
    assert abs(np.median(points["joint"]) - A_TRUE) < 0.01
    assert abs(np.median(points["envelope"]) - A_TRUE) < 0.1     # quantised to the size grid


def test_optimum_coefficient_and_predictions():
    """Noise-free: the joint law's G and N_opt(C) are exact; the minima line up."""
    co = compute_optimal(synthetic_study(0, noise=0.0), bootstrap=0)
    j = co.allocations["joint"]
    assert j.a.value == pytest.approx(A_TRUE, abs=1e-3)
    c = 1e18
    assert j.n_opt(c) == pytest.approx(G_TRUE * (c / 6) ** A_TRUE, rel=0.05)
    assert j.d_opt(c) == pytest.approx(c / (6 * j.n_opt(c)), rel=1e-9)
    # Minimising the true law numerically over N at this C gives the same N.
    ns = np.geomspace(1e4, 1e10, 200_001)
    assert ns[np.argmin(law(ns, c / (6 * ns)))] == pytest.approx(G_TRUE * (c / 6) ** A_TRUE, rel=1e-3)
    assert co.allocations["isoflop"].a.value == pytest.approx(A_TRUE, abs=0.01)
    assert co.flags == []


def test_envelope_and_parabola_minima_are_exact_on_constructed_profiles():
    """NE = (log N - u_k)^2 + 0.5 at budget k, with u_k = 0.5 log C_k + 1: the parabola's
    vertex is u_k exactly (a = 0.5), the envelope picks the grid point nearest to it."""
    rows = []
    for c in (1e12, 1e13, 1e14, 1e15):
        u = 0.5 * np.log(c) + 1
        for logn in u + np.array([-1.3, -0.6, 0.2, 0.9, 1.6]):
            rows.append((c, np.exp(logn), c / (6 * np.exp(logn)), (logn - u) ** 2 + 0.5))
    r = np.array(rows)
    data = check_isoflop(*r.T)
    iso = isoflop_allocation(data, bootstrap=0)
    assert iso.a.value == pytest.approx(0.5, abs=1e-9)
    assert iso.b.value == pytest.approx(0.5, abs=1e-9)
    assert iso.log_g == pytest.approx(1.0, abs=1e-9)
    for p, c in zip(iso.per_budget, (1e12, 1e13, 1e14, 1e15)):
        assert np.log(p["n_opt"]) == pytest.approx(0.5 * np.log(c) + 1, abs=1e-9)
        assert p["d_opt"] == pytest.approx(c / (6 * p["n_opt"]), rel=1e-9)
        assert not p["at_edge"]
    env = envelope_allocation(data, bootstrap=0)
    for p, c in zip(env.per_budget, (1e12, 1e13, 1e14, 1e15)):
        assert np.log(p["n_opt"]) == pytest.approx(0.5 * np.log(c) + 1.2, abs=1e-9)   # the +0.2 point


def test_no_valley_is_flagged_at_the_edge():
    """NE falling with model size at every budget: the optimum is not measured."""
    rows = [(c, n, c / (6 * n), 1 + 1 / np.log(n)) for c in (1e12, 1e13, 1e14) for n in (1e3, 1e4, 1e5, 1e6)]
    data = check_isoflop(*np.array(rows).T)
    iso = isoflop_allocation(data, bootstrap=20)
    assert all(p["at_edge"] for p in iso.per_budget)
    assert all(p["n_opt"] == pytest.approx(1e6) for p in iso.per_budget)
    co = compute_optimal(data, bootstrap=0)
    codes = {f.code for f in co.flags}
    assert {"isoflop_at_edge", "envelope_at_edge"} <= codes


def test_disagreement_is_flagged():
    co = compute_optimal(synthetic_study(1), bootstrap=30, seed=1)
    assert co.disagreements() == []
    iso = co.allocations["isoflop"]
    shift = iso.a.hi - iso.a.lo + 0.5
    co.allocations["isoflop"].a = type(iso.a)(iso.a.value + shift, iso.a.lo + shift, iso.a.hi + shift)
    pairs = co.disagreements()
    assert ("isoflop", "joint") in pairs


@pytest.mark.skipif(not CHINCHILLA.exists(), reason="shared/data/chinchilla_epoch_svg_extracted.csv not present")
def test_chinchilla_joint_law_allocation_exponent():
    """Epoch AI's refit (alpha 0.3473, beta 0.3672) gives a = beta / (alpha + beta) = 0.514."""
    n, d, y = chinchilla_points()
    fit = fit_additive_power_law(n, d, y, bootstrap=0)
    j = joint_allocation(fit, k_flops=6.0)
    assert round(j.a.value, 3) == 0.514
    assert round(j.b.value, 3) == 0.486
    # G = (alpha A / (beta B))**(1/(alpha+beta)) in N_opt = G (C/6)**a: 0.119 from Epoch's numbers.
    g_epoch = (0.3473 * 482.01 / (0.3672 * 2085.43)) ** (1 / (0.3473 + 0.3672))
    assert j.n_opt(6.0) == pytest.approx(g_epoch, rel=0.05)


@pytest.mark.parametrize("mutate, match", [
    (lambda r: r[r[:, 0] != 4e15], "2 FLOP budget"),
    (lambda r: r[~((r[:, 0] == 1e15) & (np.arange(len(r)) % 7 > 1))], "budget 1e\\+15 has 2 model size"),
    (lambda r: np.where(np.arange(r.size).reshape(r.shape) == 15, np.nan, r), "y of run row3 is nan"),
    (lambda r: np.where(np.arange(r.size).reshape(r.shape) == 4, np.inf, r), "budget of run row1 is inf"),
    (lambda r: np.where(np.arange(r.size).reshape(r.shape) == 5, -1.0, r), "n of run row1 is -1"),
])
def test_bad_input_raises_value_error(mutate, match):
    d = synthetic_study(0, k_budgets=3)
    r = np.column_stack([d.budget, d.n, d.d, d.y])
    r = mutate(r)
    with pytest.raises(ValueError, match=match):
        check_isoflop(*r.T)


def test_bad_input_lengths_and_options():
    with pytest.raises(ValueError, match="n has 2 values but y has 3"):
        check_isoflop([1, 2, 3], [1, 2], [1, 2, 3], [1, 2, 3])
    data = synthetic_study(0, k_budgets=3)
    with pytest.raises(ValueError, match="level"):
        compute_optimal(data, level=1.5)
    with pytest.raises(ValueError, match="bootstrap"):
        compute_optimal(data, bootstrap=-1)


def _results(data, sweep="isoflop"):
    import pandas as pd
    return pd.DataFrame({"run": list(data.runs), "sweep": sweep, "status": "done",
                         "train.flop_budget": data.budget, "params_dense": data.n, "train_examples": data.d,
                         # Halved so the values look like NE (< 1); the allocation does not change.
                         "eval_ne": data.y / 2, "params_embedding": 1e6, "train_flops": data.budget})


def test_report_gets_the_section_and_plots(tmp_path):
    import json

    from analysis import summary_text, write_report
    fits = write_report(_results(synthetic_study(2)), tmp_path, bootstrap=10, holdout=0)
    co = fits["compute_optimal"]
    assert set(co["methods"]) == set(METHODS) and co["agree"] is True
    assert co["methods"]["joint"]["a"]["value"] == pytest.approx(A_TRUE, abs=0.02)
    assert co["runs"][0]["table_bytes"] == 4e6
    for name in ("isoflop.png", "allocation.png"):
        assert (tmp_path / name).stat().st_size > 10_000
    md = (tmp_path / "report.md").read_text()
    assert "## Compute-optimal allocation" in md and "![IsoFLOP profiles](isoflop.png)" in md
    assert "The three methods agree" in md
    assert json.loads((tmp_path / "fits.json").read_text())["compute_optimal"]["budgets"][0] == 1e15
    assert "Compute-optimal allocation (28 IsoFLOP runs, 4 budgets" in summary_text(fits)
    assert fits["flags"] == [] or all(f["scope"] != "compute_optimal" for f in fits["flags"])
    # Runs that did not learn (NE >= 1) are named; an asymptote below the Bayes NE is flagged.
    df = _results(synthetic_study(2))
    df.loc[0, "eval_ne"] = 1.3
    df["bayes_ne"] = 0.45
    flags = write_report(df, tmp_path / "again", bootstrap=10, holdout=0)["compute_optimal"]["flags"]
    codes = {f["code"] for f in flags}
    assert "ne_above_one" in codes and "below_bayes" in codes
    assert any(f["message"].startswith("joint law: fitted asymptote E") for f in flags)


def test_report_without_isoflop_runs_has_no_section_and_too_few_budgets_is_skipped(tmp_path):
    import pandas as pd

    from analysis import write_report
    df = _results(synthetic_study(2))
    plain = df.drop(columns=["train.flop_budget"])
    assert write_report(plain, tmp_path / "a", bootstrap=0, holdout=0)["compute_optimal"] is None
    x = np.geomspace(1e3, 1e6, 6)
    data_sweep = pd.DataFrame({"run": [f"d{i}" for i in range(6)], "sweep": "data", "status": "done",
                               "train_examples": x, "eval_ne": 0.5 + 2 * x ** -0.3, "train_flops": 6 * x})
    two = pd.concat([df[df["train.flop_budget"] < 1e16], data_sweep], ignore_index=True)
    fits = write_report(two, tmp_path / "b", bootstrap=0, holdout=0)
    assert "2 FLOP budget(s)" in fits["compute_optimal"]["skipped"]
    assert any(f["scope"] == "compute_optimal" for f in fits["flags"])
    assert "Not estimated: " in (tmp_path / "b" / "report.md").read_text()


def test_scatter_of_the_minima_about_the_line_sets_the_interval():
    """Exact parabolas per budget (resampling runs within a budget never moves a vertex),
    vertices off the line by +-0.1: the interval of a comes from the scatter alone and
    must match the exact t interval of the OLS slope with K - 2 = 2 degrees of freedom."""
    from scipy import stats
    cs = np.array([1e12, 1e13, 1e14, 1e15])
    wiggle = np.array([0.1, -0.1, -0.1, 0.1])
    rows = []
    for c, e in zip(cs, wiggle):
        u = 0.5 * np.log(c) + 1 + e
        for logn in u + np.array([-1.3, -0.6, 0.2, 0.9, 1.6]):
            rows.append((c, np.exp(logn), c / (6 * np.exp(logn)), (logn - u) ** 2 + 0.5))
    iso = isoflop_allocation(check_isoflop(*np.array(rows).T), bootstrap=2000, seed=0)
    x = np.log(cs)
    u = 0.5 * x + 1 + wiggle
    slope, icpt = np.polyfit(x, u, 1)
    s = np.sqrt(((u - slope * x - icpt) ** 2).sum() / 2)
    half = stats.t.ppf(0.975, 2) * s / np.sqrt(((x - x.mean()) ** 2).sum())
    assert iso.a.value == pytest.approx(slope, abs=1e-9)
    assert iso.a.hi - iso.a.lo == pytest.approx(2 * half, rel=0.35)
    assert iso.a.lo < slope < iso.a.hi
    for p in iso.per_budget:
        assert p["n_lo"] <= p["n_opt"] <= p["n_hi"]


def test_agreement_text_warns_when_optima_sit_at_the_edge():
    from analysis.allocation_report import summary_lines
    m = {"a": {"value": 0.4, "lo": 0.3, "hi": 0.5}, "b": {"value": 0.6, "lo": 0.5, "hi": 0.7}}
    entry = {"skipped": None, "n_runs": 20, "budgets": [1, 4, 16, 64], "methods": {k: m for k in METHODS},
             "agree": True, "disagreements": [], "at_edge": {"envelope": [1, 4], "isoflop": []}}
    text = "\n".join(summary_lines(entry))
    assert "methods agree" in text and "edge of the sizes tried (envelope at 2 of 4 budgets)" in text
    entry["at_edge"] = {"envelope": [], "isoflop": []}
    assert "edge" not in "\n".join(summary_lines(entry))
