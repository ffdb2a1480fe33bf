"""Sharded embedding placements on 8 fake CPU devices against the single-device step.

Each placement must give the single-device losses, tables, optimizer state and
dense params (float tolerance) over steps whose batches repeat ids; the
row-sharded step must never all-gather a table and must hold about 1/8 of the
tables per device.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from dlrm_jax import config as C, embedding as E, hlo_collectives, mesh, model as M, parallel, step as St
from dlrm_jax.embedding import placement as PL, sharded
from dlrm_jax.bench import memory_per_device
from dlrm_jax.cli import main
from dlrm_jax.errors import UserError

# 26 tables of few distinct sizes (each distinct shape costs XLA CPU a compile of its init).
ROWS = (6, 300) * 13
B, STEPS = 64, 3


def _cfg(*overrides):
    return C.load_config("tiny", [f"train.batch_size={B}", "embedding.replicate_below_rows=100", *overrides])


def _parallel(cfg, rows=ROWS):
    model, tx = M.from_config(cfg.model), St.dense_optimizer(cfg.train)
    return parallel.parallelize(cfg, model, tx, E.layout_for(rows, cfg.model.embed_dim))


def _batches(rows=ROWS, steps=STEPS, seed=0):
    """Batches whose ids repeat within and across steps (ids < 6 per feature)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(steps):
        ids = np.stack([rng.integers(0, min(r, 6), B) for r in rows], axis=1).astype(np.int32)
        out.append((rng.normal(size=(B, 13)).astype(np.float32), ids, rng.integers(0, 2, B).astype(np.float32)))
    return out


def _run(par, batches):
    state = par.init(0)
    losses = []
    for b in batches:
        state, loss, _ = par.train_step(state, *par.put_batch(b))
        losses.append(float(loss))
    return state, losses


@pytest.fixture(scope="module")
def reference():
    par = _parallel(_cfg("mesh.data=1", "mesh.model=1"))
    assert par.mesh is None  # the plain single-device path
    initial = np.asarray(par.init(0).emb.table)
    state, losses = _run(par, _batches())
    table = np.asarray(state.emb.table)
    assert (np.abs(table - initial).max(axis=1) > 0).sum() > 50  # many rows trained
    return state, losses


@pytest.mark.parametrize("sharding, data, model", [
    ("row", 1, 8), ("table", 2, 4), ("auto", 2, 4), ("replicated", 8, 1)])
def test_sharded_step_matches_single_device(reference, sharding, data, model):
    ref_state, ref_losses = reference
    par = _parallel(_cfg(f"embedding.sharding={sharding}", f"mesh.data={data}", f"mesh.model={model}"))
    assert dict(par.mesh.shape) == {"data": data, "model": model}
    state, losses = _run(par, _batches())
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    table, accum = PL.to_canonical(par.placement, state.emb)
    np.testing.assert_allclose(table, np.asarray(ref_state.emb.table), atol=2e-6)
    np.testing.assert_allclose(accum, np.asarray(ref_state.emb.accum), rtol=1e-4, atol=1e-9)
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(ref_state.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-5)
    # Tables stay where the placement put them: sharded groups split over every device.
    for g, st in zip(par.placement.groups, PL.as_groups(state.emb)):
        assert g.shards in (1, 8)
        want = P(("data", "model"), None) if g.shards > 1 else P(None, None)
        assert st.table.sharding.spec == want and st.table.shape == (g.rows, 8)


def test_placements_split_rows_as_planned():
    row = PL.plan("row", ROWS, 8, 8)
    (g,) = row.groups
    assert g.rows % 8 == 0 and g.rows - sum(ROWS) < 8 and g.offsets[1] == ROWS[0]
    table = PL.plan("table", ROWS, 8, 4)
    (g,) = table.groups
    owners = [(o // g.shard_rows, (o + ROWS[f] - 1) // g.shard_rows) for f, o in zip(g.features, g.offsets)]
    assert all(a == b for a, b in owners)  # every table whole on one device
    assert g.shard_rows <= sum(ROWS) / 4 + max(ROWS)  # greedy: at most one table above an even split
    auto = PL.plan("auto", ROWS, 8, 4, replicate_below_rows=100)
    small, large = auto.groups
    assert small.shards == 1 and all(ROWS[f] < 100 for f in small.features)
    assert large.shards == 4 and all(ROWS[f] >= 100 for f in large.features)
    assert PL.plan("auto", ROWS, 8, 4, replicate_below_rows=10 ** 6).groups[0].shards == 1  # all small
    with pytest.raises(UserError, match="splits 6 table rows over mesh.model=8 devices: fewer rows than devices"):
        PL.plan("row", (3, 3), 8, 8)


def test_ids_of_tables_beyond_int32_are_located_exactly():
    rows = (2_000_000_000, 1_500_000_000, 5)  # 3.5e9 rows: group offsets overflow int32
    (g,) = PL.plan("row", rows, 8, 4).groups
    ids = np.array([[0, 0, 0], [1_999_999_999, 1_499_999_999, 4], [1_234_567_891, 987_654_321, 2]], np.int32)
    shard, local = sharded.locate(jnp.asarray(ids), *sharded.split_offsets(g), g.shard_rows)
    assert shard.dtype == jnp.int32
    want = np.asarray(g.offsets, np.int64) + ids
    np.testing.assert_array_equal(np.asarray(shard, np.int64) * g.shard_rows + np.asarray(local), want)
    assert np.all(np.asarray(local) < g.shard_rows)


def test_row_sharded_step_gathers_no_table_and_holds_an_eighth():
    rows = (4000,) * 13 + (40000,) * 13
    for data, model in ((1, 8), (2, 4)):
        par = _parallel(_cfg("embedding.sharding=row", f"mesh.data={data}", f"mesh.model={model}",
                             "model.embed_dim=16"), rows)
        shapes = (((B, 13), jnp.float32), ((B, 26), jnp.int32), ((B,), jnp.float32))
        batch = [jax.ShapeDtypeStruct(s, d, sharding=jax.sharding.NamedSharding(par.mesh, mesh.spec("batch", len(s))))
                 for s, d in shapes]
        compiled = par.train_step.lower(par.abstract_state, *batch).compile()
        (group,) = par.placement.groups
        assert group.shards == 8  # over every device, data x model: not replicated over `data`
        ops = hlo_collectives.collectives(compiled.as_text())
        assert {op["kind"] for op in ops} == {"all-to-all", "all-reduce"}  # ids, rows, gradients; dense grads
        moved = max(op["bytes"] for op in ops if op["kind"] == "all-to-all")
        assert moved <= 2 * (B // 8) * 26 * 16 * 4  # the device's own rows, headroom 2
        assert moved < group.shard_rows * 16 * 4 / 10  # far below even one shard of the table
        mem = memory_per_device(compiled)
        tables = group.rows * 16 * 4 + group.rows * 4  # table + row-wise accumulator, bytes
        replicated = sum(x.size * 4 for x in jax.tree.leaves((par.abstract_state.params,
                                                               par.abstract_state.opt_state)))
        assert tables / 8 < mem["argument"] < tables / 8 + replicated + 10_000
        assert mem["temp"] < tables / 8
        # Created sharded: XLA draws each table's rows split over the devices (then an
        # all-to-all into the placement's blocks), ~2 shards of scratch, never a whole table.
        init = memory_per_device(par.init.lower(0).compile())
        assert init["output"] < tables / 8 + replicated + 10_000 and init["temp"] < 3 * tables / 8


def test_mesh_shapes_and_errors():
    assert mesh.mesh_shape(C.MeshConfig(-1, 4), 8) == (2, 4)
    assert mesh.mesh_shape(C.MeshConfig(2, -1), 8) == (2, 4)
    with pytest.raises(UserError, match="mesh.model=3 does not divide the 8 devices"):
        mesh.mesh_shape(C.MeshConfig(-1, 3), 8)
    with pytest.raises(UserError, match="mesh.data=4 x mesh.model=4 needs 16 devices; 8 are available"):
        mesh.mesh_shape(C.MeshConfig(4, 4), 8)
    with pytest.raises(UserError, match="train.batch_size=60 is not divisible by the 8 devices"):
        _parallel(_cfg("train.batch_size=60", "mesh.model=8"))


@pytest.mark.parametrize("overrides, message", [
    (["mesh.model=3"], "mesh.model=3 does not divide the 8 devices"),
    (["mesh.data=2", "mesh.model=8"], "mesh.data=2 x mesh.model=8 needs 16 devices; 8 are available"),
    (["train.batch_size=100", "mesh.model=8"], "train.batch_size=100 is not divisible by the 8 devices"),
])
def test_cli_refuses_a_mesh_that_cannot_work(overrides, message, tmp_path, capsys, monkeypatch):
    compiled = []
    monkeypatch.setattr(jax, "jit", lambda *a, **k: compiled.append(a) or pytest.fail("compiled"))
    args = [x for o in overrides for x in ("--set", o)]
    assert main(["train", "--preset", "tiny", *args, "--out", str(tmp_path / "r"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and not compiled
