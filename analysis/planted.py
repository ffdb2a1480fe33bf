"""Planted answers: what a synthetic world's scaling study must find, computed from the world.

A world whose teacher is an intercept plus one effect per id of each categorical feature,

    logit = b + sum_f w_f[id_f],   w_f[k] ~ N(0, sigma_f^2),   id_f ~ p_f (Zipf ranks),

fixes the data exponent of any learner that estimates each id from the examples that
carry it. The reference learner is the Gaussian posterior (Laplace approximation of the
logistic MAP): an id seen c times keeps an error variance sigma^2 / (1 + lambda c), with
lambda = I sigma^2 and I = E[p (1 - p)] the Fisher information per example. A logit error
delta costs about I delta^2 / 2 of log loss per example, so the excess log loss over the
Bayes-optimal predictor after n examples is

    E(n) = sum_f lambda_f / 2 * sum_k p_fk * E[1 / (1 + lambda_f c_fk)],  c_fk ~ Poisson(n p_fk).

Its local slope tends to 1 - 1/s for Zipf(s) ids while the cardinality K does not bite
(Hutter 2021, arXiv 2102.04074), and steepens towards 1 once it does; so the planted
answer is the study's own law fitted to this exact finite-K curve on the study's n grid,
not 1 - 1/s. In NE units the excess is E(n) / H, H the entropy at the mean click rate.

`predict_data_exponent` computes the curve and both fits the analysis makes: the excess
over the known Bayes NE with no constant (alpha n^-beta) and the free three-parameter
law on Bayes NE + excess. `count_learner_curve` is the training-free check: the same
learner run in numpy on a generator's own ids and labels (logistic MAP with the true
prior, block-coordinate Newton over the per-id tables), evaluated like a trained model.
Its fitted intervals must cover the prediction; when they do and a trained model's do
not, the gap is the trained learner's, not the analysis's.

Two more planted answers (research note, sections 2 and 3), the blind gap of a missing
term and the rank floor with its compute-optimal embedding dimension, are in
analysis/planted_terms.py.

Numpy and scipy only: sources are read through their attributes and methods (duck
typing), nothing from the training package is imported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import optimize, special

from analysis.fitting import NO_CONSTANT
from analysis.laws import PowerLawFit, fit_power_law

TRAIN_STREAM = 0                     # the generator's training stream (dlrm_jax/data/synthetic.py)
# Poisson means up to this are summed term by term (positive terms, no cancellation);
# beyond, Kummer's function 1F1(1; 1 + 1/lambda; -mu), which agrees with the sum to
# 1e-12 where both apply and costs ~2 us a value, so it is kept to the few popular ids.
_SERIES_MAX_MU = 25.0
_SERIES_TAIL = 1e-17                 # bound on the dropped Poisson mass per value


# -- the world's description -------------------------------------------------------

@dataclass(frozen=True)
class FeatureLaw:
    """One categorical feature: id probabilities and the std of its per-id logit effect.

    probs [G], sizes [G]: `sizes[g]` ids have probability `probs[g]` each (1 for ranks
    listed one by one; the world's log-spaced tail groups share one).
    """
    probs: np.ndarray = field(repr=False)
    sizes: np.ndarray = field(repr=False)
    sigma: float

    def __post_init__(self):
        p, n = np.asarray(self.probs, float), np.asarray(self.sizes, float)
        if p.ndim != 1 or p.shape != n.shape or len(p) == 0:
            raise ValueError(f"FeatureLaw: probs and sizes must be 1-D of one length, got "
                             f"{p.shape} and {n.shape}")
        if not (np.all(np.isfinite(p)) and np.all(p >= 0) and np.all(n >= 1)):
            raise ValueError("FeatureLaw: probs must be finite and >= 0, sizes >= 1")
        if abs(float(np.sum(p * n)) - 1.0) > 1e-6:
            raise ValueError(f"FeatureLaw: id probabilities sum to {np.sum(p * n):.8g}, not 1")
        if not (math.isfinite(self.sigma) and self.sigma >= 0):
            raise ValueError(f"FeatureLaw: sigma must be finite and >= 0, got {self.sigma}")
        order = np.argsort(p, kind="stable")     # ascending: `poisson_shrinkage` slices bands
        object.__setattr__(self, "probs", p[order])
        object.__setattr__(self, "sizes", n[order])

    @property
    def cardinality(self) -> int:
        """Ids listed (a world's ranks of probability 0 are left out by `rank_probs`)."""
        return round(float(self.sizes.sum()))


def zipf_rank_probs(cardinality: int, s: float) -> np.ndarray:
    """P(rank = 1..C) of the default generator's ids: floor of a continuous power law
    x^-s on [1, C + 1) (dlrm_jax/data/synthetic.py), so P(k) = F(k + 1) - F(k)."""
    if int(cardinality) != cardinality or cardinality < 1:
        raise ValueError(f"zipf_rank_probs: cardinality must be a count >= 1, got {cardinality!r}")
    if not (math.isfinite(s) and s > 0):
        raise ValueError(f"zipf_rank_probs: s must be > 0, got {s!r}")
    x = np.arange(1, int(cardinality) + 2, dtype=np.float64)
    # the unnormalised CDF, integral of t^-s from 1 to x: stable near s = 1 via expm1
    u = np.log(x) if abs(s - 1.0) < 1e-9 else np.expm1((1.0 - s) * np.log(x)) / (1.0 - s)
    p = np.diff(u)
    return p / p.sum()


def feature_laws(source) -> tuple[FeatureLaw, ...]:
    """The per-feature laws of a synthetic source (`SyntheticSource` or one like it).

    A world's features come from `IdLaw.rank_probs()` (the missing id 0 is an id with an
    effect of its own, drawn with the missing rate); the default generator's from its one
    Zipf exponent. The effect std is the source's per-feature scale (`_id_scale`).
    Raises ValueError where the prediction does not describe the source: ids hashed into
    fewer rows, multi-hot bags, or teacher terms beyond the per-id effects.
    """
    scales = np.asarray(source._id_scale, float)
    cards = tuple(int(c) for c in source.cardinalities)
    rows = tuple(int(r) for r in source.table_sizes)
    folded = [f"C{f + 1}" for f, (c, r) in enumerate(zip(cards, rows)) if r < c]
    if folded:
        raise ValueError(f"planted data exponent: ids of {', '.join(folded)} are hashed into fewer "
                         "rows than the world has ids; the prediction assumes one row per id")
    if max(getattr(source, "bag_sizes", (1,))) > 1:
        raise ValueError("planted data exponent: multi-hot bags average per-id effects; the "
                         "prediction is for one id per feature")
    extra = []
    if float(getattr(source, "_pair_scale", 0.0)) != 0.0:
        extra.append("pair_effect")
    if np.any(np.asarray(getattr(source, "_dense_a", 0.0)) != 0.0):
        extra.append("dense_effect")
    if extra:
        raise ValueError(f"planted data exponent: the world has {' and '.join(extra)} > 0; the "
                         "prediction covers a teacher of per-id effects only (set them to 0)")
    world = getattr(source, "world", None)
    laws = []
    for f, c in enumerate(cards):
        if world is None:
            probs, sizes = zipf_rank_probs(c, float(source.zipf)), np.ones(c)
        else:
            law = world.features[f]
            p, size = law.rank_probs()
            m = float(law.missing_rate)
            probs = np.concatenate([[m], (1.0 - m) * np.asarray(p, float)])
            sizes = np.concatenate([[1.0], np.asarray(size, float)])
        laws.append(FeatureLaw(probs, sizes, float(scales[f])))
    return tuple(laws)


def entropy(ctr: float) -> float:
    """H(p) = -(p log p + (1 - p) log(1 - p)), nats: the NE normaliser at click rate p."""
    if not 0 < ctr < 1:
        raise ValueError(f"entropy: click rate must be in (0, 1), got {ctr}")
    return float(-(ctr * math.log(ctr) + (1 - ctr) * math.log1p(-ctr)))


def click_information(true_probs) -> float:
    """I = E[p (1 - p)] over examples: the Fisher information of one label about its logit."""
    p = np.asarray(true_probs, float)
    if p.size == 0 or not np.all((p >= 0) & (p <= 1)):
        raise ValueError("click_information: need click probabilities in [0, 1]")
    return float(np.mean(p * (1 - p)))


def gaussian_logit_information(base_ctr: float, variance: float) -> float:
    """I = E[p (1 - p)] for logit b + w, w ~ N(0, variance), with b set so E[p] = base_ctr.

    The description-only counterpart of `click_information` (Gauss-Hermite, 80 nodes)."""
    if not 0 < base_ctr < 1 or not (math.isfinite(variance) and variance >= 0):
        raise ValueError(f"gaussian_logit_information: need base_ctr in (0, 1) and variance >= 0, "
                         f"got {base_ctr}, {variance}")
    x, wt = np.polynomial.hermite_e.hermegauss(80)
    wt = wt / wt.sum()
    z = math.sqrt(variance) * x
    b = optimize.brentq(lambda b: wt @ special.expit(b + z) - base_ctr, -40, 40, xtol=1e-12)
    p = special.expit(b + z)
    return float(wt @ (p * (1 - p)))


# -- the exact finite-K curve ------------------------------------------------------

def poisson_shrinkage(mu, lam: float) -> np.ndarray:
    """E[1 / (1 + lam c)] for c ~ Poisson(mu), elementwise over mu (exact).

    Equal to 1F1(1; 1 + 1/lam; -mu) (Kummer: e^-mu 1F1(a; a + 1; mu) with a = 1/lam, and
    sum_c e^-mu mu^c / (c! (1 + lam c)) = e^-mu sum_c (a / (a + c)) mu^c / c!).
    """
    mu = np.asarray(mu, np.float64)
    if not (math.isfinite(lam) and lam > 0):
        raise ValueError(f"poisson_shrinkage: lam must be > 0, got {lam!r}")
    if np.any(~np.isfinite(mu) | (mu < 0)):
        raise ValueError("poisson_shrinkage: Poisson means must be finite and >= 0")
    flat = mu.ravel()
    # Work on ascending means so each band of means is one slice (laws come sorted,
    # `FeatureLaw`, so this sort is skipped for them).
    order = None if np.all(flat[1:] >= flat[:-1]) else np.argsort(flat, kind="stable")
    m_all = flat if order is None else flat[order]
    out = np.empty_like(m_all)
    a = 1.0 / lam
    first_big = int(np.searchsorted(m_all, _SERIES_MAX_MU, side="right"))
    out[first_big:] = special.hyp1f1(1.0, 1.0 + a, -m_all[first_big:])
    # Bands of means, each summed to the number of terms its largest mean needs, by Horner
    # in mu of sum_c (a / (a + c)) mu^c / c!, then times e^-mu.
    tops = [10.0 ** e for e in range(-6, 2)][:-1] + [_SERIES_MAX_MU]
    lo = 0
    for top in tops:
        hi = int(np.searchsorted(m_all, top, side="right"))
        if hi > lo:
            m = m_all[lo:hi]
            c = np.arange(_series_terms(top) + 1, dtype=np.float64)
            coef = a / (a + c) / special.factorial(c)
            acc = np.full(hi - lo, coef[-1])
            for k in coef[-2::-1]:
                acc *= m
                acc += k
            acc *= np.exp(-m)
            out[lo:hi] = acc
        lo = hi
    if order is not None:
        out[order] = out.copy()
    return out.reshape(mu.shape)


def _series_terms(top: float) -> int:
    """Terms after which the Poisson(top) upper tail is below _SERIES_TAIL."""
    c, log_t = 0, -top
    # the tail beyond c is at most twice its first term once c > 2 top
    while not (c > 2 * top and log_t + math.log(2) < math.log(_SERIES_TAIL)):
        c += 1
        log_t += math.log(top) - math.log(c) if top > 0 else -np.inf
    return max(c, 1)


def excess_logloss(n, laws, info: float) -> np.ndarray:
    """E(n) of the Gaussian-posterior learner, nats per example, for each n (module docstring)."""
    n = np.atleast_1d(np.asarray(n, np.float64))
    if n.ndim != 1 or np.any(~np.isfinite(n) | (n <= 0)):
        raise ValueError("excess_logloss: example counts must be finite and > 0")
    if not (math.isfinite(info) and 0 < info <= 0.25):
        raise ValueError("excess_logloss: information I = E[p(1-p)] must be in (0, 0.25], "
                         f"got {info}")
    out = np.zeros(len(n))
    for law in laws:
        lam = info * law.sigma ** 2
        if lam == 0:
            continue
        w = law.sizes * law.probs
        for i, ni in enumerate(n):
            out[i] += 0.5 * lam * float(w @ poisson_shrinkage(ni * law.probs, lam))
    return out


def closed_form_excess(n, cardinality: int, s: float, sigma: float, info: float) -> np.ndarray:
    """The infinite-K, continuum limit of one Zipf feature's E(n) (research note, step 5):
    pi / (2 s sin(pi / s)) (lambda n / Z)^(1/s) / n, Z = sum_{k <= K} k^-s; slope 1 - 1/s."""
    if not s > 1:
        raise ValueError(f"closed_form_excess: needs s > 1, got {s}")
    n = np.asarray(n, np.float64)
    z = float(np.sum(np.arange(1, int(cardinality) + 1, dtype=np.float64) ** -s))
    lam = info * sigma ** 2
    return math.pi / (2 * s * math.sin(math.pi / s)) * (lam * n / z) ** (1 / s) / n


# -- the predicted exponent --------------------------------------------------------

@dataclass
class DataExponentPrediction:
    """The exact excess curve on a grid and the study's two fits of it."""
    n: np.ndarray
    excess_ne: np.ndarray            # E(n) / H
    bayes_ne: float
    info: float                      # I = E[p (1 - p)]
    entropy: float                   # H at the mean click rate
    excess_fit: PowerLawFit          # excess_ne = alpha n^-beta (no constant)
    free_fit: PowerLawFit            # bayes_ne + excess_ne = alpha n^-beta + gamma

    @property
    def beta_excess(self) -> float:
        return self.excess_fit.beta

    @property
    def beta_free(self) -> float:
        return self.free_fit.beta

    def local_slopes(self) -> np.ndarray:
        """-d log excess / d log n between neighbouring grid points."""
        return -np.diff(np.log(self.excess_ne)) / np.diff(np.log(self.n))

    def to_dict(self) -> dict:
        return {"n": self.n.tolist(), "excess_ne": self.excess_ne.tolist(),
                "bayes_ne": self.bayes_ne, "info": self.info, "entropy": self.entropy,
                "beta_excess": self.beta_excess, "beta_free": self.beta_free,
                "gamma_free": self.free_fit.gamma, "local_slopes": self.local_slopes().tolist()}


def predict_data_exponent(laws, n, *, info: float, base_ctr: float,
                          bayes_ne: float = 0.0) -> DataExponentPrediction:
    """The planted data exponent for a grid of training-example counts `n`.

    laws: `FeatureLaw`s (every feature with an effect); info: I = E[p (1 - p)];
    base_ctr: mean click rate (H for the NE units); bayes_ne: the eval set's Bayes NE,
    the asymptote the free fit sees (it moves the free beta a little through the log
    scale of the fit; 0 leaves only the excess).
    """
    n = np.asarray(n, np.float64)
    if len(np.unique(n)) < 4:
        raise ValueError("predict_data_exponent: need at least 4 distinct example counts")
    h = entropy(base_ctr)
    excess = excess_logloss(n, laws, info) / h
    exc_fit = fit_power_law(n, excess, bootstrap=0, options=NO_CONSTANT)
    free_fit = fit_power_law(n, bayes_ne + excess if bayes_ne > 0 else excess, bootstrap=0)
    return DataExponentPrediction(n, excess, float(bayes_ne), float(info), h, exc_fit, free_fit)


def predict_for_source(source, n, *, eval_examples: int) -> DataExponentPrediction:
    """`predict_data_exponent` for a synthetic source: its laws, and I and the Bayes NE of
    its own eval set (`eval_batch`, the first `eval_examples` of the eval stream)."""
    batch, p = source.eval_batch(int(eval_examples)), source.eval_true_probs(int(eval_examples))
    return predict_data_exponent(feature_laws(source), n, info=click_information(p),
                                 base_ctr=float(source.base_ctr),
                                 bayes_ne=normalized_entropy(np.asarray(p), batch.labels))


# -- the training-free tier --------------------------------------------------------

def normalized_entropy(probs, labels) -> float:
    """Mean log loss of click probabilities over the entropy of the labels' mean (NE)."""
    p = np.clip(np.asarray(probs, np.float64), 1e-15, 1 - 1e-15)
    y = np.asarray(labels, np.float64)
    ll = -np.mean(y * np.log(p) + (1 - y) * np.log1p(-p))
    return float(ll / entropy(float(np.mean(y))))


@dataclass
class CountLearner:
    """Logistic MAP over per-id tables with Gaussian priors N(0, sigma_f^2) and a free
    intercept: the learner whose posterior the theory describes, fitted by block-coordinate
    Newton steps (one feature's table and the intercept at a time: two bincounts)."""
    rows: tuple[int, ...]
    sigmas: tuple[float, ...]
    intercept: float = 0.0
    tables: list[np.ndarray] = field(default_factory=list)

    def __post_init__(self):
        if not self.tables:
            self.tables = [np.zeros(r) for r in self.rows]

    def logits(self, ids: np.ndarray) -> np.ndarray:
        z = np.full(len(ids), self.intercept)
        for f, t in enumerate(self.tables):
            z += t[ids[:, f]]
        return z

    def fit(self, ids: np.ndarray, labels: np.ndarray, *, max_sweeps: int = 50,
            tol: float = 1e-4) -> int:
        """Newton sweeps from the current tables until no logit moves by more than `tol`;
        returns the sweeps taken. (Warm starts from a smaller prefix converge in a few.)"""
        y = np.asarray(labels, np.float64)
        z = self.logits(ids)
        prec = [1.0 / s ** 2 if s > 0 else np.inf for s in self.sigmas]
        for sweep in range(1, max_sweeps + 1):
            moved = 0.0
            for f, table in enumerate(self.tables):
                if not math.isfinite(prec[f]):
                    continue
                # Newton on (table f, intercept) together: a popular id's effect and the
                # intercept move the same examples, and stepping them one at a time
                # creeps along that valley for dozens of sweeps. The Hessian is diagonal
                # plus the intercept's row and column: solved by its Schur complement.
                p = special.expit(z)
                w = p * (1 - p)
                col = ids[:, f]
                u = np.bincount(col, w, len(table))
                g = np.bincount(col, y - p, len(table)) - prec[f] * table
                dg = u + prec[f]
                g0, h0 = float(np.sum(y - p)), float(np.sum(w))
                d0 = (g0 - float(np.sum(u * g / dg))) / max(h0 - float(np.sum(u * u / dg)), 1e-300)
                d = (g - u * d0) / dg
                table += d
                self.intercept += d0
                z += d[col] + d0
                moved = max(moved, float(np.abs(d).max()), abs(d0))
            if moved < tol:
                return sweep
        return max_sweeps


@dataclass
class CountLearnerCurve:
    """Eval NE of the count-based learner after each prefix of the training stream.

    ne - bayes_ne is what a study sees (label noise included); kl_ne, the mean KL divergence
    of the predictions from the true probabilities over the same eval inputs (in NE units),
    is its expectation over the labels: the excess without the labels' noise.
    """
    n: np.ndarray
    ne: np.ndarray
    bayes_ne: float
    kl_ne: np.ndarray
    sweeps: np.ndarray

    @property
    def excess(self) -> np.ndarray:
        return self.ne - self.bayes_ne

    def fits(self, *, bootstrap: int = 200, seed: int = 0) -> tuple[PowerLawFit, PowerLawFit]:
        """(excess = alpha n^-beta, NE = alpha n^-beta + gamma): the study's two fits."""
        if np.any(self.excess <= 0):
            raise ValueError("count learner: an eval NE at or below the Bayes NE; the eval set "
                             "is too small to resolve the excess")
        return (fit_power_law(self.n, self.excess, bootstrap=bootstrap, seed=seed,
                              options=NO_CONSTANT),
                fit_power_law(self.n, self.ne, bootstrap=bootstrap, seed=seed))


def count_learner_curve(source, n, *, eval_examples: int, max_sweeps: int = 50,
                        tol: float = 1e-4) -> CountLearnerCurve:
    """The learner on the source's training stream (prefixes of n examples, one draw of
    the largest, each fit warm-started from the one before) and its NE on the first
    `eval_examples` of the eval stream; `bayes_ne` is the NE of the true probabilities on
    the same eval set."""
    n = np.sort(np.asarray(n, np.int64))
    if len(n) == 0 or n[0] < 1 or len(np.unique(n)) != len(n):
        raise ValueError("count_learner_curve: need distinct example counts >= 1")
    laws = feature_laws(source)          # checks the source is one the theory describes
    train, _ = source.examples(TRAIN_STREAM, np.arange(int(n[-1])))
    ev, p_true = source.eval_batch(int(eval_examples)), source.eval_true_probs(int(eval_examples))
    ids, y = np.asarray(train.sparse, np.int64), np.asarray(train.labels, np.float64)
    eval_ids = np.asarray(ev.sparse, np.int64)
    learner = CountLearner(tuple(int(r) for r in source.table_sizes),
                           tuple(law.sigma for law in laws))
    h = entropy(float(np.mean(ev.labels)))
    ne, kl, sweeps = [], [], []
    for k in n:
        sweeps.append(learner.fit(ids[:k], y[:k], max_sweeps=max_sweeps, tol=tol))
        q = special.expit(learner.logits(eval_ids))
        ne.append(normalized_entropy(q, ev.labels))
        kl_nats = special.rel_entr(p_true, q) + special.rel_entr(1 - p_true, 1 - q)
        kl.append(float(np.mean(kl_nats)) / h)
    return CountLearnerCurve(n.astype(np.float64), np.array(ne),
                             normalized_entropy(p_true, ev.labels),
                             np.array(kl), np.array(sweeps))
