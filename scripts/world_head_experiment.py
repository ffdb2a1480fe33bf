#!/usr/bin/env python
"""The real-head experiment (scripts/criteo_head_experiment.sh) on a synthetic world.

    python scripts/world_head_experiment.py [--world criteo-like] [--seeds 0,1,2] [--out DIR]

For each world seed: writes the world's first `--train-rows` training examples
and `--eval-rows` held-out examples as a Criteo TSV (ids as hex values, dense
counts as integers), then runs exactly the real head's pipeline on it:
criteo-prepare (--split head:TRAIN, categoricals hashed into 65,536 rows), the
hashed logistic-regression baseline (scripts/criteo_lr_baseline.py, its
defaults), and the criteo-kaggle DLRM (one pass, batch 128).  Prints both NE
values per seed, their mean, and the world's Bayes NE of the eval rows, so they
sit beside the real head's (DLRM 0.889, LR 0.885 on 8,000 / 1,999 rows).
`--teacher ID,PAIR,DENSE` overrides the world's teacher strengths (a copy of the
world is written to OUT), which is how the criteo-like strengths were chosen.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from dlrm_jax.data.calibrate import world_rows
from dlrm_jax.data.criteo import format as cf
from dlrm_jax.data.synthetic import EVAL_STREAM, TRAIN_STREAM, SyntheticSource
from dlrm_jax.data.world import load_world, world_from_json
from dlrm_jax.metrics import bayes_ne
from dlrm_jax.run.rundir import write_json_atomic

ROOT = Path(__file__).resolve().parents[1]


def run(world_arg: str, seed: int, out: Path, train_rows: int, eval_rows: int) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    src = SyntheticSource(seed=seed, world=load_world(world_arg))
    tr, _ = world_rows(src, TRAIN_STREAM, train_rows)
    ev, p = world_rows(src, EVAL_STREAM, eval_rows)
    tsv = out / "world.tsv"
    tsv.write_bytes(cf.format_rows(cf.Rows(*(np.concatenate([a, b]) for a, b in zip(tr, ev)))))
    py, env = sys.executable, dict(os.environ, PYTHONPATH=str(ROOT))

    def sh(*args, capture=False):
        r = subprocess.run([py, *args], cwd=ROOT, env=env, check=True, text=True,
                           stdout=subprocess.PIPE if capture else subprocess.DEVNULL)
        return r.stdout

    data = out / "data"
    sh("-m", "dlrm_jax", "data", "criteo-prepare", "--src", str(tsv), "--split", f"head:{train_rows}",
       "--hash-rows", "65536", "--out", str(data), "--quiet")
    lr = json.loads(sh("scripts/criteo_lr_baseline.py", str(data), "--json", capture=True))
    sh("-m", "dlrm_jax", "train", "--preset", "criteo-kaggle", "--no-progress", "--out", str(out / "dlrm"),
       "--set", f"data.source=criteo:{data}", "--set", "model.table_rows=0",
       "--set", f"train.examples={train_rows}", "--set", "train.epochs=1", "--set", "train.batch_size=128",
       "--set", f"eval.examples={eval_rows}", "--set", "seed=0")
    dl = json.loads((out / "dlrm" / "summary.json").read_text())
    labels = ev.labels.astype(np.float64)
    bayes = float(bayes_ne(p, labels))
    return {"seed": seed, "lr_ne": lr["eval_ne"], "dlrm_ne": dl["eval_ne"], "bayes_ne": bayes,
            "train_label_rate": float(tr.labels.mean()), "eval_label_rate": float(labels.mean())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", default="criteo-like")
    ap.add_argument("--teacher", help="ID,PAIR,DENSE: override the world's teacher strengths")
    ap.add_argument("--seeds", default="0,1,2", help="world seeds (synthetic.seed), comma-separated")
    ap.add_argument("--train-rows", type=int, default=8000)
    ap.add_argument("--eval-rows", type=int, default=8000)
    ap.add_argument("--out", default="runs/world_head")
    a = ap.parse_args(argv)
    out = Path(a.out)
    world = a.world
    if a.teacher:
        w = load_world(a.world).to_json()
        w["teacher"].update(zip(("id_effect", "pair_effect", "dense_effect"),
                                (float(x) for x in a.teacher.split(","))))
        world_from_json(w, "--teacher")
        write_json_atomic(out / "world.json", w)
        world = str(out / "world.json")
    rows = [run(world, int(s), out / f"seed{s}", a.train_rows, a.eval_rows) for s in a.seeds.split(",")]
    for r in rows:
        print(f"seed {r['seed']}: LR NE {r['lr_ne']:.4f}  DLRM NE {r['dlrm_ne']:.4f}  "
              f"Bayes NE {r['bayes_ne']:.4f}  label rate {r['train_label_rate']:.4f}")
    mean = {k: float(np.mean([r[k] for r in rows])) for k in ("lr_ne", "dlrm_ne", "bayes_ne")}
    sd = {k: float(np.std([r[k] for r in rows], ddof=1)) if len(rows) > 1 else 0.0 for k in mean}
    print(f"mean over {len(rows)} seeds: LR NE {mean['lr_ne']:.4f} (sd {sd['lr_ne']:.4f})  "
          f"DLRM NE {mean['dlrm_ne']:.4f} (sd {sd['dlrm_ne']:.4f})  Bayes NE {mean['bayes_ne']:.4f}")
    write_json_atomic(out / "results.json", {"world": world, "runs": rows, "mean": mean, "sd": sd})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
