"""CriteoSource: the endless, deterministic, host-sharded training stream over
prepared shards.  Row identity is tracked through I1 = global line number."""
import json
import threading

import numpy as np
import pytest

from dlrm_jax.data.base import Batch
from dlrm_jax.data.criteo import format as cf
from dlrm_jax.data.criteo.prepare import PrepareOptions, prepare
from dlrm_jax.data.criteo.source import CriteoSource
from dlrm_jax.errors import UserError

N_TRAIN = 500


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("criteo")
    start = 0
    for name, n in (("a.tsv", 400), ("b.tsv", 300)):
        rows = cf.synthetic_rows(n, seed=start)
        rows.dense[:, 0] = start + np.arange(n)          # I1 = global line number
        rows.dense_missing[:, 0] = False
        (d / name).write_bytes(cf.format_rows(rows))
        start += n
    prepare([d / "a.tsv", d / "b.tsv"], d / "out", PrepareOptions(
        split=f"head:{N_TRAIN}", dense_transform="none", rows_per_shard=37,
        hash_rows=tuple(range(100, 126))))
    return d / "out"


def ids(batches) -> list[int]:
    return [int(x) for b in batches for x in b.dense[:, 0]]


def stream(src, batch, start, stop, **kw):
    return ids(src.train_batches(batch, start, stop, **kw))


def test_shapes_dtypes_and_table_sizes(data_dir):
    src = CriteoSource(data_dir)
    assert src.num_train == N_TRAIN and src.table_sizes == list(range(100, 126))
    b = next(src.train_batches(64, 0, 64))
    assert isinstance(b, Batch)
    assert (b.dense.shape, b.dense.dtype) == ((64, 13), np.float32)
    assert (b.sparse.shape, b.sparse.dtype) == ((64, 26), np.int32)
    assert (b.labels.shape, b.labels.dtype) == ((64,), np.float32)
    assert set(np.unique(b.labels)) <= {0.0, 1.0}
    assert (b.sparse < np.array(src.table_sizes)).all()


def test_sequential_stream_wraps_epochs(data_dir):
    src = CriteoSource(data_dir, prefetch=0)
    got = stream(src, 64, 0, 1250)
    assert got == [p % N_TRAIN for p in range(1250)]
    assert stream(src, 64, 0, 130)[-1] == 129 and len(stream(src, 64, 0, 130)) == 130


@pytest.mark.parametrize("window", [0, 50, 64, 10_000])
def test_any_batch_size_or_resume_point_sees_the_same_stream(data_dir, window):
    src = CriteoSource(data_dir, shuffle_window=window, seed=3)
    full = stream(src, 64, 0, 1600)
    assert stream(src, 7, 0, 1600) == full
    assert stream(src, 100, 333, 1600) == full[333:]                 # resume mid-epoch
    again = CriteoSource(data_dir, shuffle_window=window, seed=3, prefetch=0)
    assert stream(again, 64, 0, 1600) == full                         # deterministic
    for e in range(3):
        assert sorted(full[e * N_TRAIN:(e + 1) * N_TRAIN]) == list(range(N_TRAIN))


def test_shuffle_window_semantics(data_dir):
    src = CriteoSource(data_dir, shuffle_window=50, seed=1)
    full = stream(src, 50, 0, 2 * N_TRAIN)
    e0, e1 = full[:N_TRAIN], full[N_TRAIN:]
    assert e0 != e1 and e0 != list(range(N_TRAIN))                    # per-epoch order
    for k in range(N_TRAIN // 50):                                    # window locality
        assert len({r // 50 for r in e0[k * 50:(k + 1) * 50]}) == 1
    other = CriteoSource(data_dir, shuffle_window=50, seed=2)
    assert stream(other, 50, 0, N_TRAIN) != e0                        # per seed


@pytest.mark.parametrize("window", [0, 64])
def test_hosts_read_contiguous_slices_of_the_global_batch(data_dir, window):
    src = CriteoSource(data_dir, shuffle_window=window)
    glob = list(src.train_batches(64, 10, 700))
    hosts = [list(src.train_batches(64, 10, 700, h, 4)) for h in range(4)]
    for i, g in enumerate(glob):
        parts = [hosts[h][i] for h in range(4)]
        if g.labels.size == 64:
            assert all(p.labels.size == 16 for p in parts)
        for field in range(3):
            np.testing.assert_array_equal(np.concatenate([p[field] for p in parts]), g[field])
    with pytest.raises(UserError, match="split evenly"):
        src.train_batches(64, 0, 10, 0, 3)


def test_eval_batch(data_dir):
    src = CriteoSource(data_dir, eval_split="val")
    ev = src.eval_batch(150)
    assert ev.dense[:, 0].tolist() == list(range(N_TRAIN, N_TRAIN + 150))
    assert src.eval_batch(10).dense[:, 0].tolist() == list(range(N_TRAIN, N_TRAIN + 10))
    assert src.eval_true_probs(150) is None
    with pytest.raises(UserError, match="eval.examples=201 .* has 200 rows"):
        src.eval_batch(201)


def test_prefetch_thread_stops_when_the_consumer_does(data_dir):
    src = CriteoSource(data_dir, prefetch=2)
    it = src.train_batches(16, 0, 10**9)
    next(it)
    assert any(t.name == "criteo-prefetch" for t in threading.enumerate())
    it.close()
    assert not any(t.name == "criteo-prefetch" and t.is_alive() for t in threading.enumerate())


def test_errors(data_dir, tmp_path):
    with pytest.raises(UserError, match="no manifest.json"):
        CriteoSource(tmp_path)
    with pytest.raises(UserError, match=r"data.train_split=test: .* has splits \['train', 'val'\]"):
        CriteoSource(data_dir, train_split="test")
    m = json.loads((data_dir / "manifest.json").read_text())
    (tmp_path / "manifest.json").write_text(json.dumps(dict(m, status="in_progress")))
    with pytest.raises(UserError, match="not finished"):
        CriteoSource(tmp_path)
    assert CriteoSource.from_spec(f"criteo:{data_dir}").num_train == N_TRAIN
    with pytest.raises(UserError, match="criteo:DATA_DIR"):
        CriteoSource.from_spec("criteo:")
