"""Multi-hot bags: pooling, sparse updates against the dense-gradient reference, every placement on
8 fake devices against one device, and MLPerf's bag tables byte for byte."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dlrm_jax import config as C, embedding as E, step as St
from dlrm_jax.data.base import Batch
from dlrm_jax.data.multihot import MultiHotSource, mlperf_table_chunks
from dlrm_jax.embedding import bags as bags_lib, placement as PL
from dlrm_jax.embedding.single_device import SingleDeviceEmbedding
from dlrm_jax.model import dlrm as M
from dlrm_jax.parallel import steps as parallel

ROWS = (6, 300) * 13
SIZES = (3, 1, 2, 4) * 6 + (1, 2)          # K = 62 id columns
B = 32


def _batches(steps=3, seed=0, sizes=SIZES, rows=ROWS):
    """Bags with ids < 5: duplicates within bags, across bags and across examples."""
    rng = np.random.default_rng(seed)
    cols = bags_lib.Bags(sizes).columns
    return [(rng.normal(size=(B, 13)).astype(np.float32),
             np.stack([rng.integers(0, min(rows[f], 5), B) for f in cols], axis=1).astype(np.int32),
             rng.integers(0, 2, B).astype(np.float32)) for _ in range(steps)]


@pytest.mark.parametrize("mode", ["sum", "mean"])
def test_pool_sums_or_averages_each_features_bag(mode):
    bags = bags_lib.Bags((2, 1, 3), mode)
    assert bags.columns == (0, 0, 1, 2, 2, 2) and bags.width == 6
    rows = np.random.default_rng(0).normal(size=(4, 6, 5)).astype(np.float32)
    want = np.stack([rows[:, 0:2].sum(1), rows[:, 2], rows[:, 3:6].sum(1)], axis=1)
    if mode == "mean":
        want = want / np.array([2, 1, 3])[None, :, None]
    np.testing.assert_allclose(bags.pool(jnp.asarray(rows)), want, rtol=1e-6)


@pytest.mark.parametrize("mode", ["mean"])   # sum: the placement test below
def test_multi_hot_step_equals_dense_gradient_reference(mode):
    """The sparse step (lookup [B, K, D], pool, per-row dedup) against jax.grad through the whole
    table and optax's row-wise Adagrad on every row."""
    cfg = C.load_config("tiny", [f"train.batch_size={B}", "model.multi_hot=" + ",".join(map(str, SIZES)),
                                 f"model.multi_hot_pooling={mode}"])
    bags = bags_lib.from_config(cfg.model, 26)
    layout = E.layout_for(ROWS, cfg.model.embed_dim)
    model, tx = M.from_config(cfg.model), St.dense_optimizer(cfg.train)
    backend = SingleDeviceEmbedding(layout, bags.columns)
    state = St.init_state(jax.random.PRNGKey(0), model, tx, backend, cfg.embedding)
    step = jax.jit(St.make_train_step(model, tx, backend, cfg.embedding, bags))
    e = cfg.embedding
    ref_tx = E.dense_reference(e.optimizer, e.learning_rate, e.eps)
    table, params = state.emb.table, state.params
    ref_state, opt_state = ref_tx.init(table), tx.init(params)
    offsets = layout.offsets[np.asarray(bags.columns)]
    for dense, ids, labels in _batches():
        def loss(params, table):
            rows = table[ids + offsets]                                   # [B, K, D]
            return St.bce_loss(model.apply({"params": params}, dense, bags.pool(rows)), labels)
        ref_loss, (g_p, g_t) = jax.value_and_grad(loss, argnums=(0, 1))(params, table)
        u, opt_state = tx.update(g_p, opt_state, params)
        params = optax.apply_updates(params, u)
        u, ref_state = ref_tx.update(g_t, ref_state, table)
        table = optax.apply_updates(table, u)
        state, step_loss, _ = step(state, dense, ids, labels)
        assert float(step_loss) == pytest.approx(float(ref_loss), rel=1e-5)
        np.testing.assert_allclose(state.emb.table, table, atol=2e-6)
    moved = np.abs(np.asarray(state.emb.table) - np.asarray(St.init_state(
        jax.random.PRNGKey(0), model, tx, backend, cfg.embedding).emb.table)).max(1) > 0
    assert moved.sum() > 50


@pytest.fixture(scope="module")
def single_device_run():
    return _sharded_run("replicated", 1, 1)


def _sharded_run(sharding, data, model):
    cfg = C.load_config("tiny", [f"train.batch_size={B}", "embedding.replicate_below_rows=100",
                                 "model.multi_hot=" + ",".join(map(str, SIZES)), f"embedding.sharding={sharding}",
                                 f"mesh.data={data}", f"mesh.model={model}"])
    par = parallel.parallelize(cfg, M.from_config(cfg.model), St.dense_optimizer(cfg.train),
                               E.layout_for(ROWS, cfg.model.embed_dim))
    state = par.init(0)
    losses = []
    for b in _batches():
        state, loss, _ = par.train_step(state, *par.put_batch(b))
        losses.append(float(loss))
    table = PL.to_canonical(par.placement, state.emb)[0] if par.placement is not None else state.emb.table
    logits = par.predict(state.params, state.emb.table, *_batches(1, seed=9)[0][:2])
    return losses, np.asarray(table), np.asarray(logits)


@pytest.mark.parametrize("sharding, data, model", [("row", 1, 8), ("table", 2, 4)])
def test_every_placement_gives_the_single_device_losses_with_bags(single_device_run, sharding, data, model):
    ref_losses, ref_table, ref_logits = single_device_run
    losses, table, logits = _sharded_run(sharding, data, model)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    np.testing.assert_allclose(table, ref_table, atol=2e-6)
    np.testing.assert_allclose(logits, ref_logits, rtol=1e-4, atol=1e-5)


def _mlperf_reference(rows, sizes):
    """An independent transcription of MLPerf's Multihot.__make_multi_hot_indices_tables (uniform):
    the global legacy RNG seeded 0, one randint per feature, the row id prepended."""
    np.random.seed(0)
    out = []
    for n, k in zip(rows, sizes):
        ids = np.arange(n)[:, np.newaxis]
        out.append(np.concatenate((ids, np.random.randint(0, n, size=(n, k - 1))), axis=-1))
    return out


def test_mlperf_bag_tables_byte_for_byte_in_chunks():
    rows, sizes = (7, 1000, 3, 2500), (3, 1, 5, 100)
    want = _mlperf_reference(rows, sizes)
    got = [np.empty_like(w) for w in want]
    for f, lo, chunk in mlperf_table_chunks(rows, sizes, chunk_rows=300):   # several chunks per table
        got[f][lo:lo + len(chunk)] = chunk
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.tobytes() == w.tobytes()


class _OneHot:
    table_sizes, num_train = (7, 1000, 3, 2500), None

    def eval_batch(self, n):
        rng = np.random.default_rng(0)
        return Batch(np.zeros((n, 13), np.float32),
                     np.stack([rng.integers(0, r, n) for r in self.table_sizes], axis=1), np.zeros(n, np.float32))

    def eval_true_probs(self, n):
        return None


def test_multi_hot_source_bags_are_table_rows_at_the_one_hot_id():
    sizes = (3, 1, 5, 100)
    src = MultiHotSource(_OneHot(), sizes)
    one_hot = _OneHot().eval_batch(50).sparse
    bags = src.eval_batch(50).sparse
    assert bags.shape == (50, sum(sizes))
    tables = _mlperf_reference(_OneHot.table_sizes, sizes)
    starts = np.cumsum((0,) + sizes[:-1])
    for f, (s, k) in enumerate(zip(starts, sizes)):
        np.testing.assert_array_equal(bags[:, s:s + k], tables[f][one_hot[:, f]])
        np.testing.assert_array_equal(bags[:, s], one_hot[:, f])     # the id is in its own bag


def test_criteo_multihot_materialises_mlperf_bags_byte_for_byte_and_resumes(tmp_path):
    from dlrm_jax.data.criteo import format as cf, manifest as manifest_io
    from dlrm_jax.data.criteo.multihot import materialize
    from dlrm_jax.data.criteo.prepare import PrepareOptions, prepare
    from dlrm_jax.data.criteo.source import CriteoSource
    from dlrm_jax.errors import UserError
    (tmp_path / "a.tsv").write_bytes(cf.format_rows(cf.synthetic_rows(300, seed=0)))
    rows = tuple(range(100, 126))
    prepare([tmp_path / "a.tsv"], tmp_path / "one", PrepareOptions(split="head:200", rows_per_shard=70,
                                                                   hash_rows=rows))
    sizes = (3, 2, 1, 2, 6, 1, 1, 1, 1, 7, 3, 8, 1, 6, 9, 5, 1, 1, 1, 12, 100, 27, 10, 3, 1, 1)
    m = materialize(tmp_path / "one", tmp_path / "hot", sizes, chunk_rows=45, log=lambda *a: None)
    tables = _mlperf_reference(rows, sizes)
    src_m = manifest_io.load(tmp_path / "one")
    starts = np.cumsum((0,) + sizes[:-1])
    for split, info in src_m["splits"].items():
        for shard in info["shards"]:
            one = np.load(manifest_io.shard_files(tmp_path / "one", split, shard)["sparse"])
            want = np.concatenate([tables[f][one[:, f]] for f in range(26)], axis=1).astype(np.int32)
            files = manifest_io.shard_files(tmp_path / "hot", split, shard)
            got = np.load(files["sparse"])
            assert got.dtype == np.int32 and got.tobytes() == want.tobytes()
            for c in ("dense", "labels"):
                assert files[c].read_bytes() == manifest_io.shard_files(tmp_path / "one", split, shard)[c].read_bytes()
            np.testing.assert_array_equal(got[:, starts], one)          # each id is in its own bag
    assert m["multi_hot"]["sizes"] == list(sizes)
    # Resume: a table and a shard lost (as if killed before their rename) come back identical.
    shard = src_m["splits"]["train"]["shards"][1]
    files = manifest_io.shard_files(tmp_path / "hot", "train", shard)
    before = files["sparse"].read_bytes(), (tmp_path / "hot/tables/C22.npy").read_bytes()
    for p in (files["sparse"], tmp_path / "hot/tables/C22.npy", tmp_path / "hot/manifest.json"):
        p.unlink()
    materialize(tmp_path / "one", tmp_path / "hot", sizes, chunk_rows=45, log=lambda *a: None)
    assert (files["sparse"].read_bytes(), (tmp_path / "hot/tables/C22.npy").read_bytes()) == before
    # The data source reads the bags; a config of other sizes is refused.
    src = CriteoSource(tmp_path / "hot")
    assert src.eval_batch(10).sparse.shape == (10, sum(sizes))
    cfg = C.load_config("tiny", [f"data.source=criteo:{tmp_path / 'hot'}",
                                 "model.multi_hot=" + ",".join(map(str, sizes))])
    from dlrm_jax.data import make_source
    assert make_source(cfg).eval_batch(10).sparse.shape == (10, sum(sizes))
    with pytest.raises(UserError, match="multi-hot bags of sizes"):
        make_source(cfg.replace(**{"model.multi_hot": 2}))
