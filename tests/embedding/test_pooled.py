"""The pooled exchange of multi-hot bags (embedding/pooled.py) on 8 fake CPU devices.

* the exchange alone: pooled lookups equal a numpy weighted sum of the bags' rows,
  updates equal the single-device sparse optimizer on each entry's weight x its
  bag's gradient, for bags with ids repeated within and across bags, worst skew
  (every id on one owner) and capacity overflow, with the rounds counted;
* the whole train step, sum and mean pooling: several steps give the
  single-device losses, tables, optimizer state and dense params;
* the compiled step: its all-to-all bytes are those the capacities give, are
  bounded by one pooled vector per bag and owner, and do not grow with the ids
  per example as the per-id exchange's do.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from dlrm_jax import config as C, embedding as E, step as St
from dlrm_jax.compile import hlo_collectives
from dlrm_jax.embedding import exchange, optimizers, placement as PL, pooled
from dlrm_jax.model import dlrm as M
from dlrm_jax.parallel import mesh as mesh_lib, steps as parallel
from tests.embedding.same_state import assert_same_state

N, S, D = 8, 36, 4          # devices, rows per device (contiguous blocks here), embed dim
b, SIZES = 6, (3, 1, 4)     # examples per device, bag sizes of the F = 3 features
K, F = sum(SIZES), len(SIZES)
FEATURE = np.repeat(np.arange(F), SIZES)   # feature of each id column
AXES = mesh_lib.axis("table_rows")


def _exchange_fn(ce: int, cu: int, optimizer: str):
    mesh = jax.make_mesh((2, 4), mesh_lib.AXES, axis_types=(jax.sharding.AxisType.Auto,) * 2)

    def body(table, accum, ids, weights, grads):
        owner, row = ids // S, ids % S
        bag = jnp.arange(b, dtype=jnp.int32)[:, None] * F + jnp.asarray(FEATURE, jnp.int32)[None, :]
        out, s1 = pooled.lookup(table, owner, row, bag, weights, b * F, N, ce, cu, AXES)
        apply = lambda st, r, g: optimizers.sparse_update(st, r, g, optimizer, 0.5)  # noqa: E731
        st, s2 = pooled.update(apply, E.EmbeddingState(table, accum), owner, row, bag, weights,
                               grads.reshape(b * F, D), N, S, ce, cu, AXES)
        return (out.reshape(b, F, D), st.table, st.accum,
                jnp.stack([s1.rounds, s1.overflow_ids, s2.rounds, s2.overflow_ids]))

    f = jax.shard_map(body, mesh=mesh, in_specs=(P(AXES),) * 5, out_specs=(P(AXES), P(AXES), P(AXES), P()),
                      check_vma=False)
    return jax.jit(f)


def _bag_ids(kind: str, rng) -> np.ndarray:
    """Global rows [N b, K]; feature f's ids are the rows = f (mod 3), as tables of disjoint rows."""
    if kind == "skew":       # worst skew: every example's bag of feature f is row 2 S + f, all on owner 2
        return np.tile(2 * S + FEATURE, (N * b, 1))
    if kind == "overflow":   # many distinct rows, all on owner 2
        return 2 * S + FEATURE + 3 * rng.integers(0, S // 3, (N * b, K))
    ids = FEATURE + 3 * rng.integers(0, N * S // 3, (N * b, K))
    ids[:, 1] = ids[:, 0]                               # an id repeated within a bag
    ids[::2, 3] = ids[1::2, 3]                          # and across examples
    return ids


# The least capacities the windows allow (b): worst skew and overflow take several rounds, bounded
# by the entries and units alike, or by the units alone when every entry fits.
@pytest.mark.parametrize("ce, cu, optimizer", [(b, b, "rowwise_adagrad"), (b * K, b, "adagrad")])
def test_pooled_exchange_equals_weighted_bag_sums_and_the_single_device_update(ce, cu, optimizer):
    rng = np.random.default_rng(0)
    table = rng.normal(size=(N * S, D)).astype(np.float32)
    accum0 = np.full(E.accum_shape(optimizer, N * S, D), 0.1, np.float32)
    f = _exchange_fn(ce, cu, optimizer)
    for kind in ("random", "skew", "overflow"):
        ids = _bag_ids(kind, rng)
        weights = rng.uniform(0.5, 1.5, (N * b, K)).astype(np.float32)   # per-entry weights
        grads = rng.normal(size=(N * b, F, D)).astype(np.float32)           # of the pooled bags
        out, new_table, new_accum, stats = f(table, accum0, jnp.asarray(ids, jnp.int32), weights, grads)
        want = np.zeros((N * b, F, D), np.float32)
        for k in range(K):
            want[:, FEATURE[k]] += weights[:, k, None] * table[ids[:, k]]
        np.testing.assert_allclose(np.asarray(out), want, rtol=1e-5, atol=1e-6)
        entry_grads = weights[:, :, None] * grads[:, FEATURE]
        ref = optimizers.sparse_update(E.EmbeddingState(jnp.asarray(table), jnp.asarray(accum0)),
                                       jnp.asarray(ids, jnp.int32), jnp.asarray(entry_grads), optimizer, 0.5)
        np.testing.assert_allclose(np.asarray(new_table), np.asarray(ref.table), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(np.asarray(new_accum), np.asarray(ref.accum), rtol=1e-5)
        rounds, overflow = int(stats[2]), int(stats[3])
        assert list(np.asarray(stats[:2])) == [rounds, overflow]   # lookup and update route alike
        if kind == "random":
            assert rounds >= 1
        if kind == "skew":
            # Per device: 3 rows on owner 2, each in all 6 bags of its feature: one row (6 entries, 6 units)
            # per round, 12 entries late per device.
            assert (rounds, overflow) == (3, N * 12)
        if kind == "overflow":
            assert rounds > 3 and overflow > 0


def test_capacities_follow_the_bag_sizes_and_never_fall_below_the_examples():
    ce, cu = pooled.capacities(1024, (100, 100), 64)
    mu = 2 * 1024 * (1 - (63 / 64) ** 100)              # a bag of 100 touches ~51 of 64 owners
    assert cu == int(np.ceil(mu + 6 * np.sqrt(mu)))
    assert ce == int(np.ceil(3200 + 6 * np.sqrt(3200)))  # 1024 x 200 / 64 entries
    assert pooled.capacities(1024, (100,), 64)[1] == 1024  # at least b: a row's entries fit one round
    assert pooled.capacities(4, (1, 1), 64) == (4, 4)
    assert pooled.capacities(2, (1,), 8) == (2, 2)         # at most every entry to one owner
    # One-hot bags: no two ids share a bag, and the floor of b makes pooling dearer than per-id rows
    # (auto keeps those); bags of 100 over 64 owners: pooling moves less than half.
    rows = 2 * 64 * exchange.capacity(1024 * 26, 64) * (4 + 512)
    assert pooled.bytes_per_step(1024, (1,) * 26, 64, 128) > rows
    rows = 2 * 64 * exchange.capacity(1024 * 100, 64) * (4 + 512)
    assert pooled.bytes_per_step(1024, (100,), 64, 128) < 0.5 * rows


# ---------------------------------------------------------------------------- the train step

ROWS = (6, 300) * 13                       # 13 replicated tables (< 100 rows), 13 sharded
BAG_SIZES = (3, 1, 2, 4) * 6 + (2, 5)      # 66 id columns
B = 64


def _cfg(*overrides):
    return C.load_config("tiny", [f"train.batch_size={B}", "embedding.replicate_below_rows=100",
                                  "model.multi_hot=" + ",".join(map(str, BAG_SIZES)), *overrides])


def _parallel(cfg, rows=ROWS, devices=None):
    model, tx = M.from_config(cfg.model), St.dense_optimizer(cfg.train)
    return parallel.parallelize(cfg, model, tx, E.layout_for(rows, cfg.model.embed_dim), devices=devices)


def _batches(group: PL.TableGroup):
    """Ordinary bags (ids < 6: repeats within and across bags), worst skew (every sharded id on
    device 0), many distinct ids all on device 0, ordinary again."""
    rng = np.random.default_rng(1)
    columns = np.repeat(np.arange(26), BAG_SIZES)
    offset = {f: off for f, off in zip(group.features, group.offsets)}
    # Interleaved rows: feature f's id i is on device (offset_f + i) % 8; (-offset_f) % 8 + 8 j is on device 0.
    zero = np.array([(-offset.get(f, 0)) % 8 for f in columns])
    sharded = np.array([f in offset for f in columns])
    ordinary = rng.integers(0, 6, (B, len(columns)))
    skew = np.where(sharded, zero, 0)[None].repeat(B, 0)
    distinct = np.where(sharded, zero + 8 * rng.integers(0, 300 // 8, (B, len(columns))), rng.integers(0, 6, 1))
    out = []
    for ids in (ordinary, skew, distinct, ordinary):
        out.append((rng.normal(size=(B, 13)).astype(np.float32), ids.astype(np.int32),
                    rng.integers(0, 2, B).astype(np.float32)))
    return out


@pytest.mark.parametrize("mode", ["sum", "mean"])
def test_pooled_train_steps_match_single_device(mode):
    ref = _parallel(_cfg("mesh.data=1", "mesh.model=1", f"model.multi_hot_pooling={mode}"))
    par = _parallel(_cfg("embedding.sharding=auto", "mesh.data=2", "mesh.model=4", "embedding.bag_exchange=pooled",
                         f"model.multi_hot_pooling={mode}"))
    assert [g.shards for g in par.placement.groups] == [1, 8]
    assert par.backend.exchange_mode(1, B) == "pooled" and par.backend.exchange_mode(0, B) == "replicated"
    batches = _batches(par.placement.groups[1])
    state, st = ref.init(0), par.init(0)
    ref_losses, losses, rounds, overflow = [], [], [], []
    for bt in batches:
        state, loss, _ = ref.train_step(state, *bt)
        ref_losses.append(float(loss))
        st, loss, stats = par.train_step(st, *par.put_batch(bt))
        losses.append(float(loss))
        rounds.append(int(stats["exchange_rounds"]))
        overflow.append(int(stats["exchange_overflow_ids"]))
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    assert_same_state(par.placement, st, state)
    # Worst skew: each device's 8 x 13 sharded bags all on device 0 with Cu < 104: more rounds, counted.
    assert rounds[0] == 1 and overflow[0] == 0
    assert rounds[1] > 1 and overflow[1] > 0 and rounds[2] > 1 and overflow[2] > 0
    logits = par.predict(st.params, st.emb.table, *batches[0][:2])
    want = ref.predict(state.params, state.emb.table, *batches[0][:2])
    np.testing.assert_allclose(np.asarray(logits), np.asarray(want), rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------- the compiled step

def _all_to_all_bytes(cfg, rows):
    par = _parallel(cfg, rows)
    k = sum(cfg.model.multi_hot) if isinstance(cfg.model.multi_hot, tuple) else 26 * cfg.model.multi_hot
    shapes = (((B, 13), jnp.float32), ((B, k), jnp.int32), ((B,), jnp.float32))
    args = [jax.ShapeDtypeStruct(s, d, sharding=NamedSharding(par.mesh, mesh_lib.spec("batch", len(s))))
            for s, d in shapes]
    ops = hlo_collectives.collectives(par.train_step.lower(par.abstract_state, *args).compile().as_text())
    return sum(op["bytes"] for op in ops if op["kind"] == "all-to-all"), par


def test_pooled_step_bytes_are_bounded_by_bags_not_by_ids():
    dim, rows = 32, (4000,) * 26
    got = {}
    for k in (4, 32):
        cfg = _cfg("embedding.sharding=row", "mesh.data=1", "mesh.model=8", f"model.multi_hot={k}",
                   f"model.embed_dim={dim}")
        got[k], par = _all_to_all_bytes(cfg, rows)
        assert par.backend.exchange_mode(0, B) == "pooled"       # auto: it moves fewer bytes than per-id rows
        per_device = B // 8
        # Exactly the capacities' buffers (one round in the HLO), both ways.
        assert got[k] == pooled.bytes_per_step(per_device, (k,) * 26, 8, dim)
        pooled_bound = per_device * 26 * 2 * dim * 4               # one pooled vector per bag, both ways
        ce, cu = pooled.capacities(per_device, (k,) * 26, 8)
        entries = 2 * 8 * ce * 12                                  # (row, unit, weight) per entry, both ways
        assert got[k] - entries <= 8 * pooled_bound                # at most one vector per bag and owner
        per_id = 2 * 8 * exchange.capacity(per_device * 26 * k, 8) * (4 + 4 * dim)
        assert got[k] < per_id
    # 8x the ids per example: the per-id exchange moves 8x, the pooled one under 3x.
    assert got[32] < 3 * got[4]
