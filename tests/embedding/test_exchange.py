"""The owner-routed embedding exchange on 8 fake CPU devices.

* the exchange alone: lookups equal a numpy gather, updates equal the
  single-device sparse optimizer, for ordinary, worst-skew (every example the
  same id) and capacity-overflowing batches, with the overflow counted;
* the whole train step: several steps of such batches give the single-device
  losses, tables and optimizer state, overflow rounds included;
* the compiled step: no collective is larger than the device's own slice
  times the capacity headroom, and the bytes per device do not grow from 4
  to 8 devices at a fixed per-device batch.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from dlrm_jax import config as C, embedding as E, step as St
from dlrm_jax.compile import hlo_collectives
from dlrm_jax.embedding import exchange, optimizers
from dlrm_jax.model import dlrm as M
from dlrm_jax.parallel import mesh as mesh_lib, steps as parallel
from tests.embedding.same_state import assert_same_state

N, S, D = 8, 32, 4          # devices, rows per device, embed dim
b, K = 6, 3                 # examples per device, id columns
AXES = mesh_lib.axis("table_rows")


def _exchange_fn(cap: int, optimizer: str):
    mesh = jax.make_mesh((2, 4), mesh_lib.AXES, axis_types=(jax.sharding.AxisType.Auto,) * 2)

    def body(table, accum, owner, row, grads):
        rows, s1 = exchange.lookup(table, owner, row, N, cap, AXES)
        apply = lambda st, r, g: optimizers.sparse_update(st, r, g, optimizer, 0.5)  # noqa: E731
        st, s2 = exchange.update(apply, E.EmbeddingState(table, accum), owner, row, grads, N, S, cap, AXES)
        return rows, st.table, st.accum, jnp.stack([s1.rounds, s1.overflow_ids, s2.rounds, s2.overflow_ids])

    acc_spec = P(AXES) if optimizer != "sgd" else P()
    f = jax.shard_map(body, mesh=mesh, in_specs=(P(AXES), acc_spec, P(AXES), P(AXES), P(AXES)),
                      out_specs=(P(AXES), P(AXES), acc_spec, P()), check_vma=False)
    return jax.jit(f)


def _ids(kind: str, rng) -> np.ndarray:
    """Global rows [N b, K] of the N S-row table."""
    if kind == "skew":      # every example the same id: one unique id per device
        return np.full((N * b, K), 37)
    if kind == "overflow":  # every device asks owner 2 for the same 18 distinct rows, shuffled
        return np.concatenate([2 * S + rng.permutation(b * K).reshape(b, K) for _ in range(N)])
    return rng.integers(0, N * S, (N * b, K))


@pytest.mark.parametrize("optimizer", ["rowwise_adagrad", "adagrad"])
def test_exchange_equals_a_gather_and_the_single_device_update(optimizer):
    rng = np.random.default_rng(0)
    table = rng.normal(size=(N * S, D)).astype(np.float32)
    accum0 = np.asarray(jnp.full(E.accum_shape(optimizer, N * S, D), 0.1, jnp.float32))
    cap = exchange.capacity(b * K, N, headroom=1.0)     # 3: an even spread of the 18 ids fits exactly
    f = _exchange_fn(cap, optimizer)
    for kind in ("random", "skew", "overflow"):
        ids = _ids(kind, rng)
        grads = rng.normal(size=(N * b, K, D)).astype(np.float32)
        rows, new_table, new_accum, stats = f(table, accum0, jnp.asarray(ids // S, jnp.int32),
                                               jnp.asarray(ids % S, jnp.int32), grads)
        np.testing.assert_array_equal(np.asarray(rows), table[ids])
        ref = optimizers.sparse_update(E.EmbeddingState(jnp.asarray(table), jnp.asarray(accum0)),
                                       jnp.asarray(ids, jnp.int32), jnp.asarray(grads), optimizer, 0.5)
        np.testing.assert_allclose(np.asarray(new_table), np.asarray(ref.table), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(np.asarray(new_accum), np.asarray(ref.accum), rtol=1e-5)
        rounds, overflow = int(stats[2]), int(stats[3])
        assert list(np.asarray(stats[:2])) == [rounds, overflow]  # lookup and update route alike
        unique_per_device = [len(np.unique(ids[d * b:(d + 1) * b])) for d in range(N)]
        if kind == "skew":
            assert (rounds, overflow) == (1, 0)
        if kind == "overflow":
            # 18 distinct ids per device for one owner, 3 per round: 6 rounds, 15 late ids per device.
            assert unique_per_device == [18] * N and rounds == 6 and overflow == N * 15


def _cfg(*overrides):
    return C.load_config("tiny", ["train.batch_size=64", "embedding.replicate_below_rows=100", *overrides])


ROWS = (6, 300) * 13


def _parallel(cfg, rows=ROWS, devices=None):
    model, tx = M.from_config(cfg.model), St.dense_optimizer(cfg.train)
    return parallel.parallelize(cfg, model, tx, E.layout_for(rows, cfg.model.embed_dim), devices=devices)


def _batches():
    """An ordinary batch, a worst-skew batch (every example the same ids), one of many distinct ids."""
    rng = np.random.default_rng(1)
    dense = lambda: rng.normal(size=(64, 13)).astype(np.float32)  # noqa: E731
    labels = lambda: rng.integers(0, 2, 64).astype(np.float32)     # noqa: E731
    ordinary = np.stack([rng.integers(0, min(r, 6), 64) for r in ROWS], axis=1)
    skew = np.tile(np.array([[r - 1 for r in ROWS]]), (64, 1))
    distinct = np.stack([(np.arange(64) * 7 + f) % r for f, r in enumerate(ROWS)], axis=1)
    return [(dense(), ids.astype(np.int32), labels()) for ids in (ordinary, skew, distinct, ordinary)]


def test_train_steps_with_skew_and_overflow_match_single_device():
    batches = _batches()
    ref = _parallel(_cfg("mesh.data=1", "mesh.model=1"))
    state = ref.init(0)
    ref_losses = []
    for bt in batches:
        state, loss, stats = ref.train_step(state, *bt)
        ref_losses.append(float(loss))
        assert stats == {}
    # A small headroom (capacity 7 ids per owner per round) makes the distinct batch overflow.
    par = _parallel(_cfg("embedding.sharding=auto", "mesh.data=2", "mesh.model=4", "embedding.exchange_headroom=0.25"))
    assert [g.shards for g in par.placement.groups] == [1, 8]
    st = par.init(0)
    losses, rounds, overflow = [], [], []
    for bt in batches:
        st, loss, stats = par.train_step(st, *par.put_batch(bt))
        losses.append(float(loss))
        rounds.append(int(stats["exchange_rounds"]))
        overflow.append(int(stats["exchange_overflow_ids"]))
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    assert_same_state(par.placement, st, state)
    # Worst skew: every device holds the same one id per feature, deduplicated to one request
    # each; with all devices alike, rounds and overflow follow from the owners' counts alone.
    (_, group) = par.placement.groups
    last_rows = [off + ROWS[f] - 1 for f, off in zip(group.features, group.offsets)]
    per_owner = np.bincount(np.asarray(last_rows) % 8, minlength=8)   # interleaved: row r on device r % 8
    cap = exchange.capacity(8 * len(last_rows), 8, 0.25)
    assert (rounds[1], overflow[1]) == (max(-(-per_owner // cap)), 8 * np.maximum(per_owner - cap, 0).sum())
    assert rounds[2] > 1 and overflow[2] > overflow[1]  # the distinct batch overflowed, exactly handled


def _step_collectives(par, batch: int):
    shapes = (((batch, 13), jnp.float32), ((batch, 26), jnp.int32), ((batch,), jnp.float32))
    args = [jax.ShapeDtypeStruct(s, d, sharding=NamedSharding(par.mesh, mesh_lib.spec("batch", len(s))))
            for s, d in shapes]
    return hlo_collectives.collectives(par.train_step.lower(par.abstract_state, *args).compile().as_text())


def test_no_collective_grows_with_the_global_batch():
    per_device, dim = 32, 16
    rows = (4000,) * 26
    totals = {}
    for n in (4, 8):
        cfg = _cfg("embedding.sharding=row", "mesh.data=1", f"mesh.model={n}", f"train.batch_size={per_device * n}",
                   f"model.embed_dim={dim}")
        par = _parallel(cfg, rows, devices=jax.devices()[:n])
        ops = _step_collectives(par, per_device * n)
        dense_bytes = 4 * sum(x.size for x in jax.tree.leaves(par.abstract_state.params))
        own_rows = per_device * 26 * dim * 4             # the device's own [b, F, D] rows, bytes
        for op in ops:
            if op["kind"] == "all-reduce":
                assert op["bytes"] <= dense_bytes + 4096, op   # the dense gradient and scalars
            else:
                assert op["kind"] == "all-to-all", op          # no all-gather, no reduce-scatter
                assert op["bytes"] <= 2 * own_rows, op         # headroom 2 over the own slice
        assert sum(op["bytes"] for op in ops if op["kind"] == "all-to-all") > 2 * own_rows  # rows and grads move
        totals[n] = sum(op["bytes"] for op in ops)
    assert totals[8] <= 1.05 * totals[4], totals
