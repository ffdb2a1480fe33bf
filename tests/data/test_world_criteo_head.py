"""The shipped `criteo-like` world against the real first 9,999 rows of the Criteo Kaggle
train.txt (../shared/data; research use only, never copied here): distinct ids per
feature as rows grow, the label rate, and that the shipped file is what `data calibrate`
fits to those rows.  Skipped where the file is absent."""
from pathlib import Path

import numpy as np
import pytest

from dlrm_jax.data.calibrate import calibrate
from dlrm_jax.data.criteo.prepare import PrepareOptions, prepare
from dlrm_jax.data.criteo.source import CriteoSource
from dlrm_jax.data.synthetic import TRAIN_STREAM, SyntheticSource
from dlrm_jax.data.world import distinct_curve, load_world

HEAD = Path(__file__).resolve().parents[3] / "shared" / "data" / "criteo_kaggle_train_head9999.tsv"
pytestmark = pytest.mark.skipif(not HEAD.is_file(), reason=f"{HEAD} not present")
ROWS = np.arange(1000, 10_000, 500).tolist() + [9999]      # the 1k..10k rows the curves are compared over


def top_share(ids, k):
    """Share of the present ids that the k most frequent values take."""
    counts = np.sort(np.unique(ids[ids != 0], return_counts=True)[1])[::-1]
    return counts[:k].sum() / max(counts.sum(), 1)


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """The head prepared with a min-count-1 vocabulary: every distinct value keeps its own id."""
    out = tmp_path_factory.mktemp("head") / "data"
    prepare([HEAD], out, PrepareOptions(min_count=1))
    src = CriteoSource(out, train_split="all", eval_split="all", prefetch=0)
    return out, next(src.train_batches(src.num_train, 0, src.num_train))


def test_criteo_like_distinct_ids_follow_the_head(head):
    _, real = head
    ids = SyntheticSource(seed=0, world=load_world("criteo-like")).world_ids(TRAIN_STREAM, np.arange(9999))
    for f in range(26):
        r = distinct_curve(real.sparse[:, f], ROWS).astype(float)
        s = distinct_curve(ids[:, f], ROWS).astype(float)
        # 15%, or two standard deviations of a count of distinct ids (its variance is at
        # most its mean) where the count is small: 7 values, say, cannot be 15% apart.
        tol = np.maximum(0.15 * r, 2 * np.sqrt(r))
        assert np.all(np.abs(s - r) <= tol), (f"C{f + 1}", r.tolist(), s.tolist())
        if r[-1] >= 500:   # the large tables, where noise is small, within 15% outright
            assert np.all(np.abs(s / r - 1) <= 0.15), (f"C{f + 1}", r.tolist(), s.tolist())
        # the head of the frequency profile: what the most popular values carry
        assert top_share(ids[:, f], 10) == pytest.approx(top_share(real.sparse[:, f], 10), abs=0.03), f"C{f + 1}"
        assert top_share(ids[:, f], 1) == pytest.approx(top_share(real.sparse[:, f], 1), abs=0.03), f"C{f + 1}"
    total_r = sum(len(np.unique(real.sparse[real.sparse[:, f] != 0, f])) for f in range(26))
    total_s = sum(len(np.unique(ids[ids[:, f] != 0, f])) for f in range(26))
    assert abs(total_s / total_r - 1) < 0.05              # 43,575 distinct ids in the head


def test_criteo_like_label_rate_matches_the_head(head):
    _, real = head
    src = SyntheticSource(seed=0, world=load_world("criteo-like"))
    labels = src.examples(TRAIN_STREAM, np.arange(9999))[0].labels
    assert abs(labels.mean() - real.labels.mean()) < 0.01   # 0.2181 in the head
    assert load_world("criteo-like").base_ctr == pytest.approx(real.labels.mean(), abs=1e-6)


def test_criteo_like_dense_marginals_match_the_head(head):
    _, real = head
    syn = SyntheticSource(seed=0, world=load_world("criteo-like")).examples(TRAIN_STREAM, np.arange(9999))[0]
    for j in range(13):   # log1p(count), 0 where missing or zero: what the model sees
        r, s = real.dense[:, j], syn.dense[:, j]
        assert float(s.mean()) == pytest.approx(float(r.mean()), abs=0.05), f"I{j + 1}"
        assert np.mean(s == 0) == pytest.approx(np.mean(r == 0), abs=0.02), f"I{j + 1}"
        for q in (0.5, 0.9, 0.99):
            assert np.quantile(s, q) == pytest.approx(np.quantile(r, q), abs=0.1 * (1 + float(np.quantile(r, q)))), \
                f"I{j + 1} q{q}"


def test_shipped_world_is_the_heads_calibration(head):
    out, _ = head
    fresh = calibrate(out, cardinalities="kaggle")
    shipped = load_world("criteo-like")
    assert fresh.features == shipped.features
    assert fresh.dense == shipped.dense
    assert fresh.base_ctr == shipped.base_ctr
    assert fresh.source["fit"] == shipped.source["fit"]
