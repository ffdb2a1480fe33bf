"""PyTorch / FBGEMM Adagrad (g / (sqrt(acc) + eps)) beside ours (g / sqrt(acc + eps)), and the MLPerf DLRMv2 preset."""
import json
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dlrm_jax import config as C, embedding as E, step as S
from dlrm_jax.model import accounting

# A large eps makes where it sits visible; the reference formulas are written out in NumPy.
EPS, LR = 0.5, 0.3


def _torch_adagrad(w, grads, rowwise):
    """torch.optim.Adagrad (elementwise) / FBGEMM exact row-wise Adagrad, step by step, float64."""
    w = np.array(w, np.float64)
    acc = np.zeros(w.shape[:-1] if rowwise else w.shape)
    for g in grads:
        acc = acc + ((g * g).mean(-1) if rowwise else g * g)
        s = np.where(acc > 0, 1 / (np.sqrt(acc) + EPS), 0)
        w = w - LR * g * (s[..., None] if rowwise else s)
    return w


@pytest.mark.parametrize("optimizer", ["adagrad_torch", "rowwise_adagrad_torch"])
def test_sparse_torch_adagrad_equals_the_torch_formula_with_duplicate_ids(optimizer):
    rng = np.random.default_rng(0)
    rows, dim = 12, 4
    table = rng.normal(size=(rows, dim)).astype(np.float32)
    state = E.EmbeddingState(table=jnp.asarray(table), accum=jnp.zeros(E.accum_shape(optimizer, rows, dim)))
    dense_grads = []
    for _ in range(3):
        ids = rng.integers(0, 5, size=(8, 3))            # rows 0..4 repeat within the batch
        g = rng.normal(size=(8, 3, dim)).astype(np.float32)
        state = E.sparse_update(state, jnp.asarray(ids, jnp.int32), jnp.asarray(g), optimizer, LR, EPS)
        full = np.zeros((rows, dim))
        np.add.at(full, ids.reshape(-1), g.reshape(-1, dim))   # duplicates summed
        dense_grads.append(full)
    want = _torch_adagrad(table, dense_grads, rowwise=optimizer.startswith("rowwise"))
    np.testing.assert_allclose(np.asarray(state.table), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(state.table)[5:], table[5:])   # untouched rows never move
    # ... and it is not our eps placement
    ours = optimizer.replace("_torch", "")
    other = E.sparse_update(E.EmbeddingState(table=jnp.asarray(table), accum=jnp.zeros(E.accum_shape(ours, rows, dim))),
                            jnp.zeros((1, 1), jnp.int32), jnp.ones((1, 1, dim)), ours, LR, EPS)
    same = E.sparse_update(E.EmbeddingState(table=jnp.asarray(table),
                                            accum=jnp.zeros(E.accum_shape(optimizer, rows, dim))),
                           jnp.zeros((1, 1), jnp.int32), jnp.ones((1, 1, dim)), optimizer, LR, EPS)
    assert not np.allclose(other.table[0], same.table[0])
    np.testing.assert_allclose(same.table[0], table[0] - LR / (1 + EPS), rtol=1e-6)


def test_dense_reference_of_torch_variants_matches_sparse():
    ref = E.dense_reference("rowwise_adagrad_torch", LR, EPS)
    w = jnp.asarray(np.random.default_rng(1).normal(size=(6, 3)), jnp.float32)
    g = jnp.asarray(np.random.default_rng(2).normal(size=(6, 3)), jnp.float32)
    st = ref.init(w)
    u, st = ref.update(g, st, w)
    np.testing.assert_allclose(optax.apply_updates(w, u), _torch_adagrad(w, [np.asarray(g)], True), rtol=1e-5)


def test_dense_adagrad_torch_optimizer_follows_torch_optim_adagrad():
    cfg = C.load_config("tiny", ["train.optimizer=adagrad_torch", "train.learning_rate=0.1"])
    tx = S.dense_optimizer(cfg.train)
    p = {"w": jnp.asarray([[0.5, -1.0], [2.0, 0.0]])}
    st = tx.init(p)
    grads = [np.array([[0.1, -2.0], [1e-3, 0.0]]), np.array([[0.3, 0.5], [-1e-3, 0.0]])]
    for g in grads:
        u, st = tx.update({"w": jnp.asarray(g, jnp.float32)}, st, p)
        p = optax.apply_updates(p, u)
    w, acc = np.array([[0.5, -1.0], [2.0, 0.0]]), np.zeros((2, 2))
    for g in grads:   # torch.optim.Adagrad: initial_accumulator_value 0, eps outside the root
        acc += g * g
        w -= 0.1 * g / (np.sqrt(acc) + S.TORCH_ADAGRAD_EPS)
    np.testing.assert_allclose(p["w"], w, rtol=1e-5)


def test_mlperf_dcnv2_preset_is_the_reference_configuration():
    cfg = C.load_config("criteo-mlperf-dcnv2")
    m = cfg.model
    assert (m.interaction, m.dcn_layers, m.dcn_rank, m.embed_dim) == ("dcn", 3, 512, 128)
    assert m.table_rows[0] == 40_000_000 and m.table_rows[10] == 3067956 and len(m.table_rows) == 26
    assert (cfg.train.optimizer, cfg.embedding.optimizer) == ("adagrad_torch", "rowwise_adagrad_torch")
    assert cfg.train.learning_rate == cfg.embedding.learning_rate == 0.004 and cfg.train.batch_size == 65536
    assert m.multi_hot[20] == 100 and sum(m.multi_hot) == 214 and m.multi_hot_pooling == "sum"
    assert cfg.eval.auc_target == 0.80275 and cfg.train.warmup_examples == 0 and cfg.train.decay == "none"
    a = accounting.account(m, m.table_rows, cfg.embedding.optimizer)
    n = 27 * 128
    assert accounting.interaction_counts(m) == (3 * (2 * n * 512 + n), 3 * 4 * n * 512)
    assert a.params_embedding == sum(m.table_rows) * 128
    assert a.embedding_bytes_per_example == 4 * 214 * (2 * 128 + 2)   # 214 rows looked up and updated


def test_auc_target_is_in_the_summary_and_the_printed_line(tmp_path):
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "dlrm_jax", "train", "--preset", "tiny", "--set", "train.examples=4096",
                        "--set", "eval.examples=2048", "--set", "eval.auc_target=0.55", "--out", str(out),
                        "--no-progress"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    s = json.loads((out / "summary.json").read_text())
    assert s["auc_target"] == 0.55 and s["auc_target_reached"] == (s["eval_auc"] >= 0.55)
    assert f"(target 0.55: {'reached' if s['auc_target_reached'] else 'not reached'})" in r.stdout
