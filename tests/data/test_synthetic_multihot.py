"""The synthetic generator's multi-hot features: bags whose whole content the teacher uses."""
import numpy as np
from scipy import special

from dlrm_jax import config as C
from dlrm_jax.data import make_source, synthetic as S

SIZES = (3, 1, 2) + (1,) * 22 + (4,)


def test_bags_extend_the_one_hot_stream_and_the_teacher_uses_the_mean_of_the_bag():
    one = S.SyntheticSource(cardinalities=300, zipf=1.1)
    hot = S.SyntheticSource(cardinalities=300, zipf=1.1, multi_hot=SIZES)
    a, pa = one.examples(S.TRAIN_STREAM, np.arange(400))
    b, pb = hot.examples(S.TRAIN_STREAM, np.arange(400))
    assert b.sparse.shape == (400, sum(SIZES))
    first = np.concatenate([[0], np.cumsum(SIZES)[:-1]])
    np.testing.assert_array_equal(b.sparse[:, first], a.sparse)        # each bag starts with the one-hot id
    np.testing.assert_array_equal(b.dense, a.dense)
    assert (b.sparse[:, 0:3] != b.sparse[:, [0]]).any()                # bags hold other ids too
    # p from the teacher's formula with per-feature means over the bag, written out here
    dense = b.dense
    zs = (dense - hot._dense_mu) / hot._dense_sigma
    logit = np.tanh(zs @ hot._dense_w + hot._dense_c) @ hot._dense_a
    lats = []
    for f in range(26):
        cols = np.arange(first[f], first[f] + SIZES[f])
        eff, lat = hot._hash_effects(f, b.sparse[:, cols].astype(np.int64))
        logit = logit + eff.mean(1)
        lats.append(lat.mean(1))
    for f, g in hot._pairs:
        logit = logit + hot._pair_scale * (lats[f] * lats[g]).sum(1)
    np.testing.assert_allclose(pb, special.expit(logit + hot._b0), rtol=1e-5)
    assert not np.allclose(pa, pb)                                       # the extra bag ids matter


def test_make_source_gives_synthetic_bags_for_model_multi_hot():
    cfg = C.load_config("tiny", ["model.multi_hot=" + ",".join(map(str, SIZES))])
    src = make_source(cfg)
    assert src.eval_batch(64).sparse.shape == (64, sum(SIZES))
    assert src.eval_true_probs(64).shape == (64,)
    one = make_source(C.load_config("tiny"))
    np.testing.assert_array_equal(one.eval_batch(64).sparse,
                                  src.eval_batch(64).sparse[:, np.concatenate([[0], np.cumsum(SIZES)[:-1]])])
