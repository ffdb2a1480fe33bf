"""The SparseCore backend: tables on TPU SparseCores through jax-tpu-embedding.

On TPU v5p (4 SparseCores per chip), v6e/Trillium (2) and tpu7x/Ironwood (2)
the SparseCores run the lookup, the id all-to-all and the optimizer update
fused; this backend hands them every table of at least
`embedding.tensorcore_below_rows` rows (RecML's DLRM-DCNv2 keeps tables below
its `embedding_threshold` 21000 on the TensorCore the same way: they are
small enough to replicate, and a SparseCore call per tiny table costs more
than it saves).  It implements `embedding/backend.py`'s `EmbeddingBackend`:

    state  table = {"sparsecore": {stack: [V_stack, D_pad]}, "tensorcore": [R_tc, D]}
           accum = the same tree, the optimizer's state
    ids    not [B, F] but `SparseCoreIds`: the library's preprocessed CSR input of
           the SparseCore features and the ids [B, F_tc] of the TensorCore ones
    describe() -> the layout a checkpoint records (layout.py)

Two things the train loop does not see: `put_batch` runs the library's host
preprocessing (`preprocess`) before placing the batch, and the train loop
maps `put_batch` inside the prefetch thread (`data/prefetch.py`), so it
overlaps the step instead of running in it; and predict takes exactly
`eval_batch` examples (the feature specs are built for one batch size), so
`parallel.steps` runs an eval chunk in padded pieces of the train batch.

Per step and device: the SparseCore forward (`tpu_sparse_dense_matmul`) and
the fused backward + optimizer (`tpu_sparse_dense_matmul_grad`), one call each
per stack; the TensorCore tables look up locally and all-reduce their dense
gradient [R_tc, D] (a few tens of MB at most, far below the B x F_tc x D an
all-gather of row gradients would move), then every replica applies the same
sparse optimizer (`optimizers.py`), so replicas stay equal.

Optimizers (learning rate = embedding.learning_rate):
    sgd              the library's SGDOptimizerSpec (w -= lr g)
    adagrad          a CustomOptimizerSpec with exactly `optimizers.py`'s formula:
                     a += g^2, w -= lr g / sqrt(a + eps), rows with a == 0 do not move.
                     The library's AdagradOptimizerSpec divides by sqrt(a) without eps,
                     which is 0/0 = NaN for a zero gradient element of a touched row
                     when the accumulator starts at 0 (our default), so it is not used.
    rowwise_adagrad  not available: the library has no row-wise Adagrad, and a
                     CustomOptimizerSpec whose update reduces over D (FBGEMM's
                     a += mean_D g^2, written as a mean, a sum, a dot with ones) crashes
                     libtpu 0.0.50.1's SparseCore compiler (SIGILL in
                     sparse_core::HloFixedWindowSelector::IsValidWindow; column slices
                     fail with a shape error instead), measured compiling for v5p:2x2x1.
                     Asking for it raises UserError (exit 2) before anything compiles.

The number of SparseCores per device is passed explicitly (`SPARSECORES_PER_DEVICE`)
so that compiling for a TPU slice works on a CPU host (`dlrm_jax/compile/sparsecore.py`).
The library is imported only when this backend is built: importing the project
and every CPU/GPU path never needs it.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import logging
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from dlrm_jax.data.base import NUM_DENSE
from dlrm_jax.embedding import optimizers, support, tables as emb_lib
from dlrm_jax.embedding.sparsecore import layout as sparsecore_layout
from dlrm_jax.errors import UserError
from dlrm_jax.parallel import distributed
from dlrm_jax.parallel.mesh import AXES, make_mesh, spec

# SparseCores per JAX device, as jax-tpu-embedding's NUM_SC_PER_DEVICE_MAP has them:
# v5p 4 and v6e 2 (one device per chip); tpu7x 2 per device, and libtpu shows an
# Ironwood chip as two devices (megacore off; `tpu7x:2x2x1` is 8 devices), so 4 per
# chip.  v5e, v4, CPUs and GPUs have none.
SPARSECORES_PER_DEVICE = {"v5p": 4, "v6e": 2, "tpu7x": 2}
_DEVICE_KINDS = {"TPU v5": "v5p", "TPU v5p": "v5p", "TPU v6e": "v6e", "TPU v6 lite": "v6e", "TPU7x": "tpu7x"}
ROWWISE_UNSUPPORTED = ("embedding.optimizer=rowwise_adagrad is not available with embedding.backend=sparsecore: "
                       "jax-tpu-embedding has no row-wise Adagrad and a custom one (a reduction over D) does not "
                       "compile for SparseCores with libtpu 0.0.50; use embedding.optimizer=adagrad or sgd")
INSTALL = "pip install -e '.[sparsecore]' (jax-tpu-embedding 0.2.0, Python >= 3.12)"

_ALL = AXES   # SparseCore tables and their inputs are split over every device of the mesh


def library_available() -> bool:
    return importlib.util.find_spec("jax_tpu_embedding") is not None


def require_library():
    """(embedding, embedding_spec) modules of jax-tpu-embedding; UserError without it."""
    if not library_available():
        raise UserError(f"embedding.backend=sparsecore needs jax-tpu-embedding, which is not installed: {INSTALL}")
    from jax_tpu_embedding.sparsecore.lib.nn import embedding, embedding_spec
    return embedding, embedding_spec


def sparsecores_per_device(device) -> int:
    """SparseCores of `device` (a real or compile-only TPU device); UserError for devices without."""
    kind = getattr(device, "device_kind", "") or ""
    gen = _DEVICE_KINDS.get(kind)
    if gen is None:
        platform = getattr(device, "platform", "?")
        raise UserError(f"embedding.backend=sparsecore needs TPU SparseCores (v5p, v6e, tpu7x); this run's devices "
                        f"are {platform} ({kind or 'unknown kind'}), which have none: use embedding.backend=tensorcore")
    return SPARSECORES_PER_DEVICE[gen]


# --------------------------------------------------------------------------- specs

def split_features(rows: Sequence[int], tensorcore_below_rows: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(SparseCore features, TensorCore features): tables below the threshold stay on the TensorCore."""
    sc = tuple(f for f, r in enumerate(rows) if r >= tensorcore_below_rows)
    return sc, tuple(f for f in range(len(rows)) if f not in sc)


def feature_name(f: int) -> str:
    return f"f{f:02d}"


def _adagrad_fn(eps: float):
    """The per-row update the SparseCore runs (inputs [1, D_pad]): `optimizers.py`'s Adagrad."""
    def update(grad, table, accum, learning_rate):
        acc = accum + grad * grad
        scale = jnp.where(acc > 0, jax.lax.rsqrt(acc + eps), 0.0)
        return table - learning_rate * grad * scale, acc

    return update


def optimizer_spec(emb_cfg, dim: int):
    """The library's optimizer spec of `embedding.optimizer` with our learning rate (see the module docstring)."""
    _, spec = require_library()
    lr = float(emb_cfg.learning_rate)
    if emb_cfg.optimizer == "sgd":
        return spec.SGDOptimizerSpec(learning_rate=lr)
    if emb_cfg.optimizer == "rowwise_adagrad":
        raise UserError(ROWWISE_UNSUPPORTED)
    if emb_cfg.optimizer != "adagrad":  # the *_torch forms: g / (sqrt(acc) + eps), and row-wise state
        raise UserError(f"embedding.optimizer={emb_cfg.optimizer} has no SparseCore form; use adagrad or sgd")
    init = jax.nn.initializers.constant(float(emb_cfg.initial_accumulator))
    return spec.CustomOptimizerSpec(learning_rate=lr,
                                    custom_computation_fn=_adagrad_fn(float(emb_cfg.eps)),
                                    slot_variable_initializers_tuple=(init,),
                                    short_name_str=emb_cfg.optimizer)


def feature_specs(rows: Sequence[int], dim: int, emb_cfg, global_batch: int, devices: int, sparsecores: int,
                  features: Sequence[int]) -> dict:
    """{name: FeatureSpec} of the SparseCore features, stacked and prepared for training.

    Id limits: the library aborts the process (a C++ CHECK) when a batch sends
    more ids to one partition than `max_ids_per_partition` and dropping is off.
    We never drop ids, so both limits are set to the worst case, every id a
    SparseCore holds going to one partition: its samples x the stack's features
    (tests/embedding/test_sparsecore.py preprocesses a batch whose ids are all equal).
    """
    embedding, spec = require_library()
    opt = optimizer_spec(emb_cfg, dim)
    out = {}
    for f in features:
        table = spec.TableSpec(vocabulary_size=int(rows[f]), embedding_dim=int(dim),
                               initializer=jax.nn.initializers.zeros,  # init() sets the values (init_feature_rows)
                               optimizer=opt, combiner="sum", name=f"t{f:02d}")
        out[feature_name(f)] = spec.FeatureSpec(name=feature_name(f), table_spec=table,
                                                input_shape=(global_batch, 1), output_shape=(global_batch, dim))
    if not out:
        return out
    # The library warns that stacking ignores per-table id limits and uses its defaults; the
    # limits are set per stack right below, so the warning would only mislead.
    absl_log = logging.getLogger("absl")
    level = absl_log.level
    absl_log.setLevel(logging.ERROR)
    try:
        embedding.auto_stack_tables(out, global_device_count=devices, num_sc_per_device=sparsecores)
        embedding.prepare_feature_specs_for_training(out, global_device_count=devices, num_sc_per_device=sparsecores)
    finally:
        absl_log.setLevel(level)
    shards = devices * sparsecores
    for fs in out.values():
        st = fs.table_spec.stacked_table_spec
        per_sc = -(-st.total_sample_count // shards)          # ids one SparseCore holds for this stack
        # The id buffer of a device: its SparseCores' ids, each partition's count rounded up to
        # 8 (the library's alignment), so at most per_sc + 8 K per SparseCore.  Without it the
        # library sizes it for every partition at its maximum: K times more (K = shards).
        buffer = sparsecores * (per_sc + 8 * shards)
        fs.table_spec.stacked_table_spec = dataclasses.replace(
            st, max_ids_per_partition=per_sc, max_unique_ids_per_partition=per_sc,
            suggested_coo_buffer_size_per_device=buffer)
    return out


def describe_specs(specs: dict, rows: Sequence[int], dim: int, shards: int, optimizer: str,
                   tc_features: Sequence[int]) -> dict:
    """The layout a checkpoint records (`layout.py` reads it)."""
    stacks: dict[str, dict] = {}
    for name, fs in sorted(specs.items()):
        t, st = fs.table_spec, fs.table_spec.stacked_table_spec
        s = stacks.setdefault(st.stack_name, {"name": st.stack_name, "rows": int(st.stack_vocab_size),
                                              "dim": int(st.stack_embedding_dim), "tables": []})
        s["tables"].append({"feature": int(name[1:]), "rows": int(t.vocabulary_size),
                            "padded_rows": int(t.setting_in_stack.padded_vocab_size),
                            "row_offset_in_shard": int(t.setting_in_stack.row_offset_in_shard),
                            "shard_rotation": int(t.setting_in_stack.shard_rotation)})
    tc_offsets = np.concatenate([[0], np.cumsum([rows[f] for f in tc_features])[:-1]]).astype(int).tolist() \
        if tc_features else []
    return {"kind": sparsecore_layout.KIND, "feature_rows": [int(r) for r in rows], "dim": int(dim),
            "shards": int(shards), "optimizer": optimizer, "stacks": [stacks[k] for k in sorted(stacks)],
            "tensorcore": {"features": list(tc_features), "offsets": tc_offsets}}


# --------------------------------------------------------------------------- batches

class SparseCoreIds(NamedTuple):
    """What the step takes instead of ids [B, F] (a pytree of arrays)."""
    csr: Any                 # the library's PreprocessedInput of the SparseCore features
    tensorcore: jax.Array    # ids [B, F_tc] of the TensorCore features


# --------------------------------------------------------------------------- backend

class SparseCoreEmbedding:
    """The SparseCore backend of a mesh (`backend.EmbeddingBackend`; see the module docstring)."""
    OPTIMIZERS = support.SPARSECORE_OPTIMIZERS
    placement = None
    eval_multiple = 1    # eval chunks of any size, run in pieces of `eval_batch`

    @classmethod
    def from_config(cls, cfg, layout: emb_lib.EmbeddingLayout, devices) -> "SparseCoreEmbedding":
        """The backend of `cfg` over `devices`; UserError where it cannot run (CPU, GPU, v5e, v4, no library)."""
        devices = list(devices)
        sparsecores = sparsecores_per_device(devices[0])   # first: CPU/GPU/v5e need no library to be told
        require_library()
        mesh = make_mesh(cfg.mesh, devices)
        if cfg.train.batch_size % mesh.size:
            raise UserError(f"train.batch_size={cfg.train.batch_size} is not divisible by the {mesh.size} devices")
        local = sum(1 for d in mesh.devices.flat if d.process_index == jax.process_index())
        return cls(mesh, layout.rows, layout.dim, cfg.embedding, cfg.train.batch_size, sparsecores,
                   local_devices=local)

    def __init__(self, mesh: jax.sharding.Mesh, rows: Sequence[int], dim: int, emb_cfg, global_batch: int,
                 sparsecores: int, local_devices: int | None = None):
        self.embedding, _ = require_library()
        self.mesh, self.rows, self.dim, self.cfg = mesh, tuple(int(r) for r in rows), int(dim), emb_cfg
        self.optimizer = emb_cfg.optimizer
        self.devices, self.sparsecores = mesh.size, int(sparsecores)
        self.shards = self.devices * self.sparsecores
        self.local_devices = local_devices if local_devices is not None else len(
            [d for d in mesh.devices.flat if d.process_index == jax.process_index()])
        self.global_batch = self.eval_batch = int(global_batch)
        self._batch_numbers = itertools.count(1)   # the library's batch_number of each preprocessed batch
        if self.global_batch % (self.devices * self.sparsecores):
            raise UserError(f"train.batch_size={global_batch} must be a multiple of the {self.shards} SparseCores "
                            f"({self.devices} devices x {self.sparsecores})")
        self.sc_features, self.tc_features = split_features(self.rows, emb_cfg.tensorcore_below_rows)
        self.specs = feature_specs(self.rows, self.dim, emb_cfg, self.global_batch, self.devices, self.sparsecores,
                                   self.sc_features)
        self.layout = describe_specs(self.specs, self.rows, self.dim, self.shards, self.optimizer, self.tc_features)
        self.tc_rows = int(sum(self.rows[f] for f in self.tc_features))
        self._tc_offsets = np.asarray(self.layout["tensorcore"]["offsets"], np.int32)
        order = list(self.sc_features) + list(self.tc_features)
        self._inverse = np.argsort(order)    # [SC features, TC features] -> feature order

    # ------------------------------------------------------------------ state

    def init(self, key: jax.Array, optimizer: str, init_scale: float = 0.0, initial_accumulator: float = 0.0):
        """The same per-feature values as the TensorCore backends (`tables.init_feature_rows`), stacked."""
        per_feature = {f: emb_lib.init_feature_rows(key, f, r, self.dim, init_scale) for f, r in enumerate(self.rows)}
        canonical = jnp.concatenate([per_feature[f] for f in range(len(self.rows))])
        accum = jnp.full(emb_lib.accum_shape(optimizer, len(canonical), self.dim), initial_accumulator, jnp.float32)
        table, acc = sparsecore_layout.from_canonical(self.layout, canonical, accum, xp=jnp)
        return emb_lib.EmbeddingState(table=table, accum=acc)

    def describe(self) -> dict:
        return self.layout

    def shardings(self):
        """NamedShardings of the state: stacks row-sharded over every device, TensorCore tables replicated."""
        split, rep = NamedSharding(self.mesh, P(_ALL, None)), NamedSharding(self.mesh, P())
        acc_sc = rep if self.optimizer == "sgd" else split
        stacks = [s["name"] for s in self.layout["stacks"]]
        return emb_lib.EmbeddingState(table={"sparsecore": {k: split for k in stacks}, "tensorcore": rep},
                                      accum={"sparsecore": {k: acc_sc for k in stacks}, "tensorcore": rep})

    def sharding(self, role: str, ndim: int) -> NamedSharding:
        return NamedSharding(self.mesh, spec(role, ndim))

    def _ids_shardings(self) -> SparseCoreIds:
        return SparseCoreIds(csr=jax.tree.map(lambda _: NamedSharding(self.mesh, P(_ALL)), self._csr_shapes()),
                             tensorcore=NamedSharding(self.mesh, P(_ALL, None)))

    def batch_shardings(self) -> tuple:
        return self.sharding("batch", 2), self._ids_shardings(), self.sharding("batch", 1)

    def _csr_shapes(self):
        return self.embedding.eval_preprocess_sparse_dense_matmul_input_shape(
            self.specs, local_device_count=self.devices, global_device_count=self.devices,
            num_sc_per_device=self.sparsecores)

    def abstract_batch(self, batch_size: int) -> tuple:
        """(dense, `SparseCoreIds`, labels) ShapeDtypeStructs (global shapes, with shardings): for AOT compiles."""
        if batch_size != self.global_batch:
            raise ValueError(f"the SparseCore specs are built for batches of {self.global_batch}, not {batch_size}")
        b, (d_sh, sh, l_sh) = self.global_batch, self.batch_shardings()
        csr = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), self._csr_shapes(), sh.csr)
        ids = SparseCoreIds(csr=csr, tensorcore=jax.ShapeDtypeStruct((b, len(self.tc_features)), jnp.int32,
                                                                     sharding=sh.tensorcore))
        return (jax.ShapeDtypeStruct((b, NUM_DENSE), jnp.float32, sharding=d_sh), ids,
                jax.ShapeDtypeStruct((b,), jnp.float32, sharding=l_sh))

    # ------------------------------------------------------------------ host side

    def preprocess(self, sparse: np.ndarray, batch_number: int = 0) -> SparseCoreIds:
        """This host's ids [B_host, F] -> numpy `SparseCoreIds` of its local devices (the library's C++ pass).

        Runs on the host, in the data pipeline's background thread (`put_batch`).
        """
        csr = None
        if self.sc_features:
            feats = {feature_name(f): np.ascontiguousarray(sparse[:, f:f + 1], dtype=np.int32)
                     for f in self.sc_features}
            weights = {k: np.ones(v.shape, np.float32) for k, v in feats.items()}
            csr, _ = self.embedding.preprocess_sparse_dense_matmul_input(
                feats, weights, self.specs, local_device_count=self.local_devices,
                global_device_count=self.devices, num_sc_per_device=self.sparsecores,
                allow_id_dropping=False, batch_number=batch_number)
            # the library fills it with a Python int (int64); the compiled step takes int32
            csr = csr.replace(num_minibatches=np.asarray(csr.num_minibatches, np.int32))
        return SparseCoreIds(csr=csr, tensorcore=np.ascontiguousarray(sparse[:, list(self.tc_features)], np.int32))

    def _put_ids(self, sparse_host: np.ndarray) -> SparseCoreIds:
        ids = self.preprocess(sparse_host, batch_number=next(self._batch_numbers))
        return jax.tree.map(lambda x, s: distributed.global_batch(np.asarray(x), s), ids, self._ids_shardings())

    def put_batch(self, batch) -> tuple:
        """This host's rows -> (dense, SparseCoreIds, labels) global arrays, preprocessed on the host."""
        dense, sparse, labels = batch
        d_sh, _, l_sh = self.batch_shardings()
        return (distributed.global_batch(np.asarray(dense), d_sh), self._put_ids(sparse),
                distributed.global_batch(np.asarray(labels), l_sh))

    def put_eval(self, dense, sparse) -> tuple:
        """A piece of `eval_batch` examples every host holds whole -> (dense, ids): each host places its part."""
        hosts, host = jax.process_count(), jax.process_index()
        rows = slice(host * len(dense) // hosts, (host + 1) * len(dense) // hosts)
        return (distributed.global_batch(np.asarray(dense[rows]), self.sharding("batch", 2)),
                self._put_ids(np.asarray(sparse[rows])))

    # ------------------------------------------------------------------ step

    def _variables(self, table, accum=None):
        E = self.embedding.EmbeddingVariables
        out = {}
        for k, t in table["sparsecore"].items():
            slot = () if accum is None or self.optimizer == "sgd" else (accum["sparsecore"][k],)
            out[k] = E(table=t, slot=slot)
        return out

    def _shard_map(self, f, in_specs, out_specs):
        return jax.shard_map(f, mesh=self.mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)

    def lookup(self, tables, ids: SparseCoreIds) -> jax.Array:
        """tables (the state's `table` tree), ids -> rows [B, F, D], batch-sharded over every device."""
        def body(sc_tables, tc_table, csr, tc_ids):               # per device: [b, F, D]
            parts = []
            if self.sc_features:
                acts = self.embedding.tpu_sparse_dense_matmul(
                    csr, self._variables({"sparsecore": sc_tables}), self.specs,
                    global_device_count=self.devices, num_sc_per_device=self.sparsecores)
                parts.append(jnp.stack([acts[feature_name(f)][:, :self.dim] for f in self.sc_features], axis=1))
            if self.tc_features:
                parts.append(jnp.take(tc_table, tc_ids + jnp.asarray(self._tc_offsets), axis=0))
            rows = parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=1)
            return jnp.take(rows, self._inverse, axis=1)

        sc_spec = {k: P(_ALL, None) for k in tables["sparsecore"]}
        return self._shard_map(body, (sc_spec, P(), P(_ALL), P(_ALL, None)), P(_ALL))(
            tables["sparsecore"], tables["tensorcore"], ids.csr, ids.tensorcore)

    def update(self, state, ids: SparseCoreIds, grads: jax.Array, optimizer: str, learning_rate, eps: float = 1e-8):
        """The SparseCores' fused update of their stacks; the TensorCore tables' sparse optimizer on
        the all-reduced gradient.  grads [B, F, D] (batch-sharded) -> (new state, {}: no counters).
        `learning_rate` and `eps` of the SparseCore stacks are the ones their specs were built with
        (`optimizer_spec`)."""
        sc_names = list(state.table["sparsecore"])

        def body(sc_tables, sc_accum, tc_table, tc_accum, csr, tc_ids, g):    # g [b, F, D]
            new_sc, new_acc = {}, {}
            if self.sc_features:
                acts_grad = {feature_name(f): g[:, f, :] for f in self.sc_features}
                updated = self.embedding.tpu_sparse_dense_matmul_grad(
                    acts_grad, csr, self._variables({"sparsecore": sc_tables}, {"sparsecore": sc_accum}),
                    self.specs, global_device_count=self.devices, num_sc_per_device=self.sparsecores)
                for k in sc_names:
                    new_sc[k] = updated[k].table
                    new_acc[k] = updated[k].slot[0] if self.optimizer != "sgd" else sc_accum[k]
            if self.tc_features:
                g_tc = jnp.take(g, np.asarray(self.tc_features), axis=1)                  # [b, F_tc, D]
                rows = (tc_ids + jnp.asarray(self._tc_offsets)).reshape(-1)
                dense = jnp.zeros((self.tc_rows, self.dim), g.dtype).at[rows].add(g_tc.reshape(-1, self.dim))
                dense = jax.lax.psum(dense, _ALL)                                        # [R_tc, D]
                st = optimizers.sparse_update(emb_lib.EmbeddingState(table=tc_table, accum=tc_accum),
                                              jnp.arange(self.tc_rows, dtype=jnp.int32), dense, optimizer,
                                              learning_rate, eps)
                tc_table, tc_accum = st.table, st.accum
            return new_sc, new_acc, tc_table, tc_accum

        sc_t = {k: P(_ALL, None) for k in sc_names}
        sc_a = {k: (P() if self.optimizer == "sgd" else P(_ALL, None)) for k in sc_names}
        new_sc, new_acc, tc_table, tc_accum = self._shard_map(
            body, (sc_t, sc_a, P(), P(), P(_ALL), P(_ALL, None), P(_ALL)), (sc_t, sc_a, P(), P()))(
            state.table["sparsecore"], state.accum["sparsecore"], state.table["tensorcore"],
            state.accum["tensorcore"], ids.csr, ids.tensorcore, grads)
        return emb_lib.EmbeddingState(table={"sparsecore": new_sc, "tensorcore": tc_table},
                                      accum={"sparsecore": new_acc, "tensorcore": tc_accum}), {}
