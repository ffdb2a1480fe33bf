"""A synthetic *world*: per-feature id popularity, dense marginals, click rate, teacher strength.

The default generator (dlrm_jax/data/synthetic.py) draws every feature's ids
from one Zipf exponent and its dense counts from log-normals.  A world replaces
those with laws fitted to a real click log (`dlrm-scaling data calibrate`,
dlrm_jax/data/calibrate.py), so that what scales with data (how fast new ids
stop appearing) looks like the log's.  `synthetic.world=NAME|FILE` selects one;
`criteo-like` ships with the project (dlrm_jax/data/worlds/criteo-like.json,
fitted numbers only, no rows of any data set).

Categorical feature f (`IdLaw`), C present values, ids 0..C (C + 1 table rows):
    id 0 is "missing" (as in prepared Criteo shards), drawn with probability m;
    otherwise a popularity rank k in 1..C: the K most popular ranks with their
    measured shares (`head`: values seen >= 30 times, so their share is known
    to ~18%), the rest from a Zipf-Mandelbrot tail, P(k) ~ (k + q)^-s, sampled
    as floor(x - q) of a continuous power law x^-s on [K + 1 + q, C + 1 + q)
    (so P(k) = F(k + 1 + q) - F(k + q) exactly, with F that law's CDF); the
    rank is then scrambled over ids 1..C by an affine permutation.  The head
    pins the few values that carry most of a small table's mass (Criteo's small
    and mid tables are far more skewed at the top than any one power law); the
    tail's (s, q) are fitted to how fast new ids appear.
Dense feature j (`DenseMarginal`): 0 with probability m (missing; the log1p
transform maps missing, negative and zero counts all to 0), otherwise the
inverse of a piecewise-linear quantile function of log(1 + count), rounded
to log1p of the nearest whole count (counts are integers in the logs).

What a world cannot hold: correlations between features (each feature's id is
drawn on its own; the teacher's pairs are random, not the log's), time drift
(a world's stream is stationary; the logs' new values come in bursts), and the
log's own click function (only the teacher's strength is calibrated; README,
"A world calibrated to Criteo").

Everything here is numpy; the per-example draws stay pure functions of
(seed, stream, index) because the caller passes hashed uniforms in.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dlrm_jax.data.base import NUM_DENSE, NUM_SPARSE
from dlrm_jax.errors import UserError

FORMAT = "dlrm-scaling/synthetic-world"
FORMAT_VERSION = 1
WORLDS_DIR = Path(__file__).resolve().parent / "worlds"
# Ranks whose probabilities `IdLaw.expected_distinct` evaluates one by one (after the head);
# beyond, ranks are grouped log-spaced: with 1024 groups up to 10M ranks a group spans
# 0.8% in rank, so its probabilities differ by < 1% (s <= 1.2) and 1 - (1-p)^n by less.
_EXACT_RANKS = 1 << 12
_TAIL_GROUPS = 1024


def _power_cdf_terms(x: np.ndarray, s: float, x0: float) -> np.ndarray:
    """The integral of (t/x0)^-s dt/x0 from x0 to x: increasing in x, 0 at x0.

    Relative to the law's lower end x0 so that steep laws (s ~ 15) keep their
    precision where nearly all their mass is."""
    r = np.log(np.asarray(x, np.float64) / x0)
    if abs(s - 1.0) < 1e-9:
        return r
    return np.expm1((1.0 - s) * r) / (1.0 - s)   # ((x/x0)^(1-s) - 1) / (1 - s)


@dataclass(frozen=True)
class IdLaw:
    """Popularity of one categorical feature's ids (module docstring)."""
    cardinality: int                 # C: values a present id takes (table rows: C + 1, id 0 = missing)
    missing_rate: float              # m
    s: float                         # Zipf-Mandelbrot exponent of the tail
    q: float = 0.0                   # Zipf-Mandelbrot shift of the tail
    head: tuple[float, ...] = ()     # P(rank = 1..K) among present ids, as measured; the tail
                                     # (ranks K+1..C) shares 1 - sum(head) by the power law

    @property
    def rows(self) -> int:
        return self.cardinality + 1

    @property
    def tail_mass(self) -> float:
        return max(0.0, 1.0 - float(sum(self.head))) if len(self.head) < self.cardinality else 0.0

    def _bounds(self) -> tuple[float, float]:
        """(x0, total): the tail's lower end and the integral over [x0, C + 1 + q)."""
        x0 = len(self.head) + 1.0 + self.q
        return x0, float(_power_cdf_terms(self.cardinality + 1.0 + self.q, self.s, x0))

    def rank_mass(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """P(lo <= rank < hi) among present ids, for tail rank bounds in K+1..C+1."""
        x0, total = self._bounds()
        if total <= 0:
            return np.zeros(np.shape(lo))
        t = _power_cdf_terms(np.asarray(hi, np.float64) + self.q, self.s, x0) - \
            _power_cdf_terms(np.asarray(lo, np.float64) + self.q, self.s, x0)
        return self.tail_mass * t / total

    def ranks(self, u: np.ndarray) -> np.ndarray:
        """Inverse CDF: uniforms in (0, 1) -> ranks in 1..C (int64)."""
        k = len(self.head)
        cum = np.cumsum(self.head)
        out = np.searchsorted(cum, u, side="right").astype(np.int64) + 1   # head ranks 1..K
        tail = out > k
        if k >= self.cardinality or not tail.any():
            return np.minimum(out, max(k, 1))
        v = np.clip((u[tail] - (cum[-1] if k else 0.0)) / max(self.tail_mass, 1e-300), 0.0, 1.0)
        x0, total = self._bounds()
        t = v * total
        if abs(self.s - 1.0) < 1e-9:
            x = x0 * np.exp(t)
        else:
            x = x0 * np.exp(np.log1p((1.0 - self.s) * t) / (1.0 - self.s))
        out[tail] = np.clip(np.floor(x - self.q).astype(np.int64), k + 1, self.cardinality)
        return out

    def rank_probs(self) -> tuple[np.ndarray, np.ndarray]:
        """(p [G], size [G]): G groups of ranks, `size` ranks each with probability p.
        The first 4,096 tail ranks one by one; beyond, log-spaced groups."""
        k = len(self.head)
        p = np.asarray(self.head, np.float64)
        size = np.ones_like(p)
        c = self.cardinality
        if c > k and self.tail_mass > 0:
            k_exact = min(c, k + _EXACT_RANKS)
            r = np.arange(k + 1, k_exact + 1, dtype=np.float64)
            p = np.concatenate([p, self.rank_mass(r, r + 1)])
            size = np.concatenate([size, np.ones_like(r)])
            if c > k_exact:
                edges = np.unique(np.round(np.geomspace(k_exact + 1, c + 1, _TAIL_GROUPS + 1)))
                group = self.rank_mass(edges[:-1], edges[1:])
                p = np.concatenate([p, group / np.diff(edges)])
                size = np.concatenate([size, np.diff(edges)])
        return p, size

    def expected_distinct(self, rows: np.ndarray) -> np.ndarray:
        """E[distinct present ids] after each number of rows: sum_k 1 - (1 - (1-m) p_k)^n."""
        rows = np.atleast_1d(np.asarray(rows, np.float64))
        if self.missing_rate >= 1.0:
            return np.zeros_like(rows)
        p, size = self.rank_probs()
        p = np.clip(p * (1.0 - self.missing_rate), 0.0, 1.0 - 1e-16)
        log_keep = np.log1p(-p)                                   # log(1 - p_k)
        # 1 - (1 - p)^n per rank, times how many ranks share that p.
        return np.array([np.sum(size * -np.expm1(n * log_keep)) for n in rows])

    def ids(self, u: np.ndarray, perm: tuple[int, int]) -> np.ndarray:
        """Uniforms [B] -> ids in 0..C: 0 where missing, else a rank scrambled over 1..C."""
        m = self.missing_rate
        out = np.zeros(u.shape, np.int64)
        if m >= 1.0:
            return out
        present = u >= m
        v = np.clip((u[present] - m) / (1.0 - m), 0.0, 1.0 - 2 ** -53)
        mult, add = perm
        out[present] = 1 + ((self.ranks(v) - 1) * mult + add) % self.cardinality
        return out

    def to_json(self) -> dict:
        return {"cardinality": self.cardinality, "missing_rate": self.missing_rate,
                "s": self.s, "q": self.q, "head": list(self.head)}


@dataclass(frozen=True)
class DenseMarginal:
    """log(1 + count) of one dense feature: missing rate + quantiles of the present values."""
    missing_rate: float
    probs: tuple[float, ...]        # increasing, from 0 to 1
    quantiles: tuple[float, ...]    # log1p(count) at each prob, non-decreasing

    def sample(self, u: np.ndarray) -> np.ndarray:
        """Uniforms [B] -> log1p(count) values [B] float64 (0 where missing)."""
        m = self.missing_rate
        out = np.zeros(u.shape, np.float64)
        present = u >= m
        v = (u[present] - m) / max(1.0 - m, 1e-300)
        x = np.interp(v, self.probs, self.quantiles)
        # Counts are whole numbers: round to the nearest one.  (Between two knots
        # the true counts are somewhere in between; rounding down would shift
        # every quantile by half a count.)
        out[present] = np.log1p(np.rint(np.expm1(x)))
        return out

    def moments(self) -> tuple[float, float]:
        """Mean and std of the sampled values (a fine midpoint grid of uniforms)."""
        x = self.sample((np.arange(1 << 16) + 0.5) / (1 << 16))
        return float(x.mean()), float(max(x.std(), 1e-6))

    def to_json(self) -> dict:
        return {"missing_rate": self.missing_rate, "probs": list(self.probs),
                "quantiles": list(self.quantiles)}


@dataclass(frozen=True)
class Triple:
    """T = effect / sqrt(rank) * sum_k u_f[i]_k u_g[j]_k u_h[l]_k over the first `rank`
    components of the features' pair latents u (N(0, 1) per id; rank <= latent_dim).

    Its mean given any two of the three ids is 0, so no sum of pairwise terms
    carries any of it; a product of three features (DCN's second cross layer)
    represents it exactly."""
    features: tuple[int, int, int]    # feature indices (0-based)
    rank: int
    effect: float                     # the term's standard deviation

    def to_json(self) -> dict:
        return {"features": [f"C{f + 1}" for f in self.features], "rank": self.rank, "effect": self.effect}


@dataclass(frozen=True)
class World:
    name: str
    base_ctr: float
    features: tuple[IdLaw, ...]          # 26
    dense: tuple[DenseMarginal, ...]     # 13
    id_effect: float
    pair_effect: float
    dense_effect: float
    latent_dim: int = 4
    # Planted teacher terms (README, "Planted truths"); absent in fitted worlds:
    pairs: tuple[tuple[int, int], ...] | None = None   # explicit pair terms (feature indices); None: 24 random
    latent_rho: float | None = None      # latent spectrum: component m of the pair latents has variance ~ m^-rho
    triple: Triple | None = None         # a rank-r element-wise trilinear term on three features
    source: dict = field(default_factory=dict, compare=False)   # provenance + fit report
    comment: str = field(default="", compare=False)

    @property
    def table_rows(self) -> tuple[int, ...]:
        """Rows per feature's id space (present values + the missing id 0)."""
        return tuple(f.rows for f in self.features)

    def teacher_json(self) -> dict:
        t = {"id_effect": self.id_effect, "pair_effect": self.pair_effect,
             "dense_effect": self.dense_effect, "latent_dim": self.latent_dim}
        if self.pairs is not None:
            t["pairs"] = [[f"C{f + 1}", f"C{g + 1}"] for f, g in self.pairs]
        if self.latent_rho is not None:
            t["latent_spectrum"] = {"rho": self.latent_rho}
        if self.triple is not None:
            t["triple"] = self.triple.to_json()
        return t

    def to_json(self) -> dict:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "name": self.name,
                "comment": self.comment, "base_ctr": self.base_ctr,
                "teacher": self.teacher_json(),
                "categorical": {f"C{j + 1}": law.to_json() for j, law in enumerate(self.features)},
                "dense": {f"I{j + 1}": d.to_json() for j, d in enumerate(self.dense)},
                "source": self.source}


def reject_non_finite(d: Any, where: str) -> None:
    """UserError naming the JSON path (`categorical.C4.s`, `dense.I3.quantiles[7]`) of
    the first NaN or infinity anywhere in a world's JSON object.

    Python's JSON reader takes NaN, Infinity and 1e400 (as inf) without a word, and the
    range checks of `world_from_json` let NaN through (NaN <= 0 is False): such a world
    trains to a "done" run on garbage ids or ends in a scipy traceback.  Every field is
    checked, also those added later and the fit report under `source`."""
    def walk(v: Any, path: str) -> None:
        if isinstance(v, float) and not math.isfinite(v):
            raise UserError(f"{where}: {path} must be a finite number, got {v}")
        if isinstance(v, dict):
            for k, x in v.items():
                walk(x, f"{path}.{k}" if path else str(k))
        elif isinstance(v, list):
            for i, x in enumerate(v):
                walk(x, f"{path}[{i}]")

    walk(d, "")


def world_from_json(d: Any, where: str) -> World:
    """A World from its JSON object; UserError naming `where` and the field when malformed."""
    def bad(msg: str) -> UserError:
        return UserError(f"{where}: {msg}")

    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise bad(f"not a {FORMAT} file (no \"format\": \"{FORMAT}\")")
    if d.get("format_version") != FORMAT_VERSION:
        raise bad(f"format_version {d.get('format_version')!r}, this version reads {FORMAT_VERSION}")
    reject_non_finite(d, where)
    try:
        t = d["teacher"]
        feats = []
        for j in range(NUM_SPARSE):
            c = d["categorical"][f"C{j + 1}"]
            law = IdLaw(int(c["cardinality"]), float(c["missing_rate"]), float(c["s"]),
                        float(c.get("q", 0.0)), tuple(float(x) for x in c.get("head", ())))
            if (law.cardinality < 1 or not 0 <= law.missing_rate <= 1 or law.s < 0 or law.q < 0
                    or len(law.head) > law.cardinality or any(x < 0 for x in law.head)
                    or sum(law.head) > 1 + 1e-6):
                raise bad(f"categorical C{j + 1}: need cardinality >= 1, missing_rate in [0, 1], "
                          "s >= 0 (0: uniform), q >= 0, at most cardinality head shares >= 0 summing to <= 1")
            feats.append(law)
        dense = []
        for j in range(NUM_DENSE):
            e = d["dense"][f"I{j + 1}"]
            probs, qs = tuple(float(x) for x in e["probs"]), tuple(float(x) for x in e["quantiles"])
            if (len(probs) < 2 or len(probs) != len(qs) or probs[0] != 0.0 or probs[-1] != 1.0
                    or np.any(np.diff(probs) <= 0) or np.any(np.diff(qs) < 0) or qs[0] < 0
                    or not 0 <= float(e["missing_rate"]) <= 1):
                raise bad(f"dense I{j + 1}: need increasing probs from 0 to 1, as many "
                          "non-decreasing quantiles >= 0, missing_rate in [0, 1]")
            dense.append(DenseMarginal(float(e["missing_rate"]), probs, qs))
        w = World(name=str(d.get("name", "")), base_ctr=float(d["base_ctr"]), features=tuple(feats),
                  dense=tuple(dense), id_effect=float(t["id_effect"]), pair_effect=float(t["pair_effect"]),
                  dense_effect=float(t["dense_effect"]), latent_dim=_int(t.get("latent_dim", 4), bad,
                                                                         "teacher.latent_dim"),
                  **_planted_terms(t, bad), source=d.get("source", {}), comment=str(d.get("comment", "")))
    except KeyError as err:
        raise bad(f"missing field {err.args[0]!r}") from None
    except (TypeError, ValueError) as err:
        if isinstance(err, UserError):
            raise
        raise bad(f"bad value ({err})") from None
    if not 0 < w.base_ctr < 1:
        raise bad(f"base_ctr must be in (0, 1), got {w.base_ctr}")
    if w.triple is not None and w.triple.rank > w.latent_dim:
        raise bad(f"teacher.triple.rank ({w.triple.rank}) must be <= teacher.latent_dim ({w.latent_dim}): "
                  f"the term is built on the pair latents")
    if min(w.id_effect, w.pair_effect, w.dense_effect) < 0 or w.latent_dim < 1:
        raise bad("teacher effects must be >= 0 and latent_dim >= 1")
    return w


_TEACHER_KEYS = {"id_effect", "pair_effect", "dense_effect", "latent_dim", "pairs", "latent_spectrum", "triple"}


def _int(v: Any, bad, key: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != int(v):
        raise bad(f"{key} must be a whole number, got {v!r}")
    return int(v)


def _feature(v: Any, bad, key: str) -> int:
    """A categorical feature's name, "C1".."C26", as its index 0..25."""
    names = [f"C{j + 1}" for j in range(NUM_SPARSE)]
    if v not in names:
        raise bad(f"{key} must name a categorical feature (C1..C{NUM_SPARSE}), got {v!r}")
    return names.index(v)


def _planted_terms(t: dict, bad) -> dict:
    """The optional teacher terms of planted worlds, each checked with its key named."""
    unknown = sorted(set(t) - _TEACHER_KEYS)
    if unknown:
        raise bad(f"teacher: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(_TEACHER_KEYS))})")
    out: dict = {}
    if "pairs" in t:
        if not isinstance(t["pairs"], list) or not t["pairs"]:
            raise bad("teacher.pairs must be a non-empty list of [feature, feature] pairs")
        seen = set()
        for i, pair in enumerate(t["pairs"]):
            if not isinstance(pair, list) or len(pair) != 2:
                raise bad(f"teacher.pairs[{i}] must be a pair of feature names, got {pair!r}")
            f, g = (_feature(x, bad, f"teacher.pairs[{i}]") for x in pair)
            key = (min(f, g), max(f, g))
            if f == g or key in seen:
                raise bad(f"teacher.pairs[{i}]: {pair!r} pairs a feature with itself or repeats a pair")
            seen.add(key)
        out["pairs"] = tuple(sorted(seen))
    if "latent_spectrum" in t:
        spec = t["latent_spectrum"]
        if not isinstance(spec, dict) or set(spec) != {"rho"}:
            raise bad('teacher.latent_spectrum must be {"rho": R}')
        rho = spec["rho"]
        if isinstance(rho, bool) or not isinstance(rho, (int, float)) or not rho > 0:
            raise bad(f"teacher.latent_spectrum.rho must be > 0, got {rho!r}")
        out["latent_rho"] = float(rho)
    if "triple" in t:
        tr = t["triple"]
        if not isinstance(tr, dict) or set(tr) != {"features", "rank", "effect"}:
            raise bad('teacher.triple must be {"features": [F, G, H], "rank": R, "effect": S}')
        if not isinstance(tr["features"], list) or len(tr["features"]) != 3:
            raise bad(f"teacher.triple.features must name three features, got {tr['features']!r}")
        feats = tuple(_feature(x, bad, "teacher.triple.features") for x in tr["features"])
        if len(set(feats)) != 3:
            raise bad(f"teacher.triple.features must be three different features, got {tr['features']!r}")
        rank = _int(tr["rank"], bad, "teacher.triple.rank")
        effect = tr["effect"]
        if rank < 1:
            raise bad(f"teacher.triple.rank must be >= 1, got {rank}")
        if isinstance(effect, bool) or not isinstance(effect, (int, float)) or not effect >= 0:
            raise bad(f"teacher.triple.effect must be >= 0, got {effect!r}")
        out["triple"] = Triple(feats, rank, float(effect))
    return out


def preset_names() -> list[str]:
    return sorted(p.stem for p in WORLDS_DIR.glob("*.json"))


def resolve(name_or_path: str) -> Path:
    """A shipped world's name (`criteo-like`) or a path to a world JSON file."""
    if name_or_path in preset_names():
        return WORLDS_DIR / f"{name_or_path}.json"
    p = Path(name_or_path)
    if p.is_file():
        return p
    raise UserError(f"synthetic.world {name_or_path!r}: neither a shipped world "
                    f"({', '.join(preset_names())}) nor a file")


_CACHE: dict[tuple[str, float], World] = {}


def load_world(name_or_path: str) -> World:
    path = resolve(name_or_path)
    key = (str(path.resolve()), os.stat(path).st_mtime)
    if key not in _CACHE:
        try:
            d = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise UserError(f"{path}: not a readable world JSON file ({err})") from None
        _CACHE[key] = world_from_json(d, str(path))
    return _CACHE[key]


def distinct_curve(ids: np.ndarray, rows: Sequence[int]) -> np.ndarray:
    """Distinct present ids (id != 0) among the first n entries of `ids` [N], for each n."""
    ids = np.asarray(ids)
    present = np.flatnonzero(ids != 0)
    _, first = np.unique(ids[present], return_index=True)
    first_row = np.sort(present[first])              # row where each id first appears
    return np.searchsorted(first_row, np.asarray(rows), side="left").astype(np.int64)


def curve_rows(total: int, points: int = 24, start: int = 10) -> np.ndarray:
    """Log-spaced row counts from `start` to `total` (the grid the fit matches)."""
    return np.unique(np.round(np.geomspace(min(start, total), total, points)).astype(np.int64))


def round_sig(x: float, digits: int = 6) -> float:
    return float(f"{x:.{digits}g}") if math.isfinite(x) else x
