"""Learnability probe of the planted-triple worlds: does SGD learn their pair and trilinear terms?

Builds variants of `planted-triple` / `planted-triple-control` (dlrm_jax/data/planted_worlds.py)
from a few knobs, prints the oracle NEs of the variant (Bayes; a predictor that knows only the
per-id effects; ids + pairs; ids + triple) and trains the small preset on it.

    python scripts/planted_learnability.py --pairs uniform --pair-effect 1.5 \
        --model dot --model dcn --examples 20 --set embedding.init_scale=0.3

Each result is appended as one JSON line to --log (default planted_learnability.jsonl in the
output directory).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from scipy import optimize, special


def variant(triple_effect: float, pairs: str, pair_effect: float, id_effect: float,
            rank: int, latent_dim: int, others: str = "zipf", cardinality: int = 256) -> dict:
    from dlrm_jax.data import planted_worlds as pw
    w = pw.triple(triple_effect)
    t = w["teacher"]
    hubbed = pairs in ("hub", "partners")
    for j in range(1, 7 if pairs == "partners" else 5 if hubbed else 4):
        w["categorical"][f"C{j}"] = pw._ids(cardinality, 0.0)
    if others == "none":        # the 23 other features: one value each, so no effect and no noise
        for j in range(4, 27):
            w["categorical"][f"C{j}"] = pw._ids(1, 0.0)
    f = list(pw.TRIPLE_FEATURES)
    if pairs == "uniform":      # only the three pairs of the term's (uniform-id) features
        t["pairs"] = [[f[0], f[1]], [f[0], f[2]], [f[1], f[2]]]
    elif pairs == "hub":        # each of the term's features pairs with C4 only (the shipped world)
        t["pairs"] = [[g, "C4"] for g in f]
    elif pairs == "partners":   # each pairs with a partner of its own: C1-C4, C2-C5, C3-C6
        t["pairs"] = [[g, f"C{j + 4}"] for j, g in enumerate(f)]
    t["pair_effect"], t["id_effect"], t["latent_dim"] = pair_effect, id_effect, latent_dim
    t["triple"]["rank"] = rank
    w["name"] = f"{w['name']}-probe"
    return w


def oracles(world_path: Path, n: int = 1 << 17) -> dict:
    from dlrm_jax import metrics
    from dlrm_jax.data.synthetic import EVAL_STREAM, SyntheticSource
    from dlrm_jax.data.world import load_world
    src = SyntheticSource(seed=0, world=load_world(str(world_path)))
    b, p = src.examples(EVAL_STREAM, np.arange(n))
    _, ids, _ = src._raw(EVAL_STREAM, np.arange(n))
    eff = sum(src._effects(f, ids[:, f], latents=False)[0] for f in range(26)).astype(np.float64)
    lats = {f: src._effects(f, ids[:, f])[1] for f in range(26)}
    pair = np.zeros(n)
    for f, g in src._pairs:
        pair += src._pair_scale * np.einsum("bk,bk->b", lats[f], lats[g])
    trip = src.triple_term(ids) if src._triple is not None and src._triple.effect > 0 else np.zeros(n)

    def ne(part):   # the best intercept for a partial logit, then its NE on the labels
        c = optimize.brentq(lambda c: special.expit(part + c).mean() - b.labels.mean(), -30, 30)
        return round(float(metrics.evaluate_logits(part + c, b.labels)["eval_ne"]), 4)
    return {"bayes": round(float(metrics.bayes_ne(p, b.labels)), 4), "ids": ne(eff),
            "ids+pairs": ne(eff + pair), "ids+triple": ne(eff + trip),
            "std_ids": round(float(eff.std()), 3), "std_pairs": round(float(pair.std()), 3),
            "std_triple": round(float(trip.std()), 3)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", choices=("shipped", "uniform", "hub", "partners"), default="shipped",
                    help="shipped: the world's own pairs; uniform: the three pairs of C1-C3; hub: C1-C3 "
                         "each with C4; partners: C1-C4, C2-C5, C3-C6")
    ap.add_argument("--pair-effect", type=float, default=0.75)
    ap.add_argument("--id-effect", type=float, default=0.75)
    ap.add_argument("--triple-effect", type=float, default=0.6)
    ap.add_argument("--cardinality", type=int, default=256, help="ids of C1-C3")
    ap.add_argument("--others", choices=("zipf", "none"), default="zipf")
    ap.add_argument("--rank", type=int, default=4)
    ap.add_argument("--latent-dim", type=int, default=4)
    ap.add_argument("--control", action="store_true", help="also the same world without the term")
    ap.add_argument("--model", action="append", default=[], help="dot, dcn, ... (repeatable)")
    ap.add_argument("--examples", type=int, default=20, help="log2 of the training examples")
    ap.add_argument("--seed", type=int, default=0, help="the model's seed (the world's stays 0)")
    ap.add_argument("--set", action="append", default=[], help="extra KEY=VALUE for train")
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "planted_learnability")
    ap.add_argument("--log", type=Path, default=None)
    a = ap.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    log = a.log or a.out / "planted_learnability.jsonl"
    effects = [a.triple_effect] + ([0.0] if a.control and a.triple_effect > 0 else [])
    for eff in effects:
        w = variant(eff, a.pairs, a.pair_effect, a.id_effect, a.rank, a.latent_dim, a.others, a.cardinality)
        knobs = {"triple_effect": eff, "pairs": a.pairs, "pair_effect": a.pair_effect,
                 "id_effect": a.id_effect, "rank": a.rank, "latent_dim": a.latent_dim, "others": a.others,
                 "cardinality": a.cardinality}
        tag = "_".join(f"{k}={v}" for k, v in knobs.items())
        path = a.out / f"world_{abs(hash(tag)) % 10**8}.json"
        path.write_text(json.dumps(w, indent=2) + "\n")
        orc = oracles(path)
        print(json.dumps({"world": knobs, "oracle": orc}), flush=True)
        for m in a.model:
            run_dir = a.out / f"run_{abs(hash((tag, m, a.examples, a.seed, tuple(a.set)))) % 10**8}"
            cmd = [sys.executable, "-m", "dlrm_jax", "train", "--preset", "small",
                   "--set", f"synthetic.world={path}", "--set", f"model.interaction={m}",
                   "--set", "model.dcn_rank=32", "--set", f"train.examples=2**{a.examples}",
                   "--set", "eval.examples=2**17", "--set", f"seed={a.seed}", "--out", str(run_dir),
                   "--no-progress"]
            for s in a.set:
                cmd += ["--set", s]
            r = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if r.returncode:
                print(r.stdout[-2000:], r.stderr[-2000:], file=sys.stderr)
                return r.returncode
            ne = json.loads((run_dir / "summary.json").read_text())["eval_ne"]
            rec = {"world": knobs, "model": m, "examples": f"2^{a.examples}", "seed": a.seed, "set": a.set,
                   "eval_ne": round(ne, 4), "oracle": orc}
            print(json.dumps(rec), flush=True)
            with open(log, "a") as fh:
                fh.write(json.dumps(rec) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
