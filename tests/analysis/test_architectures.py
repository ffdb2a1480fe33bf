"""Architecture comparison on the compute axis: frontiers, winners and the crossover budget."""
import numpy as np
import pandas as pd
import pytest
from scipy.optimize import brentq

from analysis import architectures as A
from analysis.report import write_report

# Two known frontiers that cross: "a" is better at small budgets, "b" at large ones.
LAWS = {"a": (1.0, 0.05, 0.50), "b": (40.0, 0.20, 0.45)}


def _law(c, alpha, beta, gamma):
    return alpha * np.asarray(c, float) ** (-beta) + gamma


def _true_crossing():
    return float(np.exp(brentq(lambda t: _law(np.exp(t), *LAWS["a"]) - _law(np.exp(t), *LAWS["b"]),
                               np.log(1e6), np.log(1e14))))


def _sizes(c):
    return {"params_embedding": 1e6, "params_dense": 1e4, "train_examples": c / 3e5}


def _runs(noise=0.0, seed=0):
    """Per architecture a grid: runs on the law (the frontier) and dominated runs above it."""
    rng = np.random.default_rng(seed)
    rows = []
    for arch, law in LAWS.items():
        for i, c in enumerate(np.geomspace(1e8, 1e12, 7)):
            ne = _law(c, *law) * (1 + noise * rng.normal())
            rows.append({"run": f"{arch}-{i}", "sweep": "architecture", "model.interaction": arch,
                         "train_flops": c, "eval_ne": ne, "bayes_ne": 0.4, **_sizes(c)})
            rows.append({"run": f"{arch}-{i}-big", "sweep": "architecture", "model.interaction": arch,
                         "train_flops": c * 1.3, "eval_ne": ne + 0.05, "bayes_ne": 0.4,
                         **_sizes(c * 1.3)})   # off the envelope
    return pd.DataFrame(rows)


def test_exact_frontiers_give_the_laws_the_winners_and_the_crossing():
    cross = _true_crossing()
    assert 1e9 < cross < 1e11   # inside the measured range: the test data are meaningful
    cmp = A.compare_architectures(_runs(), bootstrap=0)
    for arch, (alpha, beta, gamma) in LAWS.items():
        fr = cmp.frontiers[arch]
        assert len(fr.points) == 7 and fr.n_runs == 14            # the envelope drops the dominated runs
        assert fr.fit.beta == pytest.approx(beta, rel=1e-3)
        assert fr.fit.gamma == pytest.approx(gamma, rel=1e-3)
    assert cmp.winners[0] == "a" and cmp.winners[-1] == "b"
    assert cmp.winner_at(1e8) == "a" and cmp.winner_at(1e13) == "b"
    (c,) = cmp.crossovers
    assert (c.before, c.after) == ("a", "b")
    assert c.budget == pytest.approx(cross, rel=1e-4)
    assert not c.extrapolated


def test_noisy_frontiers_give_an_interval_around_the_crossing():
    cmp = A.compare_architectures(_runs(noise=0.002, seed=1), bootstrap=60, seed=0)
    (c,) = cmp.crossovers
    assert c.lo < _true_crossing() < c.hi
    assert c.lo < c.budget < c.hi
    assert 0.5 < c.share_crossing <= 1
    assert all(s is not None and 0 <= s <= 1 for s in cmp.win_share)
    assert cmp.win_share[0] > 0.9 and cmp.win_share[-1] > 0.9   # far from the crossing the winner is clear


def test_one_architecture_is_not_a_comparison():
    df = _runs()
    with pytest.raises(ValueError, match="need 2"):
        A.compare_architectures(df[df["model.interaction"] == "a"], bootstrap=0)
    assert not A.has_architectures(df[df["model.interaction"] == "a"])
    with pytest.raises(ValueError, match="model.interaction"):
        A.compare_architectures(df.drop(columns="model.interaction"), bootstrap=0)


def test_report_has_the_architecture_section_and_plot(tmp_path):
    fits = write_report(_runs(noise=0.001), tmp_path, bootstrap=20, holdout=0)
    entry = fits["architectures"]
    assert set(entry["frontiers"]) == {"a", "b"}
    assert entry["budgets"][-1]["winner"] == "b"
    assert entry["crossovers"][0]["budget"] == pytest.approx(_true_crossing(), rel=0.2)
    md = (tmp_path / "report.md").read_text()
    assert "## Architectures on the compute axis" in md and "winner changes from a to b" in md
    assert (tmp_path / fits["plots"]["architectures"]).stat().st_size > 1000
