"""The embedding-backend seam (dlrm_jax/embedding/backend.py): who supports which optimizer, which
backend a config gets, the one jit assembly over it, and the import layers around it.

SparseCores cannot run on a CPU, but refusing an optimizer they lack is config-time,
so it is tested here like the others."""
import ast
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from dlrm_jax import step as step_lib
from dlrm_jax.config import load_config
from dlrm_jax.embedding import backend as backend_lib, support, tables as emb_lib
from dlrm_jax.embedding.sharded import ShardedEmbedding
from dlrm_jax.embedding.single_device import SingleDeviceEmbedding
from dlrm_jax.errors import UserError
from dlrm_jax.model import dlrm as model_lib
from dlrm_jax.parallel import steps as parallel

REPO = Path(__file__).resolve().parents[2]

# backend kind -> (overrides that give it, an optimizer it does not support)
CASES = {
    "single_device": (["mesh.data=1", "mesh.model=1"], "adam"),
    "sharded": (["mesh.data=8"], "adam"),
    "sparsecore": (["embedding.backend=sparsecore"], "rowwise_adagrad_torch"),
}


def _message(kind: str, optimizer: str) -> str:
    backend = "sparsecore" if kind == "sparsecore" else f"tensorcore ({kind})"
    return (f"embedding.optimizer={optimizer} is not supported by embedding.backend={backend}; "
            f"it supports: {', '.join(backend_lib.KINDS[kind].OPTIMIZERS)}")


def test_each_class_declares_the_optimizers_config_validation_reads():
    assert set(backend_lib.KINDS) == set(support.BY_KIND)
    for kind, cls in backend_lib.KINDS.items():
        assert cls.OPTIMIZERS == support.BY_KIND[kind], kind
        assert set(cls.OPTIMIZERS) <= set(support.OPTIMIZERS), kind
    assert support.SPARSECORE_OPTIMIZERS == ("sgd", "adagrad")
    assert SingleDeviceEmbedding.OPTIMIZERS == ShardedEmbedding.OPTIMIZERS == support.OPTIMIZERS


@pytest.mark.parametrize("kind", ["single_device", "sharded"])
def test_an_unsupported_optimizer_is_a_config_error_naming_the_supported_ones(kind):
    overrides, bad = CASES[kind]
    with pytest.raises(UserError) as err:
        load_config("tiny", [*overrides, f"embedding.optimizer={bad}"])
    assert str(err.value) == _message(kind, bad)
    for ok in backend_lib.KINDS[kind].OPTIMIZERS:
        assert load_config("tiny", [*overrides, f"embedding.optimizer={ok}"]).embedding.optimizer == ok


def test_a_mesh_that_fills_the_devices_accepts_what_both_tensorcore_backends_support():
    with pytest.raises(UserError, match=r"embedding.backend=tensorcore \(single_device or sharded\); it supports: "
                                        + ", ".join(support.OPTIMIZERS) + "$"):
        load_config("tiny", ["embedding.optimizer=adam"])
    assert support.kinds_for("tensorcore", -1, 2) == ("sharded",)      # model=2: more than one device
    assert support.kinds_for("tensorcore", 2, -1) == ("sharded",)
    assert support.kinds_for("tensorcore", 1, 1) == ("single_device",)


def test_sparsecore_refuses_an_optimizer_through_the_cli_before_looking_for_devices(tmp_path):
    """On this CPU the SparseCore backend cannot run at all; the optimizer is still refused first, at config time."""
    overrides, bad = CASES["sparsecore"]
    out = tmp_path / "r"
    r = subprocess.run([sys.executable, "-m", "dlrm_jax", "train", "--preset", "tiny", "--set", overrides[0],
                        "--set", f"embedding.optimizer={bad}", "--out", str(out)],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    err = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(err) == 1, r.stderr
    assert _message("sparsecore", bad) in err[0] and "sparsecore/backend.py says why" in err[0]
    assert not out.exists()
    for ok in support.SPARSECORE_OPTIMIZERS:
        load_config("tiny", [*overrides, f"embedding.optimizer={ok}"])


def test_the_optimizer_tables_import_no_jax():
    # config.py checks optimizers against embedding/support.py; importing the config (the
    # CLI's parser, the sweep definitions) must not pull in JAX.  Validating a whole config
    # may: an interaction's knob checks live beside its Flax module (model/interactions/).
    code = ("import sys; import dlrm_jax.config, dlrm_jax.embedding.support\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('jax', 'jaxlib', 'flax', 'optax')]\n"
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=120)


# --------------------------------------------------------------------------- make_backend

def _layout():
    return emb_lib.layout_for((6, 300) * 13, 8)


@pytest.mark.parametrize("overrides, devices, cls", [
    ([], 1, SingleDeviceEmbedding),
    ([], 8, ShardedEmbedding),
    (["mesh.data=1"], 8, SingleDeviceEmbedding),      # a 1 x 1 mesh on 8 devices: the first one alone
    (["mesh.data=2", "mesh.model=4"], 8, ShardedEmbedding),
])
def test_make_backend_picks_the_backend_by_device_count(overrides, devices, cls):
    cfg = load_config("tiny", ["train.batch_size=64", *overrides])
    backend = backend_lib.make_backend(cfg, _layout(), jax.devices()[:devices])
    assert type(backend) is cls
    assert (backend.mesh is None) == (cls is SingleDeviceEmbedding)
    if cls is ShardedEmbedding:
        assert backend.mesh.size == 8 and backend.eval_multiple == 8 and backend.placement is not None


def test_make_backend_refuses_what_its_backend_cannot_run():
    cfg = load_config("tiny", ["train.batch_size=64"])
    # A config that skipped validation (dataclasses.replace) meets the class's own list.
    import dataclasses
    unchecked = dataclasses.replace(cfg, embedding=dataclasses.replace(cfg.embedding, optimizer="adam"))
    with pytest.raises(UserError, match=r"embedding.optimizer=adam is not supported by embedding.backend="
                                        r"tensorcore \(sharded\); it supports: sgd, adagrad"):
        backend_lib.make_backend(unchecked, _layout(), jax.devices())
    sc = load_config("tiny", ["embedding.backend=sparsecore", "embedding.optimizer=adagrad"])
    with pytest.raises(UserError, match="needs TPU SparseCores.*cpu"):
        backend_lib.make_backend(sc, _layout(), jax.devices()[:1])
    with pytest.raises(UserError, match="model.multi_hot=3 is not supported by embedding.backend=sparsecore"):
        backend_lib.make_backend(sc.replace(**{"model.multi_hot": 3}), _layout(), jax.devices()[:1])


# --------------------------------------------------------------------------- one jit assembly

@pytest.mark.parametrize("devices", [1, 8])
def test_parallelize_runs_each_tensorcore_backend_through_the_same_seam(devices):
    """The same batches give the same losses on one device and on 8; stats are always returned (counters on
    a mesh, none on one device) and the abstract batch is what put_batch gives the compiled step."""
    cfg = load_config("tiny", ["train.batch_size=64", "embedding.replicate_below_rows=100"])
    layout = _layout()
    model, tx = model_lib.from_config(cfg.model), step_lib.dense_optimizer(cfg.train)
    par = parallel.parallelize(cfg, model, tx, layout, devices=jax.devices()[:devices])
    ref = parallel.parallelize(cfg.replace(**{"mesh.data": 1}), model, tx, layout, devices=jax.devices()[:1])
    rng = np.random.default_rng(0)
    batch = (rng.normal(size=(64, 13)).astype(np.float32),
             np.stack([rng.integers(0, r, 64) for r in layout.rows], axis=1).astype(np.int32),
             rng.integers(0, 2, 64).astype(np.float32))
    placed = par.put_batch(batch)
    assert [(a.shape, a.dtype) for a in par.abstract_batch] == [(np.shape(x), np.asarray(x).dtype) for x in placed]
    compiled = par.train_step.lower(par.abstract_state, *par.abstract_batch).compile()
    state, loss, stats = compiled(par.init(0), *placed)
    _, ref_loss, ref_stats = ref.train_step(ref.init(0), *ref.put_batch(batch))
    np.testing.assert_allclose(float(loss), float(ref_loss), rtol=1e-5)
    assert ref_stats == {}
    if devices == 8:
        assert set(stats) == {"exchange_rounds", "exchange_overflow_ids"} and int(stats["exchange_rounds"]) == 1
    logits = par.predict(state.params, state.emb.table, batch[0][:16], batch[1][:16])
    assert np.shape(logits) == (16,)


class _FixedBatchBackend:
    """A backend whose predict takes exactly 4 examples (as SparseCore specs take the train batch)."""
    eval_batch = 4

    def put_eval(self, dense, sparse):
        assert len(dense) == len(sparse) == 4
        return dense, sparse


def test_a_fixed_predict_batch_runs_any_chunk_in_padded_pieces():
    dense = np.arange(10 * 13, dtype=np.float32).reshape(10, 13)
    sparse = np.arange(10 * 26, dtype=np.int32).reshape(10, 26)
    calls = []

    def forward(params, tables, d, s):
        calls.append(len(d))
        return d.sum(axis=1) + s[:, 0]

    logits = parallel._predict(_FixedBatchBackend(), forward)(None, None, dense, sparse)
    np.testing.assert_array_equal(logits, dense.sum(axis=1) + sparse[:, 0])
    assert calls == [4, 4, 4]


# --------------------------------------------------------------------------- relayout

def test_how_a_checkpoint_layout_is_restored_into_the_runs():
    from dlrm_jax.embedding import placement, relayout
    rows = (6, 300) * 13

    def lay(kind, devices, rows=rows):
        return placement.plan(kind, rows, 8, devices, 100).describe()

    assert relayout.how_to_restore(lay("row", 8), lay("row", 8)) == (relayout.AS_SAVED, None)
    assert relayout.how_to_restore(None, lay("row", 8)) == (relayout.AS_SAVED, None)
    for saved, target in ((lay("row", 8), lay("row", 4)), (lay("table", 8), lay("table", 4)),
                          (lay("replicated", 1), lay("auto", 8))):   # single <-> sharded, other device counts
        assert relayout.how_to_restore(saved, target) == (relayout.RELAID, None)
    assert relayout.how_to_restore({"kind": "sparsecore"}, lay("row", 8)) == (relayout.CONVERTED, None)
    how, why = relayout.how_to_restore(lay("row", 8), lay("row", 8, rows[:-1] + (7,)))   # other tables
    assert how == relayout.AS_SAVED and "laid out for embedding.sharding=row" in why


# --------------------------------------------------------------------------- import layers

# Low to high.  A module may import only modules of its own layer or below, and no cycle may pass
# through these modules (an import inside a function counts, and so does a package's __init__).
LAYERS = [
    ["dlrm_jax.errors", "dlrm_jax.overrides", "dlrm_jax.embedding.support", "dlrm_jax.data.base",
     "dlrm_jax.data.criteo.table_sizes"],
    ["dlrm_jax.config"],
    ["dlrm_jax.parallel.mesh", "dlrm_jax.parallel.distributed", "dlrm_jax.embedding.tables",
     "dlrm_jax.embedding.optimizers", "dlrm_jax.embedding.bags", "dlrm_jax.embedding.placement",
     "dlrm_jax.embedding.exchange", "dlrm_jax.embedding.sparsecore.layout"],
    ["dlrm_jax.embedding.single_device", "dlrm_jax.embedding.sharded", "dlrm_jax.embedding.sparsecore.backend",
     "dlrm_jax.embedding.sparsecore.conversion"],
    ["dlrm_jax.embedding.backend", "dlrm_jax.embedding.relayout"],
    ["dlrm_jax.step"],
    ["dlrm_jax.parallel.steps", "dlrm_jax.run.checkpoint"],
]


def _import_graph() -> dict[str, set[str]]:
    modules = {}
    for path in (REPO / "dlrm_jax").rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets.add(node.module)
                targets.update(f"{node.module}.{a.name}" for a in node.names)
        # importing a.b.c runs a/__init__.py and a/b/__init__.py first
        targets |= {t.rsplit(".", k)[0] for t in set(targets) for k in range(1, t.count(".") + 1)}
        graph[name] = {t for t in targets if t in modules and t != name and not name.startswith(t + ".")}
    return graph


def test_the_seam_has_no_import_cycle_and_no_import_up_a_layer():
    graph = _import_graph()
    level = {m: i for i, layer in enumerate(LAYERS) for m in layer}
    assert set(level) <= set(graph), set(level) - set(graph)
    up = [(m, t) for m in level for t in graph[m] if t in level and level[t] > level[m]]
    assert not up, up
    assert "dlrm_jax.parallel.steps" not in {t for m in graph if m.startswith("dlrm_jax.embedding") for t in graph[m]}
    for start in level:   # no path leads from a seam module back to itself
        seen, todo = set(), list(graph[start])
        while todo:
            m = todo.pop()
            assert m != start, f"import cycle through {start}"
            if m not in seen:
                seen.add(m)
                todo.extend(graph[m])
