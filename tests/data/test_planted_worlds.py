"""Planted worlds (dlrm_jax/data/planted_worlds.py): their teacher terms in the world file,
validated with the key named, computed as documented, and the shipped files as built."""
import json
import math

import numpy as np
import pytest

from dlrm_jax import metrics
from dlrm_jax.config import load_config
from dlrm_jax.data import planted_worlds
from dlrm_jax.data.synthetic import EVAL_STREAM, SyntheticSource
from dlrm_jax.data.world import WORLDS_DIR, load_world, world_from_json
from dlrm_jax.errors import UserError


def test_shipped_planted_worlds_are_the_built_ones():
    for name, built in planted_worlds.planted_worlds().items():
        assert json.loads((WORLDS_DIR / f"{name}.json").read_text()) == built, name
        load_config("tiny", [f"synthetic.world={name}"])  # each one validates as a config


def _source(d: dict, seed: int = 0) -> SyntheticSource:
    return SyntheticSource(seed=seed, world=world_from_json(d, "w.json"))


def test_the_trilinear_term_is_the_documented_product_and_only_it_differs_from_the_control():
    with_term, control = _source(planted_worlds.triple()), _source(planted_worlds.triple(0.0))
    idx = np.arange(4096)
    (b1, p1), (b0, p0) = with_term.examples(EVAL_STREAM, idx), control.examples(EVAL_STREAM, idx)
    np.testing.assert_array_equal(b1.sparse, b0.sparse)  # the same ids: only the logit differs
    ids = with_term._raw(EVAL_STREAM, idx)[1]
    u = [with_term._effects(f, ids[:, f])[1][:, :2].astype(np.float64) for f in (0, 1, 2)]
    want = 0.8 / np.sqrt(2) * np.sum(u[0] * u[1] * u[2], axis=1)  # effect / sqrt(rank) * sum_k
    np.testing.assert_allclose(with_term.triple_term(ids), want, rtol=1e-6)
    logit1, logit0 = (np.log(p / (1 - p)) for p in (p1, p0))
    shift = with_term._b0 - control._b0  # the intercepts differ (each solved for the click rate)
    np.testing.assert_allclose(logit1 - logit0 - shift, want, atol=2e-4)
    assert np.std(want) == pytest.approx(0.8, rel=0.05)
    # Given two of the ids, the term averages out over the third feature's 128 (uniform) ids:
    # what is left is the sampling noise of a mean of 128 latents, 1/128 of the term's variance.
    third = with_term._effects(2, np.arange(1, 129))[1][:, :2].astype(np.float64)
    given_two = 0.8 / np.sqrt(2) * np.sum(u[0] * u[1] * third.mean(0), axis=1)
    assert np.mean(given_two ** 2) / np.var(want) < 3 / 128


def test_the_term_features_pair_only_with_the_hub_whose_pairs_carry_the_term_latents():
    """No pair term links two of the term's features (their dot products get no signal);
    each pairs with the hub C4, and the term's latents are the whole pair latents."""
    src = _source(planted_worlds.triple())
    assert [tuple(p) for p in src._pairs] == [(0, 3), (1, 3), (2, 3)]
    assert src._triple.rank == src.latent_dim == 2
    ids = src._raw(EVAL_STREAM, np.arange(64))[1]
    np.testing.assert_array_equal(src.triple_latents(0, ids[:, 0]), src._effects(0, ids[:, 0])[1])


def test_explicit_pairs_and_a_latent_spectrum_set_the_pair_term():
    d = planted_worlds.valley()
    src = _source(d)
    assert [tuple(p) for p in src._pairs] == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    lam2 = src._pair_weights.astype(np.float64)
    m = np.arange(1, 513)
    np.testing.assert_allclose(lam2 / lam2[0], m ** -1.5, rtol=1e-5)
    assert lam2.sum() * 6 == pytest.approx(4.0, rel=1e-5)  # pair_effect 2: the six terms' variance is 4
    idx = np.arange(2048)
    _, ids, logit = src._raw(EVAL_STREAM, idx)
    u = [src._effects(f, ids[:, f])[1].astype(np.float64) for f in range(4)]
    want = sum(np.sum(u[f] * lam2 * u[g], axis=1) for f, g in src._pairs)
    np.testing.assert_allclose(logit, want, atol=1e-4)  # no per-id, dense or trilinear part
    assert np.all(ids[:, 4:] == 1)  # the other features have a single value


def test_uniform_ids_are_uniform_and_the_bayes_ne_is_exact_for_planted_worlds():
    src = _source(planted_worlds.triple())
    counts = np.bincount(src._raw(EVAL_STREAM, np.arange(1 << 16))[1][:, 0], minlength=129)[1:]
    assert counts.min() > 0.8 * counts.mean() and counts.max() < 1.2 * counts.mean()
    b, p = src.examples(EVAL_STREAM, np.arange(1 << 15))
    assert b.labels.mean() == pytest.approx(0.25, abs=0.01)
    # The Bayes NE is the NE of the true probabilities themselves.
    assert metrics.bayes_ne(p, b.labels) == pytest.approx(metrics.evaluate_logits(np.log(p / (1 - p)),
                                                                                 b.labels)["eval_ne"], abs=1e-6)


def test_fitted_worlds_are_unchanged_by_the_planted_terms():
    """criteo-like has none of them: its draws are what they were (first probabilities pinned)."""
    src = SyntheticSource(seed=0, world=load_world("criteo-like"))
    p = src.examples(EVAL_STREAM, np.arange(5))[1]
    np.testing.assert_allclose(p, [0.03708776, 0.27652112, 0.14963515, 0.00480677, 0.77425237], rtol=1e-6)


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.update(pairs=[["C1", "C1"]]), r"teacher.pairs\[0\]: .* itself or repeats"),
    (lambda t: t.update(pairs=[["C1", "C2"], ["C2", "C1"]]), r"teacher.pairs\[1\]"),
    (lambda t: t.update(pairs=[["C1", "C27"]]), r"teacher.pairs\[0\] must name a categorical feature"),
    (lambda t: t.update(pairs=[]), "teacher.pairs must be a non-empty list"),
    (lambda t: t.update(latent_spectrum={"rho": 0}), "teacher.latent_spectrum.rho must be > 0"),
    (lambda t: t.update(latent_spectrum={"rho": 1.5, "m": 3}), "teacher.latent_spectrum must be"),
    (lambda t: t["triple"].update(rank=5), r"teacher.triple.rank \(5\) must be <= teacher.latent_dim \(2\)"),
    (lambda t: t["triple"].update(rank=1.5), "teacher.triple.rank must be a whole number"),
    (lambda t: t["triple"].update(effect=-0.1), "teacher.triple.effect must be >= 0"),
    (lambda t: t["triple"].update(features=["C1", "C1", "C2"]), "three different features"),
    (lambda t: t["triple"].update(features=["C1", "C2"]), "must name three features"),
    (lambda t: t.update(tripple={}), "teacher: unknown key.s. tripple"),
])
def test_bad_planted_terms_name_their_key(edit, message):
    d = planted_worlds.triple()
    edit(d["teacher"])
    with pytest.raises(UserError, match=message):
        world_from_json(d, "w.json")


def test_a_bad_planted_world_file_exits_2_naming_the_key(tmp_path, capsys):
    from dlrm_jax.cli import main
    d = planted_worlds.triple()
    d["teacher"]["triple"]["rank"] = 0
    path = tmp_path / "w.json"
    path.write_text(json.dumps(d))
    assert main(["train", "--preset", "tiny", "--set", f"synthetic.world={path}", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"dlrm-scaling train: error: {path}: teacher.triple.rank must be >= 1, got 0"]
    assert not (tmp_path / "r").exists()


def test_zipf_worlds_differ_only_in_their_id_law():
    a, b = planted_worlds.zipf(1.6, 1 << 14), planted_worlds.zipf(1.4, 1 << 16)
    assert a["teacher"] == b["teacher"] and a["dense"] == b["dense"]
    assert {c["s"] for c in a["categorical"].values()} == {1.6}
    assert {c["cardinality"] for c in b["categorical"].values()} == {1 << 16}
    assert math.isclose(a["teacher"]["id_effect"], 1.5)
