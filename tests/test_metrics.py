import numpy as np
import pytest

from dlrm_jax import metrics as M


def test_auc_matches_pairwise_definition_with_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.normal(size=300) + y, 1)  # many ties
    pos, neg = s[y == 1], s[y == 0]
    ref = ((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (len(pos) * len(neg))
    assert M.auc(s, y) == pytest.approx(ref, abs=1e-12)


def test_ne_logloss_and_calibration():
    y = np.array([1, 0, 0, 0], float)
    logits = np.log(np.array([0.5, 0.2, 0.2, 0.2]) / np.array([0.5, 0.8, 0.8, 0.8]))
    m = M.evaluate_logits(logits, y)
    ll = -(np.log(0.5) + 3 * np.log(0.8)) / 4
    h = -(0.25 * np.log(0.25) + 0.75 * np.log(0.75))
    assert m["eval_logloss"] == pytest.approx(ll)
    assert m["eval_ne"] == pytest.approx(ll / h)
    assert m["eval_calibration"] == pytest.approx(1.1)
    assert m["eval_auc"] == pytest.approx(1.0)


def test_log_loss_is_stable_for_extreme_logits():
    assert M.log_loss_from_logits(np.array([1000.0, -1000.0]), np.array([1.0, 0.0])) == pytest.approx(0.0)
    assert np.isfinite(M.log_loss_from_logits(np.array([1000.0]), np.array([0.0])))


def test_ne_undefined_for_single_class():
    with pytest.raises(ValueError, match="all 0"):
        M.background_entropy(np.zeros(10))
