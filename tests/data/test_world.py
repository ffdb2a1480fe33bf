"""Synthetic worlds (dlrm_jax/data/world.py) and `data calibrate` (dlrm_jax/data/calibrate.py):
the sampling laws against their exact probabilities, the default world left as it was,
a calibrate round trip on rows generated from a known world, and bad input."""
import hashlib
import json

import numpy as np
import pytest

from dlrm_jax.cli import main as cli_main
from dlrm_jax.config import load_config
from dlrm_jax.data import make_source
from dlrm_jax.data.calibrate import fit_dense, fit_id_law, world_rows
from dlrm_jax.data.criteo import format as cf
from dlrm_jax.data.criteo.prepare import PrepareOptions, prepare
from dlrm_jax.data.synthetic import EVAL_STREAM, TRAIN_STREAM, SyntheticSource
from dlrm_jax.data.world import IdLaw, distinct_curve, load_world, world_from_json
from dlrm_jax.errors import UserError


@pytest.mark.parametrize("law", [IdLaw(50, 0.2, 1.3, 3.0, (0.3, 0.1)), IdLaw(1000, 0.0, 0.9),
                                 IdLaw(24, 0.1, 16.0, 0.0, (0.5, 0.2, 0.1, 0.1, 0.05, 0.04)),
                                 IdLaw(200_000, 0.05, 1.1, 2.0, (0.2,))])
def test_sampled_ranks_follow_the_law(law):
    u = (np.arange(400_000) + 0.5) / 400_000          # a fine grid of uniforms: the inverse CDF exactly
    ranks = law.ranks(u)
    assert ranks.min() >= 1 and ranks.max() <= law.cardinality
    emp = np.bincount(ranks, minlength=law.cardinality + 1)[1:] / u.size
    p, size = law.rank_probs()
    k = min(len(p), 500)                              # the first ranks are exact, one each
    assert np.all(size[:k] == 1) and p.dot(size) == pytest.approx(1.0, abs=1e-9)
    np.testing.assert_allclose(emp[:k], p[:k], atol=2e-5)
    np.testing.assert_allclose(law.head, p[:len(law.head)])


def test_expected_distinct_matches_simulation():
    law = IdLaw(5000, 0.2, 1.2, 4.0, (0.25, 0.05))
    rng = np.random.default_rng(0)
    ids = law.ids(rng.random((300, 2000)).ravel(), (7, 3)).reshape(300, 2000)
    assert ids.max() <= law.cardinality and np.mean(ids == 0) == pytest.approx(0.2, abs=0.005)
    sim = np.mean([distinct_curve(row, [100, 500, 2000]) for row in ids], 0)
    np.testing.assert_allclose(law.expected_distinct([100, 500, 2000]), sim, rtol=0.01)
    # the log-spaced tail groups of a huge table agree with rank-by-rank sums
    big = IdLaw(3_000_000, 0.0, 1.05, 0.0)
    p, size = big.rank_probs()
    assert size.sum() == big.cardinality and len(p) < 10_000
    exact = big.rank_mass(np.arange(1.0, big.cardinality + 1), np.arange(2.0, big.cardinality + 2))
    n = 10_000
    assert big.expected_distinct([n])[0] == pytest.approx(np.sum(-np.expm1(n * np.log1p(-exact))), rel=2e-3)


def test_dense_marginal_round_trip():
    rng = np.random.default_rng(1)
    counts = np.floor(rng.lognormal(1.0, 1.5, 50_000))
    missing = rng.random(50_000) < 0.3
    col = np.where(missing, 0.0, np.log1p(counts))
    d = fit_dense(col, int(missing.sum()))
    assert d.missing_rate == pytest.approx(0.3, abs=0.01)
    x = d.sample((np.arange(100_000) + 0.5) / 100_000)
    assert np.mean(x[:29_000] == 0) == 1.0                # the missing mass comes first
    assert np.allclose(np.expm1(x), np.round(np.expm1(x)), atol=1e-6)   # whole counts
    for qq in (0.1, 0.5, 0.9, 0.99):
        assert np.quantile(x, qq) == pytest.approx(np.quantile(col, qq), abs=0.05)


def _fingerprint(src, n=512):
    b, p = src.examples(TRAIN_STREAM, np.arange(1000, 1000 + n))
    return hashlib.sha256(b.dense.tobytes() + b.sparse.tobytes() + b.labels.tobytes()
                          + p.astype(np.float64).tobytes()).hexdigest()[:16]


def test_default_world_is_unchanged():
    # Fingerprints of the generator before worlds existed (commit 15b98ca): the demo's data.
    assert _fingerprint(make_source(load_config("tiny"))) == "67e0cf3d7ff5e287"
    assert _fingerprint(make_source(load_config("small"))) == "3b13d3e68f633454"


def test_criteo_like_world_from_config():
    cfg = load_config("tiny", ["synthetic.world=criteo-like", "model.table_rows=4096"])
    src = make_source(cfg)
    w = load_world("criteo-like")
    assert src.cardinalities == w.table_rows and src.table_sizes == tuple(min(c, 4096) for c in w.table_rows)
    assert w.table_rows[2] == 10_131_228                  # C3: the Kaggle count + the missing id
    a = list(src.train_batches(64, 0, 256))
    b = list(src.train_batches(100, 40, 240))             # a pure function of the index
    np.testing.assert_array_equal(np.concatenate([x.sparse for x in a])[40:240],
                                  np.concatenate([x.sparse for x in b]))
    batch, p = src.examples(TRAIN_STREAM, np.arange(20_000))
    assert abs(p.mean() - w.base_ctr) < 0.005
    ids = src.world_ids(TRAIN_STREAM, np.arange(20_000))
    np.testing.assert_array_equal(ids % 4096, batch.sparse)
    for f in (0, 18, 21):    # C1 never missing, C19 45%, C22 82% missing in the Kaggle head
        assert np.mean(ids[:, f] == 0) == pytest.approx(w.features[f].missing_rate, abs=0.01)
    for j in (0, 11):
        assert np.mean(batch.dense[:, j] == 0) >= w.dense[j].missing_rate - 0.01
    assert src.world_ids(EVAL_STREAM, np.arange(100)).tolist() != ids[:100].tolist()


def test_embedding_rows_sweep_scales_from_the_worlds_tables():
    from sweeps.embedding_rows import points
    cfg = load_config("small", ["synthetic.world=criteo-like"])
    assert points(cfg)[-1] == {"model.table_rows": 10_131_228}          # C3: the largest table
    capped = cfg.replace(**{"model.table_rows": 1 << 17})
    assert [p["model.table_rows"] for p in points(capped)] == [1 << 11, 1 << 13, 1 << 15, 1 << 17]


def test_bad_world_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="neither a shipped world"):
        load_config("tiny", ["synthetic.world=no-such-world"])
    bad = tmp_path / "w.json"
    bad.write_text("{not json")
    with pytest.raises(UserError, match="not a readable world JSON"):
        load_config("tiny", [f"synthetic.world={bad}"])
    d = load_world("criteo-like").to_json()
    d["categorical"]["C5"]["s"] = -1
    with pytest.raises(UserError, match="categorical C5"):
        world_from_json(d, "w.json")
    del d["dense"]["I3"]
    d["categorical"]["C5"]["s"] = 1.0
    with pytest.raises(UserError, match="missing field 'I3'"):
        world_from_json(d, "w.json")


def _small_world(seed=0):
    """A world with small tables (fast to fit) but Criteo-like shapes: heads, tails, missing."""
    d = load_world("criteo-like").to_json()
    rng = np.random.default_rng(seed)
    for j in range(26):
        c = int(rng.choice([5, 40, 300, 3000, 20_000]))
        head = [0.3, 0.1] if c > 2 else []
        d["categorical"][f"C{j + 1}"] = {"cardinality": c, "missing_rate": float(rng.choice([0.0, 0.0, 0.3])),
                                         "s": float(rng.uniform(1.0, 1.6)), "q": float(rng.choice([0.0, 20.0])),
                                         "head": head}
    return world_from_json(d, "small world")


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """8,000 rows of a known world written as Criteo TSV and prepared (vocabulary, min-count 1)."""
    tmp = tmp_path_factory.mktemp("world")
    world = _small_world()
    src = SyntheticSource(seed=5, world=world)
    rows, _ = world_rows(src, TRAIN_STREAM, 8000)
    tsv = tmp / "rows.tsv"
    tsv.write_bytes(cf.format_rows(rows))
    prepare([tsv], tmp / "data", PrepareOptions(min_count=1))
    return world, rows, tmp


@pytest.fixture(scope="module")
def calibrated(generated):
    """`dlrm-scaling data calibrate` of the generated rows (the world's own cardinalities)."""
    world, _, tmp = generated
    out = tmp / "fitted.json"
    cards = ",".join(str(f.cardinality) for f in world.features)
    rc = cli_main(["data", "calibrate", "--src", str(tmp / "data"), "--out", str(out),
                   "--cardinalities", cards, "--teacher", "1,0.5,0.25"])
    return rc, out


def test_calibrate_recovers_a_known_world(generated, calibrated):
    world, rows, tmp = generated
    rc, out = calibrated
    assert rc == 0
    fitted = load_world(str(out))
    assert fitted.base_ctr == pytest.approx(rows.labels.mean(), abs=1e-6)
    grid = np.array([500, 2000, 8000])                 # the range it was fitted on
    for j, (true, fit) in enumerate(zip(world.features, fitted.features)):
        assert fit.missing_rate == pytest.approx(true.missing_rate, abs=0.02), j
        top = np.sort(true.rank_probs()[0])[::-1][:2]    # the two most popular values' shares
        assert fit.head[:2] == pytest.approx(top, abs=0.03), j
        np.testing.assert_allclose(fit.expected_distinct(grid), true.expected_distinct(grid), rtol=0.1,
                                   atol=1, err_msg=f"C{j + 1}")
        rep = fitted.source["fit"][f"C{j + 1}"]
        assert rep["distinct"] == len(np.unique(rows.cats[~rows.cat_missing[:, j], j]))
    for j, (true, fit) in enumerate(zip(world.dense, fitted.dense)):
        u = (np.arange(20_000) + 0.5) / 20_000
        assert np.mean(fit.sample(u)) == pytest.approx(np.mean(true.sample(u)), abs=0.05), j


def test_fitted_cardinality_follows_the_curve():
    law = IdLaw(3000, 0.1, 1.3, 10.0, (0.2,))
    ids = law.ids(np.random.default_rng(2).random(8000), (7, 3))
    fitted, rep = fit_id_law(ids, "fit")
    assert rep["distinct"] <= fitted.cardinality <= 8_000_000
    grid = np.array([500, 2000, 8000])
    np.testing.assert_allclose(fitted.expected_distinct(grid), law.expected_distinct(grid), rtol=0.1)
    assert rep["max_rel_error_last_decade"] < 0.05
    observed, _ = fit_id_law(ids, "observed")
    assert observed.cardinality == rep["distinct"]


def test_calibrate_cli_writes_a_world_the_config_reads(calibrated):
    rc, out = calibrated
    assert rc == 0
    w = json.loads(out.read_text())
    assert w["format"] == "dlrm-scaling/synthetic-world" and len(w["categorical"]) == 26
    assert (w["teacher"]["id_effect"], w["teacher"]["pair_effect"], w["teacher"]["dense_effect"]) == (1, 0.5, 0.25)
    src = make_source(load_config("tiny", [f"synthetic.world={out}", "model.table_rows=1000"]))
    assert src.eval_batch(256).sparse.shape == (256, 26)


def _one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_calibrate_bad_input_exits_2_with_one_line(generated, tmp_path, capsys):
    _, rows, tmp = generated
    out = tmp_path / "w.json"
    assert cli_main(["data", "calibrate", "--src", str(tmp), "--out", str(out)]) == 2
    assert "no manifest.json" in _one_error_line(capsys)
    assert cli_main(["data", "calibrate", "--src", str(tmp / "nope"), "--out", str(out)]) == 2
    assert "not a directory of prepared data" in _one_error_line(capsys)
    few = tmp_path / "few.tsv"
    few.write_bytes(cf.format_rows(cf.Rows(*(x[:600] for x in rows))))
    prepare([few], tmp_path / "few", PrepareOptions(hash_rows=(1000,) * 26))
    assert cli_main(["data", "calibrate", "--src", str(tmp_path / "few"), "--out", str(out)]) == 2
    assert "600 rows" in _one_error_line(capsys)
    prepare([tmp / "rows.tsv"], tmp_path / "mc2", PrepareOptions(min_count=2))
    assert cli_main(["data", "calibrate", "--src", str(tmp_path / "mc2"), "--out", str(out)]) == 2
    assert "--min-count 2" in _one_error_line(capsys)
    assert cli_main(["data", "calibrate", "--src", str(tmp / "data"), "--out", str(out),
                     "--cardinalities", "kaggle,1"]) == 2
    assert "--cardinalities" in _one_error_line(capsys)
    assert cli_main(["data", "calibrate", "--src", str(tmp / "data"), "--out", str(out),
                     "--cardinalities", ",".join(["2"] * 26)]) == 2
    assert "more than the 2 given" in _one_error_line(capsys)
    assert cli_main(["data", "calibrate", "--src", str(tmp / "data"), "--out", str(out), "--teacher", "1,2"]) == 2
    assert "--teacher" in _one_error_line(capsys)
    assert cli_main(["data", "calibrate", "--out", str(out)]) == 2
    assert "--src" in _one_error_line(capsys)
    assert not out.exists()
