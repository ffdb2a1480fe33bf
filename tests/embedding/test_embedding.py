"""The sparse row updates against optax on the full table (the dense-gradient reference)."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dlrm_jax import embedding as E
from dlrm_jax.embedding import optimizers

ROWS, DIM, B, F = 40, 4, 16, 3


def _problem(seed):
    rng = np.random.default_rng(seed)
    table = jnp.asarray(rng.normal(size=(ROWS, DIM)), jnp.float32)
    # Few distinct ids, so every batch repeats ids (within and across features).
    ids = jnp.asarray(rng.integers(0, 10, size=(B, F)), jnp.int32)
    target = jnp.asarray(rng.normal(size=(B, F, DIM)), jnp.float32)
    return table, ids, target


def _loss_rows(rows, target):
    return jnp.mean(jnp.sin(rows) * target) * 3.0


# (optimizer, first-position dedup, initial accumulator): both dedup paths from a zero
# accumulator; a non-zero one (embedding.initial_accumulator) once, since the
# accumulator is read and written the same way after either dedup.
CASES = [(opt, first, acc) for opt in ("sgd", "adagrad", "rowwise_adagrad")
         for first, acc in ((True, 0.0), (False, 0.0), (True, 0.1)) if opt != "sgd" or acc == 0]


@pytest.mark.parametrize("optimizer, first_position, initial_accumulator", CASES, ids=[
    f"{o}-{'first-position' if f else 'sorted'}" + (f"-accumulator{a}" if a else "") for o, f, a in CASES])
def test_sparse_update_equals_dense_reference(optimizer, first_position, initial_accumulator, monkeypatch):
    monkeypatch.setattr(optimizers, "FIRST_POSITION_ROWS_PER_ID", 10**9 if first_position else 0)
    lr, eps = 0.3, 1e-8
    table, _, _ = _problem(0)
    # The accumulator as training starts it (init_embedding), the table from _problem.
    state = E.init_embedding(jax.random.PRNGKey(0), E.layout_for([ROWS], DIM), optimizer,
                             initial_accumulator=initial_accumulator).replace(table=table)
    ref_tx = E.dense_reference(optimizer, lr, eps, initial_accumulator)
    ref_table, ref_state = table, ref_tx.init(table)
    for step in range(4):
        _, ids, target = _problem(step + 1)
        g_rows = jax.grad(_loss_rows)(E.lookup(state.table, ids), target)
        state = E.sparse_update(state, ids, g_rows, optimizer, lr, eps)
        g_table = jax.grad(lambda t: _loss_rows(E.lookup(t, ids), target))(ref_table)
        updates, ref_state = ref_tx.update(g_table, ref_state, ref_table)
        ref_table = optax.apply_updates(ref_table, updates)
        np.testing.assert_allclose(state.table, ref_table, rtol=1e-5, atol=1e-6)
    touched = np.unique(np.concatenate([np.asarray(_problem(s + 1)[1]).ravel() for s in range(4)]))
    untouched = np.setdiff1d(np.arange(ROWS), touched)
    np.testing.assert_array_equal(state.table[untouched], table[untouched])  # never moved
    assert not np.allclose(state.table[touched], table[touched])


def test_rowwise_accumulator_is_mean_square_of_summed_row_gradient():
    ids = jnp.array([[1], [1], [2]])
    g = jnp.array([[[1.0, 3.0]], [[1.0, 1.0]], [[0.5, 0.5]]])
    state = E.EmbeddingState(table=jnp.zeros((4, 2)), accum=jnp.zeros(4))
    out = E.sparse_update(state, ids, g, "rowwise_adagrad", 1.0, eps=0.0)
    # row 1: summed gradient (2, 4): acc = (4 + 16) / 2 = 10; row 2: acc = 0.25
    np.testing.assert_allclose(out.accum, [0, 10, 0.25, 0])
    np.testing.assert_allclose(out.table[1], -np.array([2, 4]) / np.sqrt(10), rtol=1e-6)


@pytest.mark.parametrize("first_position", [True, False], ids=["first-position", "sorted"])
@pytest.mark.parametrize("optimizer", ["sgd", "rowwise_adagrad"])
def test_row_start_drops_ids_of_other_shards(optimizer, first_position, monkeypatch):
    """A shard holding global rows [4, 8) updates only those."""
    monkeypatch.setattr(optimizers, "FIRST_POSITION_ROWS_PER_ID", 10**9 if first_position else 0)
    # An own row comes first: a slot that other shards' ids were wrongly summed into
    # would then be a real row (an out-of-shard id in slot 0 would hide the bug).
    ids = jnp.array([[5, 1], [5, 7], [0, 1]])
    g = jnp.ones((3, 2, 3))
    shard = E.EmbeddingState(table=jnp.zeros((4, 3)), accum=jnp.zeros(4))
    out = E.sparse_update(shard, ids, g, optimizer, 1.0, row_start=4, eps=0.0)
    # rows 5 and 7 (local 1, 3) move: sgd by the summed gradient, row-wise Adagrad by g/|g| = 1
    want = [0, -2, 0, -1] if optimizer == "sgd" else [0, -1, 0, -1]
    np.testing.assert_allclose(out.table[:, 0], want, rtol=1e-6)
    if optimizer == "rowwise_adagrad":  # mean square of each row's own summed gradient: (2, 2, 2) and (1, 1, 1)
        np.testing.assert_allclose(out.accum, [0, 4, 0, 1], rtol=1e-6)


def test_layout_offsets_and_init_scale():
    layout = E.layout_for([3, 100, 7], 8)
    np.testing.assert_array_equal(layout.offsets, [0, 3, 103])
    st = E.init_embedding(jax.random.PRNGKey(0), layout, "rowwise_adagrad")
    assert st.table.shape == (110, 8) and st.accum.shape == (110,)
    assert float(jnp.abs(st.table[3:103]).max()) <= 0.1 + 1e-7     # 1/sqrt(100)
    assert float(jnp.abs(st.table[:3]).max()) > 0.1                 # 1/sqrt(3) is wider
