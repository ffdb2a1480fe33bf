#!/usr/bin/env python
"""Hashed logistic regression on prepared Criteo shards: the baseline a DLRM must beat.

    python scripts/criteo_lr_baseline.py DATA_DIR [--epochs 2] [--json]

One weight per (feature, id) row of the prepared tables (the hashing happened
in criteo-prepare), one per dense feature (already log1p), and a bias;
minibatch Adagrad on the log loss with L2 on the touched weights.  numpy only
(plus the project's metrics: NE, AUC).  Trains on the whole `--train-split`
(in stored order, reshuffled every epoch with `--seed`), evaluates on the
whole `--eval-split`.
"""
from __future__ import annotations

import argparse
import json

import numpy as np

from dlrm_jax.data.criteo.source import CriteoSource
from dlrm_jax.metrics import evaluate_logits


def fit(dense, ids, labels, table_sizes, *, epochs=2, lr=0.02, l2=1e-4, batch=64, seed=0):
    """Weights (w_sparse [sum rows], w_dense [13], bias) by minibatch Adagrad."""
    offsets = np.concatenate([[0], np.cumsum(table_sizes)[:-1]]).astype(np.int64)
    flat = ids.astype(np.int64) + offsets                       # [n, 26] rows of one table
    w, acc = np.zeros(int(np.sum(table_sizes))), np.full(int(np.sum(table_sizes)), 1e-8)
    v, vacc = np.zeros(dense.shape[1]), np.full(dense.shape[1], 1e-8)
    b, bacc = 0.0, 1e-8
    rng = np.random.default_rng(seed)
    x = dense.astype(np.float64)
    for _ in range(epochs):
        for s in np.array_split(rng.permutation(len(labels)), max(1, len(labels) // batch)):
            z = b + w[flat[s]].sum(1) + x[s] @ v
            g = 1.0 / (1.0 + np.exp(-z)) - labels[s]              # d logloss / d z
            rows, inv = np.unique(flat[s], return_inverse=True)
            gw = np.bincount(inv.ravel(), np.repeat(g, flat.shape[1]), rows.size) / len(s)
            gw += l2 * w[rows]
            acc[rows] += gw * gw
            w[rows] -= lr * gw / np.sqrt(acc[rows])
            gv = x[s].T @ g / len(s) + l2 * v
            vacc += gv * gv
            v -= lr * gv / np.sqrt(vacc)
            gb = float(g.mean())
            bacc += gb * gb
            b -= lr * gb / np.sqrt(bacc)
    return lambda d, i: b + w[i.astype(np.int64) + offsets].sum(1) + d.astype(np.float64) @ v


def run(data_dir, train_split="train", eval_split="val", **kw) -> dict:
    src = CriteoSource(data_dir, train_split=train_split, eval_split=eval_split, prefetch=0)
    train = next(src.train_batches(src.num_train, 0, src.num_train))
    ev = src.eval_batch(src._eval.rows)
    predict = fit(train.dense, train.sparse, train.labels, src.table_sizes, **kw)
    out = evaluate_logits(predict(ev.dense, ev.sparse), ev.labels)
    out.update(train_examples=src.num_train, eval_examples=int(ev.labels.size),
               train_label_rate=float(train.labels.mean()), eval_label_rate=float(ev.labels.mean()))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data_dir")
    ap.add_argument("--train-split", default="train")
    ap.add_argument("--eval-split", default="val")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--lr", type=float, default=0.02)
    ap.add_argument("--l2", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    r = run(a.data_dir, a.train_split, a.eval_split, epochs=a.epochs, lr=a.lr, l2=a.l2, seed=a.seed)
    if a.json:
        print(json.dumps(r, indent=1))
    else:
        print(f"hashed logistic regression: train {r['train_examples']:,} rows, eval "
              f"{r['eval_examples']:,}: AUC {r['eval_auc']:.4f}  NE {r['eval_ne']:.4f}  "
              f"logloss {r['eval_logloss']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
