"""Planted answers (analysis/planted.py): the exact finite-K excess curve against direct sums
and the research note's numbers, its laws against the generator's own draws, and bad input."""
import functools
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from analysis import fit_power_law, planted as P, planted_terms as T
from analysis.fitting import NO_CONSTANT, FitOptions
from dlrm_jax.data.synthetic import EVAL_STREAM, SyntheticSource
from dlrm_jax.data.world import load_world

REPO = Path(__file__).resolve().parents[2]


@functools.lru_cache(maxsize=4)
def planted_world(s, k):
    """The note's planted-zipf worlds, built once per test module (their eval sets are cached)."""
    return planted_source(s, k)


def planted_source(s, k, **kw):
    """A world of per-id effects only: one Zipf exponent, k ids for every feature."""
    return SyntheticSource(seed=0, cardinalities=[k] * 26, zipf=s, id_effect=1.5, pair_effect=0.0,
                           dense_effect=0.0, **kw)


def pure_zipf(k, s):
    p = np.arange(1, k + 1, dtype=np.float64) ** -s
    return p / p.sum()


def test_imports_without_jax():
    # A blocked `jax` makes any import of it fail; nothing of the training package either.
    code = ("import sys; sys.modules['jax'] = None; import analysis.planted; "
            "bad = [m for m in sys.modules if m.startswith(('jax', 'flax', 'dlrm_jax')) "
            "and sys.modules[m] is not None and m not in "
            "('dlrm_jax', 'dlrm_jax.run', 'dlrm_jax.compile', 'dlrm_jax.run.files', 'dlrm_jax.run.storage', "
            "'dlrm_jax.errors', 'dlrm_jax.compile.topologies')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


@pytest.mark.parametrize("lam", [0.003, 0.05, 0.5, 3.0])
def test_poisson_shrinkage_is_the_direct_poisson_sum(lam):
    mu = np.array([25.1, 0.0, 1e-7, 3e-5, 1e-3, 0.01, 0.3, 0.99, 1.0, 4.9, 10.0, 24.9, 25.0,
                   100.0, 1e4, 2.5])                      # unsorted on purpose
    got = P.poisson_shrinkage(mu.reshape(4, 4), lam)
    assert got.shape == (4, 4)
    want = []
    for m in mu:
        c = np.arange(int(m + 40 * np.sqrt(m) + 60))
        want.append(np.sum(stats.poisson.pmf(c, m) / (1 + lam * c)))
    np.testing.assert_allclose(got.ravel(), want, rtol=1e-10)
    assert got.ravel()[1] == 1.0


def test_poisson_shrinkage_rejects_bad_input():
    with pytest.raises(ValueError, match="lam must be > 0"):
        P.poisson_shrinkage([1.0], 0.0)
    with pytest.raises(ValueError, match="finite and >= 0"):
        P.poisson_shrinkage([1.0, -2.0], 0.1)


@pytest.mark.parametrize("s,slope", [(1.6, 0.375), (1.3, 0.246)])
def test_exact_curve_matches_the_research_note(s, slope):
    # One feature, K = 2^22, sigma^2 = 0.25, ctr 0.25, n = 2^14..2^22: the note's table
    # gives the slope of the exact finite-K sum (pure Zipf ranks k^-s / Z).
    info = P.gaussian_logit_information(0.25, 0.25)
    assert info == pytest.approx(0.1793, abs=1e-4)
    n = 2.0 ** np.arange(14, 23)
    law = P.FeatureLaw(pure_zipf(1 << 22, s), np.ones(1 << 22), 0.5)
    t0 = time.perf_counter()
    pred = P.predict_data_exponent([law], n, info=info, base_ctr=0.25)
    per_n = (time.perf_counter() - t0) / len(n)
    assert pred.beta_excess == pytest.approx(slope, abs=0.0015)
    assert pred.beta_free == pytest.approx(slope, abs=0.0015) and pred.free_fit.gamma < 1e-6
    assert per_n < 1.0, per_n                            # measured ~0.15 s on the 2-core VM
    # Far from truncation the exact sum is the infinite-K closed form times ~1 (the note's
    # Poisson factor is 1.005 here): within 1% (s = 1.6) and 4% (s = 1.3, where K bites
    # sooner) at the small end of the grid.
    closed = P.closed_form_excess(n[0], 1 << 22, s, 0.5, info) / pred.entropy
    assert pred.excess_ne[0] / closed == pytest.approx(1.0, abs=0.01 if s > 1.5 else 0.04)
    # The local slope sits just below 1 - 1/s and steepens as the truncation starts to bite.
    assert np.all(np.diff(pred.local_slopes()) > 0)


def test_truncation_steepens_towards_one_over_n():
    # Once every id is seen often, E -> K / (2n) per feature (the note's "learned ids cost 1/(2n)").
    k, info = 64, 0.18
    law = P.FeatureLaw(P.zipf_rank_probs(k, 1.6), np.ones(k), 0.5)
    n = np.array([1e8, 2e8])
    e = P.excess_logloss(n, [law], info)
    np.testing.assert_allclose(e * 2 * n / k, 1.0, rtol=0.02)
    assert -np.log(e[1] / e[0]) / np.log(2) == pytest.approx(1.0, abs=0.01)


def test_zipf_rank_probs_are_the_generators_law():
    src = planted_source(1.6, 1 << 10)
    ids = src.world_ids(EVAL_STREAM, np.arange(1 << 17))[:, 3]
    mult, add = src._perm[3]
    rank = ((ids - add) * pow(mult, -1, 1 << 10)) % (1 << 10)      # 0-based rank of each id
    emp = np.bincount(rank, minlength=1 << 10) / len(ids)
    p = P.zipf_rank_probs(1 << 10, 1.6)
    se = np.sqrt(p * (1 - p) / len(ids))
    assert np.all(np.abs(emp - p)[:50] < 4 * se[:50])
    assert p.sum() == pytest.approx(1.0) and np.all(np.diff(p) < 0)


def test_feature_laws_of_a_world_include_the_missing_id():
    world = replace(load_world("criteo-like"), pair_effect=0.0, dense_effect=0.0)
    src = SyntheticSource(seed=1, world=world)
    laws = P.feature_laws(src)
    assert len(laws) == 26
    for law, idl, sigma in zip(laws, world.features, src._id_scale):
        assert np.sum(law.probs * law.sizes) == pytest.approx(1.0, abs=1e-6)
        # ids 0..C, less ranks a head-only law gives no mass (rank_probs leaves them out)
        listed = idl.cardinality + 1 if idl.tail_mass > 0 else len(idl.head) + 1
        assert law.cardinality == listed and law.sigma == sigma
        if idl.missing_rate > 0:
            assert idl.missing_rate in law.probs


def test_predictions_for_the_planted_zipf_worlds():
    # The note's A1 / A2 (26 features, id_effect 1.5, n = 2^14..2^20): excess slope with the
    # Bayes NE known 0.384 / 0.304, three-parameter beta 0.365 / 0.278. The free beta
    # depends a little on the eval set's Bayes NE and I; the excess slope hardly.
    n = 2.0 ** np.arange(14, 21)
    a1 = P.predict_for_source(planted_world(1.6, 1 << 14), n, eval_examples=TIER_EVAL)
    a2 = P.predict_for_source(planted_world(1.4, 1 << 16), n, eval_examples=TIER_EVAL)
    assert a1.beta_excess == pytest.approx(0.384, abs=0.004)
    assert a2.beta_excess == pytest.approx(0.304, abs=0.004)
    assert a1.beta_free == pytest.approx(0.365, abs=0.012)
    assert a2.beta_free == pytest.approx(0.278, abs=0.012)
    assert a1.beta_excess - a2.beta_excess > 0.06
    assert 0.13 < a1.info < 0.15 and 0.75 < a1.bayes_ne < 0.82
    d = a1.to_dict()
    assert d["beta_excess"] == a1.beta_excess and len(d["excess_ne"]) == len(n)


def test_feature_laws_refuse_worlds_the_theory_does_not_describe():
    with pytest.raises(ValueError, match="C1, .*hashed into fewer rows"):
        P.feature_laws(planted_source(1.6, 1 << 12, table_sizes=[1 << 10] * 26))
    with pytest.raises(ValueError, match="pair_effect and dense_effect > 0"):
        P.feature_laws(SyntheticSource(seed=0, cardinalities=[100] * 26))
    with pytest.raises(ValueError, match="probabilities sum to"):
        P.FeatureLaw(np.array([0.5, 0.4]), np.ones(2), 1.0)
    with pytest.raises(ValueError, match="at least 4 distinct"):
        P.predict_data_exponent([], [1, 2, 2], info=0.2, base_ctr=0.25)


def test_no_constant_fit_is_a_power_law_through_the_origin():
    x = 2.0 ** np.arange(10, 18)
    y = 3.0 * x ** -0.4 * np.exp(0.01 * np.sin(np.arange(8)))
    f = fit_power_law(x, y, bootstrap=20, options=NO_CONSTANT)
    slope = -np.polyfit(np.log(x), np.log(y), 1)[0]
    assert f.beta == pytest.approx(slope, abs=2e-3) and f.gamma < 1e-12 * y.min()
    assert "gamma" in f.convergence.at_bound and f.ci["beta"][0] < f.beta < f.ci["beta"][1]
    free = fit_power_law(x, y + 0.7, bootstrap=0)
    assert free.gamma == pytest.approx(0.7, abs=0.05)
    assert f.to_dict()["options"]["log_constant_bounds_normalised"] == [-30.0, -30.0]
    with pytest.raises(ValueError, match="log_constant_bounds"):
        FitOptions(log_constant_bounds=(1.0, 0.0))


# -- the training-free tier: the count-based learner on the generator's own draws ----------

# The fast tier's grid: 2^13..2^18 examples, 2^17 eval examples, the default world seed.
# (The full study grid, 2^14..2^20 with 2^18 eval examples, takes ~25 s per world.)
TIER_N = 2.0 ** np.arange(13, 19)
TIER_EVAL = 1 << 17


@pytest.fixture(scope="module")
def tier():
    out = {}
    for name, s, k in (("A1", 1.6, 1 << 14), ("A2", 1.4, 1 << 16)):
        src = planted_world(s, k)
        t0 = time.perf_counter()
        pred = P.predict_for_source(src, TIER_N, eval_examples=TIER_EVAL)
        curve = P.count_learner_curve(src, TIER_N, eval_examples=TIER_EVAL)
        fits = curve.fits(bootstrap=200)
        out[name] = pred, curve, fits, time.perf_counter() - t0
    return out


@pytest.mark.parametrize("name", ["A1", "A2"])
def test_count_learner_recovers_the_planted_exponent(tier, name):
    pred, curve, (excess_fit, free_fit), seconds = tier[name]
    assert curve.bayes_ne == pred.bayes_ne and np.all(curve.excess > 0)
    assert np.all(curve.sweeps <= 10), curve.sweeps        # warm starts: ~5 Newton sweeps each
    # The learner is the theory's: its expected excess (KL over the eval inputs) is the
    # exact curve within a few percent at every n, not just in slope.
    np.testing.assert_allclose(curve.kl_ne / pred.excess_ne, 1.0, atol=0.06)
    # The study's fits of its labelled eval NE: the intervals cover the planted answers.
    lo, hi = excess_fit.ci["beta"]
    assert lo <= pred.beta_excess <= hi, (pred.beta_excess, excess_fit.beta, lo, hi)
    assert abs(excess_fit.beta - pred.beta_excess) <= max(0.06, (hi - lo) / 2)
    lo, hi = free_fit.ci["beta"]
    assert lo <= pred.beta_free <= hi, (pred.beta_free, free_fit.beta, lo, hi)
    g_lo, g_hi = free_fit.ci["gamma"]
    assert g_lo <= curve.bayes_ne + 0.005 and g_hi >= curve.bayes_ne - 0.03
    assert seconds < 60, seconds                           # ~6 s each on the 2-core VM


def test_the_two_planted_exponents_differ_as_predicted(tier):
    (p1, _, (f1, _), _), (p2, _, (f2, _), _) = tier["A1"], tier["A2"]
    assert p1.beta_excess - p2.beta_excess > 0.07
    assert f1.beta - f2.beta > 0.04


def test_count_learner_is_the_logistic_map():
    # Three features of a few ids and an intercept: the block-Newton fit is the minimiser of
    # the penalised log loss (L-BFGS on the same objective).
    rng = np.random.default_rng(0)
    rows, sig = (5, 3, 7), (0.8, 0.4, 1.2)
    ids = np.stack([rng.integers(0, r, 3000) for r in rows], 1)
    z = -1.0 + sum(rng.normal(0, s, r)[ids[:, f]] for f, (r, s) in enumerate(zip(rows, sig)))
    y = (rng.random(3000) < 1 / (1 + np.exp(-z))).astype(np.float64)
    learner = P.CountLearner(rows, sig)
    assert learner.fit(ids, y, tol=1e-10) < 50

    def objective(theta):
        b, parts = theta[0], np.split(theta[1:], np.cumsum(rows)[:-1])
        zz = b + sum(t[ids[:, f]] for f, t in enumerate(parts))
        pen = sum(0.5 * np.sum(t ** 2) / s ** 2 for t, s in zip(parts, sig))
        return np.sum(np.logaddexp(0, zz) - y * zz) + pen

    theta = np.concatenate([[learner.intercept], *learner.tables])
    parts = np.split(theta[1:], np.cumsum(rows)[:-1])
    r = 1 / (1 + np.exp(-(theta[0] + sum(t[ids[:, f]] for f, t in enumerate(parts))))) - y
    grad = [np.sum(r)] + [np.bincount(ids[:, f], r, len(t)) + t / s ** 2
                          for f, (t, s) in enumerate(zip(parts, sig))]
    assert np.abs(np.concatenate([np.atleast_1d(g) for g in grad])).max() < 1e-7
    from scipy import optimize
    other = optimize.minimize(objective, np.zeros(1 + sum(rows)), method="L-BFGS-B",
                              options={"ftol": 1e-15, "gtol": 1e-10, "maxiter": 10_000})
    assert objective(theta) <= other.fun + 1e-9
    np.testing.assert_allclose(theta, other.x, atol=1e-4)


def test_count_learner_curve_rejects_bad_input():
    src = planted_source(1.6, 1 << 8)
    with pytest.raises(ValueError, match="distinct example counts"):
        P.count_learner_curve(src, [64, 64, 128], eval_examples=256)
    curve = P.CountLearnerCurve(np.array([1.0, 2, 4, 8]), np.array([0.8, 0.79, 0.78, 0.77]), 0.785,
                                np.zeros(4), np.ones(4))
    with pytest.raises(ValueError, match="at or below the Bayes NE"):
        curve.fits(bootstrap=0)


# -- section 2: the blind gap of a missing trilinear term ------------------------------------

NOTE_BLIND_GAP = {0.3: 0.009, 0.5: 0.025, 0.6: 0.035, 0.7: 0.047, 1.0: 0.086}
DEFAULT_LIKE_VARIANCE = 1.5 ** 2 + 1.0 ** 2 + 0.8 ** 2    # id, pair, dense at default strength


def test_blind_gap_reproduces_the_note():
    # The note's table is the best blind predictor's excess with a rest of logit variance
    # ~3.9 (the default strengths) and the rank-4 product-of-normals term at ctr 0.25.
    exact = [T.blind_gap_exact(s, base_ctr=0.25, rest_variance=DEFAULT_LIKE_VARIANCE)
             for s in NOTE_BLIND_GAP]
    np.testing.assert_allclose(exact, list(NOTE_BLIND_GAP.values()), atol=0.0012)
    # The second-order formula from click probabilities: exact for a small term, a few
    # percent high at sigma_t = 0.6 (0.0376 against 0.035).
    for s, want in NOTE_BLIND_GAP.items():
        info = P.gaussian_logit_information(0.25, DEFAULT_LIKE_VARIANCE + s ** 2)
        gap = T.blind_gap(s, info=info, base_ctr=0.25)
        assert want <= gap <= want * (1.1 if s <= 0.7 else 1.2), (s, gap)
    info = P.gaussian_logit_information(0.25, DEFAULT_LIKE_VARIANCE + 0.01)
    small = T.blind_gap_exact(0.1, base_ctr=0.25, rest_variance=DEFAULT_LIKE_VARIANCE)
    assert small == pytest.approx(T.blind_gap(0.1, info=info, base_ctr=0.25), rel=0.02)
    # Samples of the rest of the logit give the same answer as its Gaussian law.
    z = np.random.default_rng(1).normal(0, np.sqrt(DEFAULT_LIKE_VARIANCE), 1024)
    from_samples = T.blind_gap_exact(0.6, base_ctr=0.25, rest_logits=z, draws=1 << 11)
    assert from_samples == pytest.approx(exact[2], rel=0.05)


def test_blind_gap_rejects_bad_input():
    with pytest.raises(ValueError, match="exactly one of rest_variance and rest_logits"):
        T.blind_gap_exact(0.6, base_ctr=0.25)
    with pytest.raises(ValueError, match="sigma_t must be >= 0"):
        T.blind_gap(-0.1, info=0.1, base_ctr=0.25)
    with pytest.raises(ValueError, match="click rate must be in"):
        T.blind_gap(0.5, info=0.1, base_ctr=1.5)


# -- section 3: the rank-D floor and the compute-optimal dimension -----------------------------

NOTE_FLOOR = {2: 0.25, 4: 0.18, 8: 0.13, 16: 0.085, 32: 0.055, 64: 0.034}
VALLEY = {"rho": 1.5, "latent_dim": 512, "pair_variance": 4.0, "base_ctr": 0.25}
NOTE_BUDGETS = [2.4e9, 9.6e9, 3.9e10, 1.5e11]


def test_rank_floor_has_the_notes_shape():
    d = np.array(list(NOTE_FLOOR))
    floor = T.rank_floor(d, info=0.1165, **VALLEY)
    want = np.array(list(NOTE_FLOOR.values()))
    # The note's floors relative to D = 2 (its absolute numbers carry a 1.30x larger
    # prefactor than I/2 with I = E[p(1-p)] = 0.1165 of that world's pair-term logit).
    np.testing.assert_allclose(floor / floor[0], want / want[0], rtol=0.03)
    np.testing.assert_allclose(floor / want, 0.77, rtol=0.03)
    # By hand at D = 2: I/2 * 4 * (sum_{m=3}^{512} m^-1.5 / sum_{m<=512} m^-1.5) / H.
    m = np.arange(1, 513) ** -1.5
    assert floor[0] == pytest.approx(0.5 * 0.1165 * 4 * m[2:].sum() / m.sum() / P.entropy(0.25))
    assert T.rank_floor([0], info=0.1165, **VALLEY)[0] == pytest.approx(
        0.5 * 0.1165 * 4 / P.entropy(0.25))
    assert T.rank_floor([512, 600], info=0.1165, **VALLEY).tolist() == [0.0, 0.0]
    # Far below the latent dimension it falls as D^-(rho - 1).
    big = T.rank_floor([64, 128], info=0.1, **{**VALLEY, "latent_dim": 1 << 20})
    assert np.log(big[0] / big[1]) / np.log(2) == pytest.approx(0.5, abs=0.01)


def test_dim_optimum_reproduces_the_notes_valley():
    # dot without hidden layers: 3 (1486 D + 702) training FLOPs per example; K = 1024 ids;
    # the estimation term (n / K)^-(rho-1)/rho with a coefficient set by the learner.
    dims = np.arange(1, 129)
    floor = T.rank_floor(dims, info=0.1165, **VALLEY)
    kw = {"floor": floor, "examples_exponent": 1 / 3, "ids": 1024,
          "flops_per_example": 3 * (1486 * dims + 702)}
    opt = T.dim_optimum(NOTE_BUDGETS, dims, estimation=1.4, **kw)
    assert opt.best.tolist() == [3, 6, 10, 18] and not opt.at_edge.any()   # note: 3, 6, 11, 18
    assert opt.a == pytest.approx(0.43, abs=0.01)
    # a is the planted part: a learner 1.5-3x less efficient (coefficient x 1.15-1.45) moves D*
    # but keeps a near 0.43; far along, a tends to 1 / (rho + 1) = 0.4.
    for c in (1.6, 2.0):
        other = T.dim_optimum(NOTE_BUDGETS, dims, estimation=c, **kw)
        assert np.all(other.best <= opt.best) and 0.40 <= other.a <= 0.49
    dims = np.arange(1, 2049)
    far = T.dim_optimum(np.geomspace(1e10, 1e15, 6), dims, estimation=1.4, examples_exponent=1 / 3,
                        ids=1024, flops_per_example=3 * (1486 * dims + 702),
                        floor=T.rank_floor(dims, info=0.1165, **{**VALLEY, "latent_dim": 1 << 16}))
    assert far.a == pytest.approx(0.4, abs=0.02) and not far.at_edge.any()
    assert opt.to_dict()["best_dim"] == [3.0, 6.0, 10.0, 18.0]
    with pytest.raises(ValueError, match="one length >= 3"):
        T.dim_optimum(NOTE_BUDGETS, dims[:5], estimation=1.0, **kw)
