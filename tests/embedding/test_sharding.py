"""Sharded embedding placements on 8 fake CPU devices against the single-device step.

Each placement must give the single-device losses, tables, optimizer state and
dense params (float tolerance) over steps whose ids cover whole tables, sit on
both sides of every shard boundary of every placement tested, and repeat; the
row-sharded step must never all-gather a table and must hold about 1/8 of the
tables per device.  `sharded.locate` must equal an int64 divmod of offset + id.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from dlrm_jax import config as C, embedding as E, step as St
from dlrm_jax.cli import main
from dlrm_jax.compile import hlo_collectives
from dlrm_jax.compile.memory import memory_per_device
from dlrm_jax.embedding import placement as PL, sharded
from dlrm_jax.errors import UserError
from dlrm_jax.model import dlrm as M
from dlrm_jax.parallel import mesh, steps as parallel
from tests.embedding.same_state import assert_same_state

# 26 tables of few distinct sizes (each distinct shape costs XLA CPU a compile of its init).
ROWS = (6, 300) * 13
B, STEPS = 64, 3
# (placement, mesh.data, mesh.model): every placement, on the meshes the step test runs.
CASES = [("row", 1, 8), ("table", 2, 4), ("auto", 2, 4), ("replicated", 8, 1)]
REPLICATE_BELOW = 100


def _cfg(*overrides):
    return C.load_config("tiny", [f"train.batch_size={B}", f"embedding.replicate_below_rows={REPLICATE_BELOW}",
                                  *overrides])


def _parallel(cfg, rows=ROWS):
    model, tx = M.from_config(cfg.model), St.dense_optimizer(cfg.train)
    return parallel.parallelize(cfg, model, tx, E.layout_for(rows, cfg.model.embed_dim))


def _boundary_ids(placement: PL.Placement) -> list[tuple[int, int]]:
    """(feature, id) of the rows on both sides of every shard boundary (k S - 1, k S) of
    the placement's sharded groups; padding rows (no feature) are left out."""
    out = set()
    for g in placement.groups:
        for k in range(1, g.shards):
            for row in (k * g.shard_rows - 1, k * g.shard_rows):
                out.update((f, row - off) for f, off in zip(g.features, g.offsets)
                           if off <= row < off + placement.feature_rows[f])
    return sorted(out)


def _all_boundary_ids(rows=ROWS) -> dict[int, list[int]]:
    """feature -> boundary ids of every placement in CASES."""
    out = {}
    for kind, data, model in CASES:  # sharded groups span every device of the mesh
        for f, i in _boundary_ids(PL.plan(kind, rows, 8, data * model, REPLICATE_BELOW)):
            out.setdefault(f, set()).add(i)
    return {f: sorted(v) for f, v in out.items()}


def _batches(rows=ROWS, steps=STEPS, seed=0):
    """Ids drawn over whole tables (step 1: ids < 6, so ids repeat and crowd onto few
    shards), plus every placement's boundary rows twice per step (at random positions)."""
    rng = np.random.default_rng(seed)
    edges = _all_boundary_ids(rows)
    out = []
    for step in range(steps):
        high = np.minimum(rows, 6) if step == 1 else np.asarray(rows)
        ids = rng.integers(0, high, size=(B, len(rows))).astype(np.int32)
        for f, e in edges.items():
            ids[rng.permutation(B)[:2 * len(e)], f] = np.repeat(e, 2)
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


@pytest.mark.parametrize("sharding, data, model", CASES)
def test_sharded_step_matches_single_device(reference, sharding, data, model):
    ref_state, ref_losses = reference
    par = _parallel(_cfg(f"embedding.sharding={sharding}", f"mesh.data={data}", f"mesh.model={model}"))
    assert dict(par.mesh.shape) == {"data": data, "model": model}
    batches = _batches()
    # The batches hold this placement's boundary rows (its shard layout is the one planned).
    edges = _boundary_ids(par.placement)
    assert edges or sharding == "replicated"
    for f, i in edges:
        assert all((ids[:, f] == i).sum() >= 2 for _, ids, _ in batches), (f, i)
    state, losses = _run(par, batches)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    assert_same_state(par.placement, state, ref_state)
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


@pytest.mark.parametrize("shards", [4, 7])
def test_ids_of_tables_beyond_int32_are_located_exactly(shards):
    """Against an int64 divmod of offset + id: every shard boundary, every table's first
    and last row, and a few thousand random ids per table."""
    rows = (2_000_000_000, 1_500_000_000, 5, 123_456_789)  # 3.6e9 rows: group offsets overflow int32
    (g,) = PL.plan("row", rows, 8, shards).groups
    s = g.shard_rows
    assert g.features == (0, 1, 2, 3) and 2 * s < 2 ** 31
    rng = np.random.default_rng(shards)
    cols = []
    for f, off in zip(g.features, g.offsets):
        edges = [r - off for k in range(1, shards) for r in (k * s - 1, k * s) if 0 <= r - off < rows[f]]
        cols.append(np.concatenate([edges, [0, rows[f] - 1], rng.integers(0, rows[f], 3000)]))
    n = 3100  # one shape for every case: the eager ops compile once
    ids = np.stack([np.concatenate([c, rng.integers(0, r, n - len(c))]) for c, r in zip(cols, rows)], axis=1)
    assert sum(len(c) - 3002 for c in cols) == 2 * (shards - 1)  # every boundary, both sides, in some table
    shard, local = sharded.locate(jnp.asarray(ids, jnp.int32), *sharded.split_offsets(g), s)
    assert shard.dtype == local.dtype == jnp.int32
    want_shard, want_local = np.divmod(np.asarray(g.offsets, np.int64) + ids.astype(np.int64), s)
    np.testing.assert_array_equal(np.asarray(shard), want_shard)
    np.testing.assert_array_equal(np.asarray(local), want_local)


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
