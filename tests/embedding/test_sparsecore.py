"""The SparseCore backend (embedding.backend=sparsecore, jax-tpu-embedding).

Everywhere (CI: Python 3.11, no library): the layout arithmetic against an
independent statement of MOD sharding, checkpoint conversion SparseCore <->
TensorCore through the Checkpointer, and the exit-2 errors.  Where the
library is installed (Python >= 3.12, `pip install -e '.[sparsecore]'`): the
config -> spec translation, our stacking against the library's, host
preprocessing of a worst-skew batch, and one small ahead-of-time compile for a
v5p slice (libtpu describes it on a CPU host).  On a TPU with SparseCores
(`-m tpu`): the fused update's numerics against the single-device step.
"""
import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlrm_jax.cli import main
from dlrm_jax.config import load_config
from dlrm_jax.embedding import placement as placement_lib, tables as emb_lib
from dlrm_jax.embedding.sparsecore import conversion as layout_conversion, layout as sparsecore_layout
from dlrm_jax.errors import UserError
from dlrm_jax.run.checkpoint import Checkpointer
from dlrm_jax.step import TrainState

HAS_LIBRARY = importlib.util.find_spec("jax_tpu_embedding") is not None
needs_library = pytest.mark.skipif(not HAS_LIBRARY, reason="jax-tpu-embedding is not installed (Python >= 3.12: "
                                                           "pip install -e '.[sparsecore]')")

ROWS = [300, 17, 1000, 5, 40]
DIM = 8


def _layout(shards=8, optimizer="adagrad"):
    """A SparseCore layout as `describe()` writes it: features 0, 2 in one stack, 4 in another,
    1 and 3 on the TensorCore; offsets and rotations as the library's stacking makes them."""
    def table(f, off, rot):
        return {"feature": f, "rows": ROWS[f], "padded_rows": -(-ROWS[f] // (8 * shards)) * 8 * shards,
                "row_offset_in_shard": off, "shard_rotation": rot}
    a = [table(0, 0, 0)]
    a.append(table(2, a[0]["padded_rows"] // shards, 3))
    b = [table(4, 0, 5)]
    stack = lambda name, ts: {"name": name, "dim": DIM, "tables": ts,                      # noqa: E731
                              "rows": sum(t["padded_rows"] for t in ts)}
    return {"kind": "sparsecore", "feature_rows": ROWS, "dim": DIM, "shards": shards, "optimizer": optimizer,
            "stacks": [stack("s0", a), stack("s1", b)], "tensorcore": {"features": [1, 3], "offsets": [0, 17]}}


def _canonical(seed=0, optimizer="adagrad"):
    rng = np.random.default_rng(seed)
    table = rng.normal(size=(sum(ROWS), DIM)).astype(np.float32)
    accum = {"sgd": np.zeros((0,), np.float32), "adagrad": rng.random((sum(ROWS), DIM)).astype(np.float32),
             "rowwise_adagrad": rng.random(sum(ROWS)).astype(np.float32)}[optimizer]
    return table, accum


# --------------------------------------------------------------------------- layout (no library)

def test_mod_sharding_puts_each_id_where_the_library_documents():
    """id r of a table lives on shard (r % K + rotation) % K, row offset + r // K of it."""
    layout, (table, accum) = _layout(), _canonical()
    k = layout["shards"]
    sc_table, _ = sparsecore_layout.from_canonical(layout, table, accum)
    offsets = np.concatenate([[0], np.cumsum(ROWS)[:-1]])
    for stack in layout["stacks"]:
        shards = sc_table["sparsecore"][stack["name"]].reshape(k, stack["rows"] // k, DIM)
        for t in stack["tables"]:
            for r in (0, 1, k - 1, k, t["rows"] - 1):
                shard = (r % k + t["shard_rotation"]) % k
                np.testing.assert_array_equal(shards[shard, t["row_offset_in_shard"] + r // k],
                                              table[offsets[t["feature"]] + r])
    np.testing.assert_array_equal(sc_table["tensorcore"], np.concatenate([table[300:317], table[1317:1322]]))


@pytest.mark.parametrize("optimizer", ["sgd", "adagrad"])
def test_layout_round_trip(optimizer):
    layout, (table, accum) = _layout(optimizer=optimizer), _canonical(1, optimizer)
    t, a = sparsecore_layout.from_canonical(layout, table, accum)
    back_t, back_a = sparsecore_layout.to_canonical(layout, t, a)
    np.testing.assert_array_equal(back_t, table)
    np.testing.assert_array_equal(back_a, accum)
    # the backend's init stacks with jax.numpy inside jit: the same arrays
    jt, ja = jax.jit(lambda x, y: sparsecore_layout.from_canonical(layout, x, y, xp=jnp))(table, accum)
    for x, y in zip(jax.tree.leaves((jt, ja)), jax.tree.leaves((t, a))):
        np.testing.assert_array_equal(x, y)


def test_sparsecore_stacks_convert_to_another_shard_count_and_to_placement_groups():
    table, accum = _canonical(2)
    src, dst = _layout(shards=8), _layout(shards=16)
    for s in dst["stacks"]:   # the same tables, stacked for 16 shards
        offset = 0
        for t in s["tables"]:
            t["padded_rows"] = -(-t["rows"] // 128) * 128
            t["row_offset_in_shard"], offset = offset, offset + t["padded_rows"] // 16
        s["rows"] = sum(t["padded_rows"] for t in s["tables"])
    emb = emb_lib.EmbeddingState(*sparsecore_layout.from_canonical(src, table, accum))
    moved = layout_conversion.convert(src, dst, emb, "adagrad")
    np.testing.assert_array_equal(sparsecore_layout.to_canonical(dst, moved.table, moved.accum)[0], table)
    for kind in ("table", "row", "auto"):   # row and auto groups may be interleaved (row_map "modulo")
        pl = placement_lib.plan(kind, ROWS, DIM, 4, 20)
        groups = pl.describe()
        grouped = layout_conversion.convert(src, groups, emb, "adagrad")
        t, a = placement_lib.to_canonical(pl, grouped)   # the placement's own reading of its layout
        np.testing.assert_array_equal(t, table)
        np.testing.assert_array_equal(a, accum)
        back = layout_conversion.convert(groups, src, grouped, "adagrad")
        for x, y in zip(jax.tree.leaves(back), jax.tree.leaves(emb)):
            np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("optimizer", ["sgd", "adagrad"])
def test_checkpoint_restores_across_sparsecore_and_tensorcore_layouts(tmp_path, optimizer):
    """A SparseCore checkpoint restores into the single-device layout, and a single-device one back."""
    table, accum = _canonical(3, optimizer)
    sc_layout = _layout(optimizer=optimizer)
    tc_layout = placement_lib.plan("replicated", ROWS, DIM, 1).describe()
    params = {"w": jnp.arange(6.0).reshape(2, 3)}

    def state(emb):
        return TrainState(step=jnp.asarray(7, jnp.int32), params=params, opt_state=(params,), emb=emb)

    sc_emb = emb_lib.EmbeddingState(*jax.tree.map(jnp.asarray, sparsecore_layout.from_canonical(sc_layout, table,
                                                                                                  accum)))
    ckpt = Checkpointer(tmp_path / "sc")
    ckpt.save(7, state(sc_emb), layout=sc_layout)
    tc_like = state(emb_lib.EmbeddingState(table=jnp.zeros_like(table), accum=jnp.zeros_like(accum)))
    restored = ckpt.restore(7, tc_like, layout=tc_layout)
    np.testing.assert_array_equal(restored.emb.table, table)
    np.testing.assert_array_equal(restored.emb.accum, accum)
    np.testing.assert_array_equal(restored.params["w"], params["w"]) and int(restored.step) == 7
    ckpt.close()

    ckpt = Checkpointer(tmp_path / "sc")   # a SparseCore run resuming on the same SparseCores
    same = ckpt.restore(7, state(jax.tree.map(jnp.zeros_like, sc_emb)), layout=sc_layout)
    for x, y in zip(jax.tree.leaves(same.emb), jax.tree.leaves(sc_emb)):
        np.testing.assert_array_equal(x, y)
    ckpt.close()

    ckpt = Checkpointer(tmp_path / "tc")
    ckpt.save(7, state(emb_lib.EmbeddingState(table=jnp.asarray(table), accum=jnp.asarray(accum))), layout=tc_layout)
    back = ckpt.restore(7, state(jax.tree.map(jnp.zeros_like, sc_emb)), layout=sc_layout)
    for x, y in zip(jax.tree.leaves(back.emb), jax.tree.leaves(sc_emb)):
        np.testing.assert_array_equal(x, y)
    ckpt.close()


def test_sparsecore_ops_reads_calls_from_compiled_hlo():
    """Lines as libtpu 0.0.50 prints them: SparseCore calls are call-starts on the "sparsecore" thread."""
    from dlrm_jax.compile.sparsecore import sparsecore_ops
    call = ('  %sparse-core-call.{i}.call-start = ((), (), (s32[1]{{0}})) call-start(), async_execution_thread='
            '"sparsecore", to_apply=%c.{i}, metadata={{op_name="jit(train_step)/shard_map/{op}" stack_frame_id=1}}')
    hlo = "\n".join([
        call.format(i=1, op="tpu_sparse_dense_matmul/sparse_dense_matmul_csr"),
        call.format(i=2, op="tpu_sparse_dense_matmul_grad/sparse_dense_matmul_optimizer_grad_primitive"),
        call.format(i=3, op="tpu_sparse_dense_matmul_grad/sparse_dense_matmul_optimizer_grad_primitive"),
        '  %custom-call.4.call-start = (s32[8]) call-start(%p), async_execution_thread="sparsecore", to_apply=%c.4',
        '  %gather_offload_custom_fusion.25.cloned.1.call-start = ((f32[64,8], s32[16]), f32[16,8], u32[]) '
        'call-start(%a, %b), async_execution_thread="sparsecore", to_apply=%c.18, '
        'metadata={op_name="jit(train_step)/shard_map/while/body/jit(_take)/gather" stack_frame_id=221}',
        '  %scatter_offload_async_start.3 = (s32[64]) call-start(%a), async_execution_thread="sparsecore", '
        'to_apply=%c.9',
        '  %copy.242.cloned.1.call-start = ((s32[64]), s32[64], u32[]) call-start(%p), '
        'async_execution_thread="sparsecore", to_apply=%c.12',
        '  %x = f32[8]{0} call-start(%p), async_execution_thread="main", to_apply=%c.5',
        '  %g = f32[4096,16] custom-call(%a, %b), custom_call_target="SparseGather", backend_config={}',
        '  %t = f32[16] custom-call(%a), custom_call_target="AllToAllDynamic"',
        '  %o = f32[16] custom-call(%a), custom_call_target="Sharding"',
    ])
    ops = sparsecore_ops(hlo)
    assert ops["sparsecore_calls"] == 7 and ops["sparsecore_library_calls"] == 3
    assert ops["sparsecore_calls_by_op"] == {"tpu_sparse_dense_matmul": 1, "tpu_sparse_dense_matmul_grad": 2,
                                             "other": 4}
    # libtpu's own calls, by what it offloaded onto the SparseCores
    assert ops["sparsecore_offloads"] == {"other": 1, "gather": 1, "scatter": 1, "copy": 1}
    assert ops["sparsecore_custom_calls"] == {"AllToAllDynamic": 1, "SparseGather": 1}


# --------------------------------------------------------------------------- errors (no library)

def test_rowwise_adagrad_with_sparsecore_is_a_config_error():
    with pytest.raises(UserError, match="embedding.optimizer=rowwise_adagrad is not supported by "
                                        "embedding.backend=sparsecore; it supports: sgd, adagrad"):
        load_config("tiny", ["embedding.backend=sparsecore"])
    with pytest.raises(UserError, match="embedding.backend"):
        load_config("tiny", ["embedding.backend=gpu"])


@pytest.mark.parametrize("optimizer", ["adagrad_torch", "rowwise_adagrad_torch"])
def test_torch_adagrad_with_sparsecore_is_a_config_error(optimizer):
    """They used to fall through to the element-wise g / sqrt(acc + eps) update there."""
    with pytest.raises(UserError, match=f"embedding.optimizer={optimizer} is not supported by "
                                        f"embedding.backend=sparsecore; it supports: sgd, adagrad"):
        load_config("tiny", ["embedding.backend=sparsecore", f"embedding.optimizer={optimizer}"])
    for ok in ("sgd", "adagrad"):
        load_config("tiny", ["embedding.backend=sparsecore", f"embedding.optimizer={ok}"])


def test_sparsecore_on_cpu_exits_2_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "r"
    code = main(["train", "--preset", "tiny", "--set", "embedding.backend=sparsecore", "--set",
                 "embedding.optimizer=adagrad", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "needs TPU SparseCores" in err and "cpu" in err, err
    assert not (out / "config.json").exists()


class _Device:
    def __init__(self, kind):
        self.device_kind, self.platform = kind, "tpu"


def test_sparsecore_counts_and_devices_without_them(monkeypatch):
    from dlrm_jax.embedding.sparsecore import backend as sparsecore
    assert [sparsecore.sparsecores_per_device(_Device(k)) for k in ("TPU v5", "TPU v6 lite", "TPU7x")] == [4, 2, 2]
    for kind in ("TPU v5 lite", "TPU v4", "NVIDIA H200"):
        with pytest.raises(UserError, match="have none"):
            sparsecore.sparsecores_per_device(_Device(kind))
    monkeypatch.setattr(sparsecore, "library_available", lambda: False)
    with pytest.raises(UserError, match="needs jax-tpu-embedding, which is not installed"):
        sparsecore.require_library()


# --------------------------------------------------------------------------- with the library

def _tiny_cfg(optimizer="adagrad", batch=256):
    return load_config("tiny", ["embedding.backend=sparsecore", f"embedding.optimizer={optimizer}",
                                "embedding.learning_rate=0.07", "embedding.initial_accumulator=0.5",
                                "embedding.tensorcore_below_rows=100", f"train.batch_size={batch}",
                                f"model.embed_dim={DIM}"])


@needs_library
@pytest.mark.parametrize("optimizer", ["sgd", "adagrad"])
def test_config_to_specs(optimizer):
    from jax_tpu_embedding.sparsecore.lib.nn import embedding_spec

    from dlrm_jax.embedding.sparsecore import backend as sparsecore
    cfg = _tiny_cfg(optimizer).replace(**{"embedding.eps": 0.01})
    sc, tc = sparsecore.split_features(ROWS, cfg.embedding.tensorcore_below_rows)
    assert (sc, tc) == ((0, 2), (1, 3, 4))
    specs = sparsecore.feature_specs(ROWS, DIM, cfg.embedding, 256, devices=4, sparsecores=4, features=sc)
    assert sorted(specs) == ["f00", "f02"]
    for f in sc:
        fs = specs[sparsecore.feature_name(f)]
        t, st = fs.table_spec, fs.table_spec.stacked_table_spec
        assert (t.vocabulary_size, t.embedding_dim, fs.input_shape, fs.output_shape) == (ROWS[f], DIM, (256, 1),
                                                                                         (256, DIM))
        assert float(t.optimizer.get_learning_rate()) == pytest.approx(0.07)
        padded = t.setting_in_stack.padded_vocab_size
        assert padded % (8 * 16) == 0 and ROWS[f] <= padded < ROWS[f] + 8 * 16
        # never drop ids: limits are all of a SparseCore's ids of the stack (256 / 16 SparseCores x 2 features)
        assert st.max_ids_per_partition == st.max_unique_ids_per_partition == 256 * 2 // 16
        if optimizer == "sgd":
            assert isinstance(t.optimizer, embedding_spec.SGDOptimizerSpec)
        else:
            assert isinstance(t.optimizer, embedding_spec.CustomOptimizerSpec)
            (init,) = t.optimizer.slot_variables_initializers()
            assert float(init(jax.random.PRNGKey(0), (1,))[0]) == 0.5
            # the SparseCore's per-row update is optimizers.py's Adagrad, eps and zero-accumulator rows included
            fn = t.optimizer.custom_computation_fn
            g = jnp.array([[0.5, 0.0, -2.0]])
            new_w, new_a = fn(g, jnp.ones((1, 3)), jnp.array([[0.0, 0.0, 1.0]]), 0.07)
            np.testing.assert_allclose(new_a, [[0.25, 0.0, 5.0]])
            np.testing.assert_allclose(new_w, [[1 - 0.07 * 0.5 / np.sqrt(0.25 + 0.01), 1.0,
                                                1 + 0.07 * 2 / np.sqrt(5 + 0.01)]], rtol=1e-6)


@needs_library
def test_our_stacking_equals_the_librarys():
    from jax_tpu_embedding.sparsecore.lib.nn import embedding, table_stacking

    from dlrm_jax.embedding.sparsecore import backend as sparsecore
    cfg = _tiny_cfg()
    rows = [5000, 17, 9000, 5, 4000]
    sc, tc = sparsecore.split_features(rows, 100)
    specs = sparsecore.feature_specs(rows, DIM, cfg.embedding, 256, devices=4, sparsecores=4, features=sc)
    layout = sparsecore.describe_specs(specs, rows, DIM, 16, "adagrad", tc)
    table = np.random.default_rng(4).normal(size=(sum(rows), DIM)).astype(np.float32)
    accum = np.abs(table)
    ours, _ = sparsecore_layout.from_canonical(layout, table, accum)
    offsets = np.concatenate([[0], np.cumsum(rows)[:-1]])
    table_specs = embedding.get_table_specs(specs)
    values = {name: table[offsets[int(name[1:])]:offsets[int(name[1:])] + rows[int(name[1:])]] for name in table_specs}
    theirs = table_stacking.stack_and_shard_tables(table_specs, values, 16, pad_value=0.0)
    assert sorted(theirs) == sorted(ours["sparsecore"])
    for name, arr in theirs.items():
        np.testing.assert_array_equal(np.asarray(arr).reshape(-1, DIM), ours["sparsecore"][name])
    unstacked = table_stacking.unshard_and_unstack_tables(table_specs, {k: jnp.asarray(v) for k, v in
                                                                       ours["sparsecore"].items()}, 16)
    back, _ = sparsecore_layout.to_canonical(layout, ours, sparsecore_layout.from_canonical(layout, table, accum)[1])
    for name, arr in unstacked.items():
        f = int(name[1:])
        np.testing.assert_array_equal(np.asarray(arr), back[offsets[f]:offsets[f] + rows[f]])


@needs_library
def test_preprocessing_a_worst_skew_batch_drops_nothing():
    """Every example has the same ids: all of a SparseCore's ids go to one partition (the limits' worst case)."""
    from dlrm_jax.embedding.sparsecore import backend as sparsecore
    cfg = _tiny_cfg()
    rows = [5000, 17, 9000, 5, 4000] + [50] * 21
    mesh = jax.make_mesh((4, 2), ("data", "model"), devices=jax.devices()[:8])
    backend = sparsecore.SparseCoreEmbedding(mesh, rows, DIM, cfg.embedding, 256, sparsecores=4)
    ids = np.zeros((256, 26), np.int32)
    out = backend.preprocess(ids)
    assert out.tensorcore.shape == (256, 23)
    # what put_batch hands the step has the shapes the step is compiled for (one process: global = local)
    abstract = backend.abstract_batch(256)[1]
    assert jax.tree.map(np.shape, out) == jax.tree.map(lambda x: x.shape, abstract)
    assert jax.tree.map(lambda x: np.asarray(x).dtype, out) == jax.tree.map(lambda x: x.dtype, abstract)
    csr = out.csr.sparse_dense_matmul_input
    # Each of the 256 examples looks up 3 SparseCore features once: all 768 ids are kept with gain 1.
    # Unused buffer slots are padding (gain 0, or the id INT32_MAX with an uninitialised gain).
    kept = 0
    for k in csr.lhs_gains:
        gains, ids_k = np.asarray(csr.lhs_gains[k]), np.asarray(csr.lhs_embedding_ids[k])
        kept += int(np.sum((gains == 1.0) & (ids_k != np.iinfo(np.int32).max)))
    assert kept == 256 * 3


def _v5p_devices():
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    from jax.experimental import topologies
    try:
        topo = topologies.get_topology_desc(topology_name="v5p:2x2x1", platform="tpu", chip_config_name="megacore",
                                            chips_per_host_bounds=(2, 2, 1), num_slices=1)
    except Exception as err:  # noqa: BLE001 -- no libtpu: jax raises different types across versions
        pytest.skip(f"libtpu cannot describe a v5p slice here: {str(err).splitlines()[0]}")
    return list(topo.devices)


@needs_library
def test_small_aot_compile_for_a_v5p_slice_reports_the_sparsecore_calls():
    """`dlrm-scaling compile`'s report (compile_report.py) of a SparseCore step for a v5p slice."""
    from dlrm_jax.compile.report import compile_report, format_report
    cfg = _tiny_cfg(batch=1024).replace(**{"synthetic.cardinalities": (50000, 17, 30000) + (60,) * 23})
    r = compile_report(cfg, _v5p_devices())
    assert r["fits"] and r["embedding_sharding"] == "sparsecore" and r["memory"]["temp"] < 1 << 30
    # one lookup per stack (a single stack here); the fused update with our Adagrad (a custom optimizer)
    # is 3 calls per stack with libtpu 0.0.50.1 (its optimizer_grad primitive, split by the compiler)
    assert r["sparsecore_calls_by_op"].get("tpu_sparse_dense_matmul") == 1
    assert r["sparsecore_calls_by_op"].get("tpu_sparse_dense_matmul_grad", 0) >= 1
    assert r["sparsecore_library_calls"] == sum(r["sparsecore_calls_by_op"].get(k, 0)
                                                for k in ("tpu_sparse_dense_matmul", "tpu_sparse_dense_matmul_grad"))
    assert "SparseGather" in r["sparsecore_custom_calls"] and "all-reduce" in r["collectives"]
    assert "SparseCore calls per step" in format_report(r)


def test_compile_sparsecore_for_v5e_exits_2(capsys):
    """v5e has no SparseCores: `dlrm-scaling compile` says so (needs libtpu to describe the slice, not the library)."""
    if importlib.util.find_spec("libtpu") is None:
        pytest.skip("libtpu is not installed (pip install -e '.[tpu]')")
    code = main(["compile", "--preset", "tiny", "--topology", "v5e-16", "--set", "embedding.backend=sparsecore",
                 "--set", "embedding.optimizer=adagrad"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "needs TPU SparseCores" in err[-1] and "TPU v5 lite" in err[-1]


# --------------------------------------------------------------------------- on a TPU

def _sparsecore_devices():
    try:
        return [d for d in jax.devices("tpu")]
    except RuntimeError:
        return []


@pytest.mark.tpu
@needs_library
def test_fused_update_matches_the_single_device_step_on_a_tpu():
    """Numerics of the SparseCore path: N train steps from the same initial state and batches as the
    single-device TensorCore step give the same loss, tables and Adagrad state.  Needs a TPU v5p, v6e or
    tpu7x; not run in CI (`pytest -m tpu tests/embedding/test_sparsecore.py` on a TPU VM)."""
    devices = _sparsecore_devices()
    if not devices or devices[0].device_kind not in ("TPU v5", "TPU v5p", "TPU v6 lite", "TPU v6e", "TPU7x"):
        pytest.skip("needs a TPU with SparseCores (v5p, v6e, tpu7x)")
    from dlrm_jax import embedding as emb, step as step_lib
    from dlrm_jax.data import make_source
    from dlrm_jax.model import dlrm as model_lib
    from dlrm_jax.parallel import steps as parallel
    cfg = _tiny_cfg(batch=1024).replace(**{"synthetic.cardinalities": (50000, 17, 30000) + (60,) * 23,
                                           "mesh.data": -1})
    source = make_source(cfg)
    layout = emb.layout_for(source.table_sizes, cfg.model.embed_dim)
    model, tx = model_lib.from_config(cfg.model), step_lib.dense_optimizer(cfg.train)
    par = parallel.parallelize(cfg, model, tx, layout, devices=devices)
    ref = parallel.parallelize(cfg.replace(**{"embedding.backend": "tensorcore", "mesh.data": 1}), model, tx,
                               layout, devices=devices[:1])
    s_sc, s_ref = par.init(cfg.seed), ref.init(cfg.seed)
    for batch in list(source.train_batches(1024, 0, 5 * 1024)):
        s_sc, loss_sc = par.train_step(s_sc, *par.put_batch(batch))[:2]
        s_ref, loss_ref = ref.train_step(s_ref, *ref.put_batch(batch))[:2]
        np.testing.assert_allclose(float(loss_sc), float(loss_ref), rtol=1e-4)
    table, accum = sparsecore_layout.to_canonical(par.layout, jax.device_get(s_sc.emb.table),
                                                  jax.device_get(s_sc.emb.accum))
    np.testing.assert_allclose(table, np.asarray(s_ref.emb.table), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(accum, np.asarray(s_ref.emb.accum), rtol=1e-4, atol=1e-6)
