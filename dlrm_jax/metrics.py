"""Evaluation metrics of click predictions: NE, log loss, AUC, calibration.

NE (He et al. 2014, "Practical lessons from predicting clicks on ads at
Facebook"): mean log loss divided by the entropy of the evaluation set's
background CTR p, H(p) = -(p log p + (1-p) log(1-p)).  NE < 1 beats always
predicting p.  All computed in float64 on the host over the whole eval set
(AUC exactly, ties averaged), never per batch.
"""
from __future__ import annotations

import numpy as np
from scipy import special, stats


def background_entropy(labels: np.ndarray) -> float:
    p = float(np.mean(labels))
    if p <= 0.0 or p >= 1.0:
        raise ValueError(f"NE is undefined: the evaluation labels are all {int(p)}")
    return float(-(p * np.log(p) + (1 - p) * np.log1p(-p)))


def log_loss_from_logits(logits: np.ndarray, labels: np.ndarray) -> float:
    z = np.asarray(logits, np.float64)
    y = np.asarray(labels, np.float64)
    # -[y log s(z) + (1-y) log(1-s(z))] = softplus(z) - y z, stable for any z.
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def log_loss_from_probs(probs: np.ndarray, labels: np.ndarray) -> float:
    p = np.clip(np.asarray(probs, np.float64), 1e-15, 1 - 1e-15)
    y = np.asarray(labels, np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Exact ROC AUC (Mann-Whitney U with average ranks for ties)."""
    y = np.asarray(labels) > 0.5
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = stats.rankdata(np.asarray(scores, np.float64))
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def evaluate_logits(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    logits = np.asarray(logits, np.float64)
    labels = np.asarray(labels, np.float64)
    ll = log_loss_from_logits(logits, labels)
    probs = special.expit(logits)
    return {
        "eval_ne": ll / background_entropy(labels),
        "eval_logloss": ll,
        "eval_auc": auc(logits, labels),
        "eval_calibration": float(probs.sum() / max(labels.sum(), 1e-12)),
    }


def bayes_ne(true_probs: np.ndarray, labels: np.ndarray) -> float:
    """NE of predicting the true click probability: the best any model can do."""
    return log_loss_from_probs(true_probs, labels) / background_entropy(labels)
