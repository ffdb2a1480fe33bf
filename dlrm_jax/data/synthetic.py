"""A Criteo-shaped click generator with a known answer.

Each example has 13 dense and 26 categorical features and a label drawn from a
hidden "teacher" whose click probability is known exactly:

    logit = b0 + sum_f e_f[id_f]                      per-id effects
               + sum_(f,g) in pairs <u_f[id_f], u_g[id_g]>   pairwise (rank `latent_dim`)
               + a . tanh(W z + c)                    dense effect on standardised log-counts z
    p = sigmoid(logit),  y = 1[uniform < p]

Ids are Zipf-like per feature (a bounded power law over ranks, scrambled by an
affine permutation so popular ids are spread over the id space, as hashing does
to Criteo's), dense features are log-normal counts transformed with log(x + 1)
as the reference DLRM does.  b0 is solved so the mean click rate is `base_ctr`.

Everything is a pure function of (seed, stream, example index): a counter-based
hash (splitmix64) keyed by those numbers gives every random draw, so "the first
N examples" is one fixed set whatever the batch size, host count or resume
point, and nothing needs a sequential RNG.  Per-id effects are hashed from
(seed, feature, id) too; when the tables are small they are materialised once
(identical values, faster gathers).

Because p is known, the Bayes-optimal NE of any evaluation set is exact
(`bayes_ne`): no model can do better in expectation.

Multi-hot features (`model.multi_hot`, `embedding/bags.py`): a feature with bag
size k draws k ids per example, each independently from its Zipf law (the first
with the one-hot draw, so bags extend the one-hot stream), and the teacher uses
the whole bag: e_f and u_f above become the means of the bag's per-id effects
and latents.  The ids come out [B, K], bags side by side in feature order, and
p stays exact.
"""
from __future__ import annotations

import math
from typing import Iterator, Sequence

import numpy as np
from scipy import optimize, special

from dlrm_jax.data.base import NUM_DENSE, NUM_SPARSE, Batch
from dlrm_jax.data.hashing import fold_ids, table_rows_for
from dlrm_jax.errors import UserError

TRAIN_STREAM, EVAL_STREAM, CALIBRATION_STREAM = 0, 1, 2
_U64 = np.uint64
_MASK53 = float(2 ** -53)
# Materialise per-id tables when they hold at most this many float32 values.
_MATERIALISE_LIMIT = 32_000_000


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a bijective, well-mixed map of uint64 (wrapping)."""
    with np.errstate(over="ignore"):
        x = x ^ (x >> _U64(30))
        x = x * _U64(0xBF58476D1CE4E5B9)
        x = x ^ (x >> _U64(27))
        x = x * _U64(0x94D049BB133111EB)
        return x ^ (x >> _U64(31))


def _key(*parts: int) -> np.uint64:
    k = np.array(0x9E3779B97F4A7C15, dtype=_U64)
    for p in parts:
        k = _mix(k ^ np.array(p & 0xFFFFFFFFFFFFFFFF, dtype=_U64))
    return k


def hash_uniform(key: np.uint64, i: np.ndarray, j: np.ndarray | int) -> np.ndarray:
    """Uniform(0, 1) (open interval) for each (i, j) under `key`, float64."""
    i = np.asarray(i, dtype=_U64)
    j = np.asarray(j, dtype=_U64)
    with np.errstate(over="ignore"):
        x = _mix(_mix(i * _U64(0xD1B54A32D192ED03) + key) ^ (j * _U64(0x8CB92BA72F3D8DD7)))
    return ((x >> _U64(11)).astype(np.float64) + 0.5) * _MASK53


def hash_normal(key: np.uint64, i: np.ndarray, j: np.ndarray | int) -> np.ndarray:
    return special.ndtri(hash_uniform(key, i, j))


def spread_cardinalities(largest: int) -> tuple[int, ...]:
    """26 cardinalities from tiny to `largest`, log-spaced like Criteo's mix."""
    exps = np.linspace(0.15, 1.0, NUM_SPARSE)
    order = np.random.default_rng(1234).permutation(NUM_SPARSE)  # fixed, seed-independent
    return tuple(max(2, int(round(largest ** exps[o]))) for o in order)


class SyntheticSource:
    """The DataSource for `data.source=synthetic` (see dlrm_jax/data/base.py)."""

    num_train = None  # an endless stream

    def __init__(self, seed: int = 0, cardinalities: int | Sequence[int] = 20000, zipf: float = 1.05,
                 base_ctr: float = 0.25, id_effect: float = 1.5, pair_effect: float = 1.0,
                 dense_effect: float = 0.8, latent_dim: int = 4, num_pairs: int = 24,
                 table_sizes: Sequence[int] | None = None, world=None,
                 multi_hot: Sequence[int] | None = None):
        # A world (dlrm_jax/data/world.py) replaces the Zipf ids, log-normal dense
        # counts, click rate and teacher strengths with its fitted laws; without
        # one the generator is exactly the default world.
        self.world = world
        if world is not None:
            cardinalities, base_ctr, latent_dim = world.table_rows, world.base_ctr, world.latent_dim
            id_effect, pair_effect, dense_effect = world.id_effect, world.pair_effect, world.dense_effect
        self.seed = seed
        self.bag_sizes = tuple(int(k) for k in multi_hot) if multi_hot is not None else (1,) * NUM_SPARSE
        if len(self.bag_sizes) != NUM_SPARSE or min(self.bag_sizes) < 1:
            raise ValueError(f"need {NUM_SPARSE} bag sizes >= 1, got {self.bag_sizes}")
        if world is not None and max(self.bag_sizes) > 1:
            raise UserError("synthetic.world draws one id per feature: it cannot be combined with model.multi_hot")
        # Column c of the [B, K] ids: feature, and the index its uniform draws are keyed by
        # (a bag's first id keeps the one-hot key f; the others get keys past NUM_SPARSE).
        self._col_feature = np.repeat(np.arange(NUM_SPARSE), self.bag_sizes)
        first = np.concatenate([[0], np.cumsum(self.bag_sizes)[:-1]])
        self._col_key = np.arange(len(self._col_feature)) + NUM_SPARSE
        self._col_key[first] = np.arange(NUM_SPARSE)
        self.cardinalities = (spread_cardinalities(cardinalities) if isinstance(cardinalities, int)
                              else tuple(int(c) for c in cardinalities))
        if len(self.cardinalities) != NUM_SPARSE:
            raise ValueError(f"need {NUM_SPARSE} cardinalities, got {len(self.cardinalities)}")
        # Rows of the model's tables: ids beyond a table's rows are hashed (mod)
        # into it, as the Criteo preprocessing does with a row cap.
        self.table_sizes = tuple(self.cardinalities if table_sizes is None else table_sizes)
        self.zipf, self.base_ctr, self.latent_dim = zipf, base_ctr, latent_dim
        rng = np.random.default_rng([seed, 77])  # teacher structure: small, drawn once
        w = rng.uniform(0.2, 1.0, NUM_SPARSE)
        self._id_scale = id_effect * w / np.sqrt(np.sum(w ** 2))
        pairs = set()
        while len(pairs) < num_pairs:
            f, g = sorted(rng.choice(NUM_SPARSE, 2, replace=False))
            pairs.add((int(f), int(g)))
        self._pairs = np.array(sorted(pairs))
        if world is not None and world.pairs is not None:
            # Explicit pairs replace the random ones, drawn above all the same, so that
            # everything drawn after them is the world's without the explicit list.
            self._pairs = np.array(world.pairs)
            num_pairs = len(world.pairs)
        self._pair_scale = pair_effect / math.sqrt(num_pairs * latent_dim)
        # A latent spectrum (planted worlds): component m of <u_f, u_g> weighted by
        # lambda_m^2 ~ m^-rho, summing to the same pair variance pair_effect^2 / pairs.
        # A rank-D model then misses the components past D: its floor falls as D^-(rho-1).
        self._pair_weights = None
        if world is not None and world.latent_rho is not None:
            lam2 = np.arange(1, latent_dim + 1, dtype=np.float64) ** -world.latent_rho
            self._pair_weights = (lam2 / lam2.sum() * pair_effect ** 2 / num_pairs).astype(np.float32)
        self._triple = world.triple if world is not None else None
        self._dense_mu = rng.uniform(0.5, 3.0, NUM_DENSE)      # log-count location
        self._dense_sigma = rng.uniform(0.5, 1.5, NUM_DENSE)
        hidden = 8
        self._dense_w = rng.normal(0, 1 / math.sqrt(NUM_DENSE), (NUM_DENSE, hidden))
        self._dense_c = rng.normal(0, 0.5, hidden)
        a = rng.normal(0, 1, hidden)
        self._dense_a = dense_effect * a / np.sqrt(np.sum(a ** 2) * 0.4)  # tanh(.) has var ~0.4
        # Affine scramble of ranks per feature: id = (rank * A + B) mod C, gcd(A, C) = 1.
        self._perm = []
        # With a world, ranks are scrambled over the present ids 1..C (id 0 = missing).
        for c in (self.cardinalities if world is None else [f.cardinality for f in world.features]):
            mult = int(rng.integers(1, c)) | 1 if c > 1 else 1  # one value: nothing to scramble
            while math.gcd(mult, c) != 1:
                mult += 1
            self._perm.append((mult % c if c > 1 else 0, int(rng.integers(0, c))))
        self._keys = {name: _key(seed, n) for n, name in enumerate(
            ("ids", "dense", "label", "effect", "latent"))}
        if world is not None:
            self._dense_mu, self._dense_sigma = (np.array(v) for v in zip(*(d.moments() for d in world.dense)))
        self._tables = self._materialise() if (
            sum(self.cardinalities) * (1 + latent_dim) <= _MATERIALISE_LIMIT) else None
        self._b0 = 0.0
        self._b0 = self._solve_intercept()

    # ----------------------------------------------------------------- teacher parts

    def _effects(self, f: int, ids: np.ndarray, latents: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """Per-id effect e_f[id] (scaled) and latent u_f[id] [..., k] of feature f (None unless `latents`)."""
        if self._tables is not None:
            eff, lat = self._tables[f]
            return eff[ids], (lat[ids] if latents else None)
        eff, lat = self._hash_effects(f, ids)
        return eff, (lat if latents else None)

    def _hash_effects(self, f: int, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k = self.latent_dim
        row = ids.astype(np.uint64) * _U64(NUM_SPARSE) + _U64(f)
        eff = (hash_normal(self._keys["effect"], row, 0) * self._id_scale[f]).astype(np.float32)
        lat = hash_normal(self._keys["latent"], row[..., None], np.arange(k)).astype(np.float32)
        return eff, lat

    def _materialise(self):
        return [self._hash_effects(f, np.arange(c)) for f, c in enumerate(self.cardinalities)]

    def _raw(self, stream: int, index: np.ndarray):
        """(dense [B,13] float32, ids [B,K] int64 (K = 26 one-hot), logit-without-intercept [B])."""
        index = np.asarray(index, dtype=np.int64)
        row = index.astype(np.uint64) * _U64(4) + _U64(stream)
        u = hash_uniform(self._keys["ids"], row[:, None], self._col_key)
        if self.world is not None:  # one-hot only (checked in __init__): u's columns are the 26 features
            return self._raw_world(row, u)
        s = self.zipf
        ids = np.empty((len(index), len(self._col_feature)), dtype=np.int64)
        for col, f in enumerate(self._col_feature):
            c = self.cardinalities[f]
            # Inverse CDF of a continuous power law on [1, c + 1): a Zipf(s) rank.
            if abs(s - 1.0) < 1e-9:
                x = np.power(c + 1.0, u[:, col])
            else:
                x = np.power(1.0 + u[:, col] * ((c + 1.0) ** (1.0 - s) - 1.0), 1.0 / (1.0 - s))
            rank = np.minimum(x.astype(np.int64), c) - 1
            mult, add = self._perm[f]
            ids[:, col] = (rank * mult + add) % c
        z = hash_normal(self._keys["dense"], row[:, None], np.arange(NUM_DENSE))
        counts = np.floor(np.expm1(np.maximum(self._dense_mu + self._dense_sigma * z, 0.0)))
        dense = np.log1p(counts).astype(np.float32)  # what the model sees
        # The teacher reads the same transformed values, so nothing is hidden from the model.
        return dense, ids, self._teacher_logit(dense, ids)

    def _raw_world(self, row: np.ndarray, u: np.ndarray):
        """`_raw` with the world's laws: ids from its per-feature popularity, dense from its marginals."""
        ids = np.stack([law.ids(u[:, f], self._perm[f]) for f, law in enumerate(self.world.features)], 1)
        ud = hash_uniform(self._keys["dense"], row[:, None], np.arange(NUM_DENSE))
        dense = np.stack([d.sample(ud[:, j]) for j, d in enumerate(self.world.dense)], 1).astype(np.float32)
        return dense, ids, self._teacher_logit(dense, ids)

    def world_ids(self, stream: int, index: np.ndarray) -> np.ndarray:
        """The generator's ids [B, 26] before folding into table rows (no teacher work)."""
        row = np.asarray(index, dtype=np.uint64) * _U64(4) + _U64(stream)
        u = hash_uniform(self._keys["ids"], row[:, None], np.arange(NUM_SPARSE))
        if self.world is not None:
            return np.stack([law.ids(u[:, f], self._perm[f]) for f, law in enumerate(self.world.features)], 1)
        return self._raw(stream, index)[1]

    def _teacher_logit(self, dense: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """The teacher's logit without the intercept [B]: dense, per-id and pairwise effects."""
        # The teacher reads the transformed values the model sees, standardised.
        zs = (dense - self._dense_mu) / self._dense_sigma
        logit = np.tanh(zs @ self._dense_w + self._dense_c) @ self._dense_a
        lats = {}
        paired = set(self._pairs.ravel().tolist())  # latents are gathered only where a pair term reads them
        for f in range(NUM_SPARSE):
            bag = ids[:, self._col_feature == f]                         # [B, k]
            eff, lat = self._effects(f, bag, latents=f in paired)
            logit += eff.mean(axis=1) if bag.shape[1] > 1 else eff[:, 0]
            if lat is not None:
                lats[f] = lat.mean(axis=1) if bag.shape[1] > 1 else lat[:, 0]
        for f, g in self._pairs:
            if self._pair_weights is None:
                logit += self._pair_scale * np.einsum("bk,bk->b", lats[f], lats[g])
            else:
                logit += np.einsum("bk,k,bk->b", lats[f], self._pair_weights, lats[g])
        if self._triple is not None and self._triple.effect > 0:
            logit += self.triple_term(ids)
        return logit

    def triple_latents(self, f: int, ids: np.ndarray) -> np.ndarray:
        """The trilinear term's latents of feature f's ids [..., rank]: the first `rank`
        components of the pair latents u_f (N(0, 1) per id).  Shared, so that the pair
        terms on these features pull a model's embeddings towards the very latents the
        trilinear term is built on: from small random embeddings a pure trilinear term
        sits at a saddle (its gradient is a product of two near-zero embeddings)."""
        return self._effects(f, ids)[1][..., :self._triple.rank].astype(np.float64)

    def triple_term(self, ids: np.ndarray) -> np.ndarray:
        """T [B] of a world's trilinear term (world.Triple) for one-hot ids [B, 26]."""
        t = self._triple
        a, b, c = (self.triple_latents(f, ids[:, f]) for f in t.features)
        return (t.effect / math.sqrt(t.rank)) * np.einsum("bk,bk,bk->b", a, b, c)

    def _solve_intercept(self) -> float:
        _, _, logit = self._raw(CALIBRATION_STREAM, np.arange(1 << 15))
        return optimize.brentq(lambda b: special.expit(logit + b).mean() - self.base_ctr, -30, 30, xtol=1e-10)

    # ----------------------------------------------------------------- public

    def examples(self, stream: int, index: np.ndarray) -> tuple[Batch, np.ndarray]:
        """(Batch, true click probabilities) of the given example indices."""
        dense, ids, logit = self._raw(stream, index)
        p = special.expit(logit + self._b0)
        row = np.asarray(index, dtype=np.uint64) * _U64(4) + _U64(stream)
        labels = (hash_uniform(self._keys["label"], row, 0) < p).astype(np.float32)
        return Batch(dense, fold_ids(ids, np.asarray(self.table_sizes)[self._col_feature]), labels), p

    def train_batches(self, batch_size: int, start: int, stop: int,
                      host_index: int = 0, host_count: int = 1) -> Iterator[Batch]:
        if batch_size % host_count:
            raise ValueError(f"batch size {batch_size} is not divisible by {host_count} hosts")
        for lo in range(start, stop, batch_size):
            hi = min(lo + batch_size, stop)
            per_host = (hi - lo) // host_count
            first = lo + host_index * per_host
            yield self.examples(TRAIN_STREAM, np.arange(first, first + per_host))[0]

    def eval_batch(self, num_examples: int) -> Batch:
        return self._eval(num_examples)[0]

    def eval_true_probs(self, num_examples: int) -> np.ndarray:
        return self._eval(num_examples)[1]

    def _eval(self, n: int):
        if getattr(self, "_eval_cache", (None,))[0] != n:
            self._eval_cache = (n, self.examples(EVAL_STREAM, np.arange(n)))
        return self._eval_cache[1]


def from_config(cfg) -> SyntheticSource:
    """The generator a Config describes, with ids hashed into the model's table rows."""
    s = cfg.synthetic
    if s.world:
        from dlrm_jax.data.world import load_world
        world = load_world(s.world)
        return SyntheticSource(seed=s.seed, world=world,
                               table_sizes=table_rows_for(cfg.model.table_rows, world.table_rows),
                               multi_hot=cfg.model.multi_hot if isinstance(cfg.model.multi_hot, tuple)
                               else (cfg.model.multi_hot,) * NUM_SPARSE)
    cards = spread_cardinalities(s.cardinalities) if isinstance(s.cardinalities, int) else s.cardinalities
    return SyntheticSource(seed=s.seed, cardinalities=cards, zipf=s.zipf, base_ctr=s.base_ctr,
                           id_effect=s.id_effect, pair_effect=s.pair_effect, dense_effect=s.dense_effect,
                           latent_dim=s.latent_dim, table_sizes=table_rows_for(cfg.model.table_rows, cards),
                           multi_hot=(cfg.model.multi_hot if isinstance(cfg.model.multi_hot, tuple)
                                      else (cfg.model.multi_hot,) * NUM_SPARSE))
