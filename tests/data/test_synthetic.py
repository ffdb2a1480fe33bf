import numpy as np
import pytest

from dlrm_jax.data import synthetic as S
from dlrm_jax.data.hashing import table_rows_for
from dlrm_jax.metrics import bayes_ne


@pytest.fixture(scope="module")
def source():
    return S.SyntheticSource(seed=3, cardinalities=5000, zipf=1.1)


def test_example_is_a_pure_function_of_seed_and_index(source):
    whole = list(source.train_batches(64, 0, 256))
    other = list(source.train_batches(100, 40, 240))
    a = np.concatenate([b.sparse for b in whole])[40:240]
    np.testing.assert_array_equal(a, np.concatenate([b.sparse for b in other]))
    # two hosts each produce their half of every global batch
    h0 = list(source.train_batches(64, 0, 128, host_index=0, host_count=2))
    h1 = list(source.train_batches(64, 0, 128, host_index=1, host_count=2))
    glued = np.concatenate([np.concatenate([x.dense, y.dense]) for x, y in zip(h0, h1)])
    np.testing.assert_array_equal(glued, np.concatenate([b.dense for b in whole])[:128])
    again = S.SyntheticSource(seed=3, cardinalities=5000, zipf=1.1)
    np.testing.assert_array_equal(again.eval_batch(512).labels, source.eval_batch(512).labels)


def test_shapes_ranges_and_click_rate(source):
    b, p = source.examples(S.TRAIN_STREAM, np.arange(20000))
    assert b.dense.shape == (20000, 13) and b.dense.dtype == np.float32
    assert b.sparse.shape == (20000, 26) and b.sparse.dtype == np.int32
    assert (b.sparse >= 0).all() and (b.sparse < np.array(source.table_sizes)).all()
    assert (b.dense >= 0).all()                       # log(count + 1)
    assert abs(p.mean() - 0.25) < 0.01 and abs(b.labels.mean() - 0.25) < 0.015
    # labels follow the true probability: the high-p half clicks far more often
    hi = p > np.median(p)
    assert b.labels[hi].mean() > 1.5 * b.labels[~hi].mean()


def test_ids_are_zipf_like(source):
    b, _ = source.examples(S.TRAIN_STREAM, np.arange(50000))
    f = int(np.argmax(source.cardinalities))
    counts = np.sort(np.bincount(b.sparse[:, f]))[::-1]
    # the top id is far more frequent than the 10th, which beats the 100th
    assert counts[0] > 3 * counts[9] > 3 * counts[99] > 0


def test_eval_stream_is_disjoint_from_training(source):
    """No eval example equals a training example, in its dense features or in its ids
    (measured: none of 2000 eval examples shares either with 2000 training ones)."""
    tr, _ = source.examples(S.TRAIN_STREAM, np.arange(2000))
    ev = source.eval_batch(2000)

    def rows(a):
        return {r.tobytes() for r in np.ascontiguousarray(a)}

    assert len(rows(ev.dense)) == len(rows(ev.sparse)) == 2000   # the examples differ among themselves
    assert not rows(ev.dense) & rows(tr.dense)
    assert not rows(ev.sparse) & rows(tr.sparse)


def test_lazy_effects_equal_materialised():
    small = S.SyntheticSource(seed=1, cardinalities=300)
    assert small._tables is not None
    lazy = S.SyntheticSource(seed=1, cardinalities=300)
    lazy._tables = None
    a, pa = small.examples(S.EVAL_STREAM, np.arange(1000))
    b, pb = lazy.examples(S.EVAL_STREAM, np.arange(1000))
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_allclose(pa, pb, rtol=1e-6)


def test_bayes_ne_is_the_best_possible(source):
    b = source.eval_batch(20000)
    p = source.eval_true_probs(20000)
    best = bayes_ne(p, b.labels)
    assert 0.3 < best < 1.0
    # perturbing the true probabilities (in logit space) makes NE worse
    z = np.log(p / (1 - p)) + np.random.default_rng(0).normal(0, 0.5, len(p))
    assert bayes_ne(1 / (1 + np.exp(-z)), b.labels) > best
    assert bayes_ne(np.full_like(p, b.labels.mean()), b.labels) == pytest.approx(1.0)


def test_table_rows_cap_hashes_ids():
    src = S.SyntheticSource(seed=0, cardinalities=5000, table_sizes=table_rows_for(100, S.spread_cardinalities(5000)))
    b = src.eval_batch(1000)
    assert max(src.table_sizes) == 100 and (b.sparse < 100).all()
