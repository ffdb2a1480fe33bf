"""The planted worlds: synthetic worlds whose scaling answers are known in advance.

Each is an ordinary world file (dlrm_jax/data/worlds/planted-*.json, read by
`synthetic.world=NAME`) built here from a few numbers, so what makes it a
planted world is visible in one place:

* `planted-zipf-1.6`, `planted-zipf-1.4`: 26 features with Zipf(s) ids over K
  values each and per-id effects only.  The count-based learner's excess NE
  falls with a data exponent near 1 - 1/s (exactly: the law fitted to the
  finite-K sum, analysis/planted.py); the two worlds differ in s alone.
* `planted-triple` and its control `planted-triple-control`: a rank-2
  element-wise trilinear term on three uniform-id features (world.Triple) whose
  latents their pair terms with a fourth feature carry; pairwise dot products
  carry none of it, DCN's cross layers represent it.  The control is the same
  world with the term's strength 0.
* `planted-valley`: four uniform-id features whose six pair terms share latents
  with a power-law spectrum (variance of component m ~ m^-rho); a rank-D model
  has a floor ~ D^-(rho-1), so an IsoFLOP sweep over the embedding dimension
  has a valley whose position moves with the budget.

    python -m dlrm_jax.data.planted_worlds      # rewrite the shipped files
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from dlrm_jax.data.base import NUM_DENSE, NUM_SPARSE
from dlrm_jax.data.world import FORMAT, FORMAT_VERSION, WORLDS_DIR

BASE_CTR = 0.25
# Dense features carry no effect in the planted worlds; the model still reads them
# (uniform log-counts in [0, 2]), so the dense path is exercised as in any world.
_DENSE = {"missing_rate": 0.0, "probs": [0.0, 1.0], "quantiles": [0.0, 2.0]}


def _world(name: str, comment: str, categorical: list[dict], teacher: dict) -> dict:
    assert len(categorical) == NUM_SPARSE
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "name": name, "comment": comment,
            "base_ctr": BASE_CTR, "teacher": teacher,
            "categorical": {f"C{j + 1}": c for j, c in enumerate(categorical)},
            "dense": {f"I{j + 1}": dict(_DENSE) for j in range(NUM_DENSE)},
            "source": {"planted": name}}


def _ids(cardinality: int, s: float) -> dict:
    """Ids 1..cardinality with P(rank k) ~ k^-s (s = 0: uniform), never missing."""
    return {"cardinality": cardinality, "missing_rate": 0.0, "s": s, "q": 0.0, "head": []}


def zipf(s: float, cardinality: int) -> dict:
    return _world(f"planted-zipf-{s:g}",
                  f"Planted data exponent: 26 features of Zipf({s:g}) ids over {cardinality} values, per-id "
                  f"effects only (id_effect 1.5); the predicted exponent is computed from this file "
                  f"(analysis/planted.py).",
                  [_ids(cardinality, s)] * NUM_SPARSE,
                  {"id_effect": 1.5, "pair_effect": 0.0, "dense_effect": 0.0, "latent_dim": 4})


TRIPLE_FEATURES = ("C1", "C2", "C3")
TRIPLE_HUB = "C4"
TRIPLE_CARDINALITY = 128
TRIPLE_EFFECT = 0.8
TRIPLE_RANK = 2


def triple(effect: float = TRIPLE_EFFECT) -> dict:
    name = "planted-triple" if effect > 0 else "planted-triple-control"
    cats = [_ids(TRIPLE_CARDINALITY, 0.0)] * 4 + [_ids(2000, 1.1)] * (NUM_SPARSE - 4)
    # The term's three features each pair with a fourth, the hub, and not with each other.
    # The hub pairs pull the three features' embeddings towards the very latents the term is
    # built on (from small random embeddings a pure trilinear term sits at a saddle), while
    # the term's three pairwise dot products get no signal at all (E[T | any two ids] = 0
    # and no pair term links them): a `dot` model, whose top MLP could otherwise multiply
    # a pair's dot product by a third feature's embedding, sees nothing of the term.
    # Rank 2: rank-3 and rank-4 latents are learned by `dcn` far more slowly than by `dot`
    # (docs/planted_learnability.md), which would measure learning speed, not representation.
    pairs = [[f, TRIPLE_HUB] for f in TRIPLE_FEATURES]
    return _world(name,
                  f"Planted architecture gap: a rank-{TRIPLE_RANK} element-wise trilinear term of strength "
                  f"{effect:g} on {', '.join(TRIPLE_FEATURES)} (uniform ids over {TRIPLE_CARDINALITY} values), "
                  f"whose latents the pair terms of each of them with {TRIPLE_HUB} also carry; per-id effects "
                  f"on every feature, the other 22 Zipf(1.1)."
                  + (" The control: the same world without the term." if effect == 0 else ""),
                  cats,
                  {"id_effect": 0.75, "pair_effect": 1.2, "dense_effect": 0.0, "latent_dim": TRIPLE_RANK,
                   "pairs": pairs,
                   "triple": {"features": list(TRIPLE_FEATURES), "rank": TRIPLE_RANK, "effect": effect}})


VALLEY_FEATURES = ("C1", "C2", "C3", "C4")
VALLEY_CARDINALITY = 1024
VALLEY_LATENT_DIM = 512
VALLEY_RHO = 1.5


def valley() -> dict:
    feats = list(VALLEY_FEATURES)
    pairs = [[f, g] for i, f in enumerate(feats) for g in feats[i + 1:]]
    cats = [_ids(VALLEY_CARDINALITY, 0.0)] * len(feats) + [_ids(1, 0.0)] * (NUM_SPARSE - len(feats))
    return _world("planted-valley",
                  f"Planted compute-optimal valley on the embedding dimension: the six pair terms of "
                  f"{', '.join(feats)} (uniform ids over {VALLEY_CARDINALITY} values) share {VALLEY_LATENT_DIM}-"
                  f"dimensional latents whose component variances fall as m^-{VALLEY_RHO:g}; the other "
                  f"features have one value and no effect.",
                  cats,
                  {"id_effect": 0.0, "pair_effect": 2.0, "dense_effect": 0.0, "latent_dim": VALLEY_LATENT_DIM,
                   "pairs": pairs, "latent_spectrum": {"rho": VALLEY_RHO}})


def planted_worlds() -> dict[str, dict]:
    worlds = [zipf(1.6, 1 << 14), zipf(1.4, 1 << 16), triple(), triple(0.0), valley()]
    return {w["name"]: w for w in worlds}


def write(directory: Path = WORLDS_DIR) -> list[Path]:
    from dlrm_jax.run.files import write_atomic
    out = []
    for name, w in planted_worlds().items():
        path = Path(directory) / f"{name}.json"
        write_atomic(path, json.dumps(w, indent=2) + "\n")
        out.append(path)
    return out


if __name__ == "__main__":
    for p in write():
        print(p)
    sys.exit(0)
