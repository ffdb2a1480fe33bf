"""Orbax checkpoints of the train state in `RUN_DIR/checkpoints/`.

Saves are synchronous: a step's checkpoint is complete (Orbax finalises it with
a rename) before training goes on, so a run killed at any moment resumes from
its newest complete checkpoint.  Restoring takes an abstract state whose leaves
carry shardings, so a checkpoint restores onto any mesh.

Each checkpoint records its embedding layout (`embedding.placement.Placement.describe`):
the groups, their features and row offsets.  A sharded group's rows are padded
to a multiple of its shards, so the same tables on another mesh may differ
only in zero padding rows at the end; those are added or dropped on restore.
A layout whose tables sit elsewhere (table placement over another number of
devices, or written before sharded groups spanned every device of the mesh)
is restored as saved and then laid out anew, table by table (`_relayout`);
one that holds other tables is refused with a clear message.

Each checkpoint also records the run's time so far (`RunTime`), so a resumed
run's `wall_s` and `examples_per_s` cover every process it took, not the last.

Orbax refuses zero-size arrays (SGD's empty accumulator), so they are stored
as a one-element stand-in and given back empty.
"""
from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

from dlrm_jax.chrono import RunTime
from dlrm_jax.embedding import layout_conversion, placement, tables as emb_lib
from dlrm_jax.errors import UserError

LAYOUT_KEY = "embedding_layout"
RUN_TIME_KEY = "run_time"


class Checkpointer:
    def __init__(self, directory: Path, keep: int = 2):
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                               enable_async_checkpointing=False)
        self._manager = ocp.CheckpointManager(Path(directory).absolute(), options=options,
                                              item_handlers=ocp.StandardCheckpointHandler())

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state, layout: dict | None = None, run_time: RunTime | None = None) -> None:
        """`layout`: the state's embedding layout (`Parallel.layout`); `run_time`: the run's time so far.
        Both are kept with the checkpoint."""
        state = jax.tree.map(lambda x: _EMPTY if x.size == 0 else x, state)
        custom = {LAYOUT_KEY: layout} if layout is not None else {}
        if run_time is not None:
            custom[RUN_TIME_KEY] = run_time._asdict()
        self._manager.save(step, args=ocp.args.StandardSave(state), force=True, custom_metadata=custom or None)
        self._manager.wait_until_finished()

    def _custom_metadata(self, step: int) -> dict:
        return self._manager.metadata(step).custom_metadata or {}

    def saved_layout(self, step: int) -> dict | None:
        return self._custom_metadata(step).get(LAYOUT_KEY)

    def saved_run_time(self, step: int) -> RunTime:
        """The run time recorded with `step`; zeros for a checkpoint that has none."""
        saved = self._custom_metadata(step).get(RUN_TIME_KEY) or {}
        return RunTime(float(saved.get("wall_s", 0.0)), float(saved.get("train_s", 0.0)),
                       int(saved.get("timed_steps", 0)))

    def restore(self, step: int, like, layout: dict | None = None):
        """Restore `step` into the structure, dtypes and shardings of `like` (arrays or ShapeDtypeStructs).

        With `layout` (the embedding layout of `like`), a checkpoint saved on
        another mesh restores too: see the module docstring.
        """
        saved = self.saved_layout(step) if layout is not None else None
        if layout_conversion.needs_conversion(saved, layout):  # SparseCore stacks <-> TensorCore groups
            return self._restore_converted(step, like, saved, layout)
        if layout_conversion.is_sparsecore(saved):  # the same SparseCore stacks: restores as saved
            saved = None
        abstract = jax.tree.map(lambda x: _EMPTY if x.size == 0 else _abstract(x), like)
        strict = True
        if saved is not None:
            why = placement.restorable(saved, layout)
            if why is not None and _same_tables(saved, layout):
                return self._restore_relaid(step, like, saved, layout)
            if why is not None:
                raise UserError(f"checkpoint {step} in {self._manager.directory}: {why}; resume with "
                                f"the embedding.sharding and mesh.model it was saved with")
            # Only trailing padding rows may differ (zero, never read), so pad or drop them.
            strict = [g["rows"] for g in saved["groups"]] == [g["rows"] for g in layout["groups"]]
        restored = self._manager.restore(step, args=ocp.args.StandardRestore(abstract, strict=strict))
        return jax.tree.map(lambda x, r: _like_empty(x) if x.size == 0 else r, like, restored)

    def _restore_converted(self, step: int, like, saved: dict, layout: dict):
        """Restore a checkpoint whose embedding layout is the other backend's (layout_conversion.py):
        its tables and optimizer state are read into host memory as saved, converted, then placed
        with `like`'s shardings; everything else restores as usual."""
        optimizer = saved.get("optimizer") or layout.get("optimizer") or _optimizer_of(like.emb)
        host_emb = layout_conversion.host_like(saved, optimizer, saved.get("dim") or layout["dim"])
        abstract = jax.tree.map(lambda x: _EMPTY if x.size == 0 else _abstract(x), like.replace(emb=host_emb))
        restored = self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
        emb = layout_conversion.convert(saved, layout, restored.emb, optimizer)
        emb = jax.tree.map(lambda t, x: _like_empty(t) if t.size == 0 else _place(np.asarray(x), t), like.emb, emb)
        return restored.replace(emb=emb, params=jax.tree.map(_place_like, restored.params, like.params),
                                opt_state=jax.tree.map(_place_like, restored.opt_state, like.opt_state),
                                step=_place_like(restored.step, like.step))

    def _restore_relaid(self, step: int, like, saved: dict, layout: dict):
        """Restore the tables as `saved` lays them out, then move each table to `layout`'s place."""
        emb_like = like.emb if hasattr(like, "emb") else like
        leaves = jax.tree.leaves(emb_like)
        sharding = getattr(leaves[0], "sharding", None)
        mesh = getattr(sharding, "mesh", None)
        dim = leaves[0].shape[-1]
        accum_ndim = {g.ndim for g in jax.tree.leaves(emb_like)[1::2]}
        optimizer_accum = next(iter(accum_ndim)) if accum_ndim else 1
        sgd = any(x.size == 0 for x in leaves)

        def abstract_group(rows):
            def sds(shape):
                if mesh is None:
                    return jax.ShapeDtypeStruct(shape, np.float32)
                from jax.sharding import NamedSharding, PartitionSpec as P
                split = len(shape) > 0 and shape[0] % mesh.size == 0
                return jax.ShapeDtypeStruct(shape, np.float32,
                                            sharding=NamedSharding(mesh, P(mesh.axis_names) if split else P()))
            acc = (1,) if sgd else ((rows, dim) if optimizer_accum == 2 else (rows,))
            return emb_lib.EmbeddingState(table=sds((rows, dim)), accum=sds(acc))

        saved_emb = placement.from_groups([abstract_group(g["rows"]) for g in saved["groups"]])
        saved_like = like.replace(emb=saved_emb) if hasattr(like, "emb") else saved_emb
        abstract = jax.tree.map(lambda x: _EMPTY if x.size == 0 else _abstract(x), saved_like)
        restored = self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
        emb = _relayout(placement.as_groups(restored.emb if hasattr(like, "emb") else restored), saved, layout,
                        emb_like, sgd)
        restored = restored.replace(emb=emb) if hasattr(like, "emb") else emb
        return jax.tree.map(lambda x, r: _like_empty(x) if x.size == 0 else r, like, restored)

    def close(self) -> None:
        self._manager.close()


_EMPTY = np.zeros((1,), np.float32)


def _same_tables(saved: dict, target: dict) -> bool:
    def tables(d):
        return sorted((f, r) for g in d["groups"] for f, r in zip(g["features"], g["feature_rows"]))
    return tables(saved) == tables(target)


def _in_group_order(st, g: dict, sgd: bool):
    """A saved group's state with its rows in group order (interleaved groups de-interleaved)."""
    if g.get("row_map") != "modulo":
        return st
    return emb_lib.EmbeddingState(table=placement.deinterleave(st.table, g["shards"]),
                                  accum=st.accum if sgd else placement.deinterleave(st.accum, g["shards"]))


def _relayout(saved_groups, saved: dict, target: dict, like_emb, sgd: bool):
    """Saved groups' states -> `target`'s groups, each feature's rows (and accumulator) moved whole.

    Jitted with the target's shardings, so on a mesh the rows move device to device.
    """
    where = {f: (i, off, rows) for i, g in enumerate(saved["groups"])
             for f, off, rows in zip(g["features"], g["offsets"], g["feature_rows"])}

    def move(groups):
        groups = [_in_group_order(st, g, sgd) for st, g in zip(groups, saved["groups"])]
        out = []
        for g in target["groups"]:
            states = []
            for part in ("table", "accum"):
                if part == "accum" and sgd:
                    states.append(jax.numpy.zeros((0,), np.float32))
                    continue
                pieces, end = [], 0
                for f, off in zip(g["features"], g["offsets"]):
                    i, src, rows = where[f]
                    x = getattr(groups[i], part)
                    if off > end:
                        pieces.append(jax.numpy.zeros((off - end, *x.shape[1:]), x.dtype))
                    pieces.append(x[src:src + rows])
                    end = off + rows
                if g["rows"] > end:
                    pieces.append(jax.numpy.zeros((g["rows"] - end, *x.shape[1:]), x.dtype))
                x = jax.numpy.concatenate(pieces)
                states.append(placement.interleave(x, g["shards"]) if g.get("row_map") == "modulo" else x)
            out.append(emb_lib.EmbeddingState(table=states[0], accum=states[1]))
        return placement.from_groups(out)

    shardings = jax.tree.map(lambda x: getattr(x, "sharding", None), like_emb)
    if any(s is None for s in jax.tree.leaves(shardings, is_leaf=lambda x: x is None)):
        return move(saved_groups)
    return jax.jit(move, out_shardings=shardings)(saved_groups)


def _like_empty(x):
    if isinstance(x, jax.ShapeDtypeStruct):
        return jax.numpy.zeros(x.shape, x.dtype, device=x.sharding)
    return x


def _optimizer_of(emb) -> str:
    """A TensorCore state's sparse optimizer, from its accumulator's shape (layouts of older runs do not say)."""
    acc = placement.as_groups(emb)[0].accum
    return "sgd" if acc.size == 0 else ("rowwise_adagrad" if acc.ndim == 1 else "adagrad")


def _place(x: np.ndarray, like):
    sharding = getattr(like, "sharding", None)
    return jax.device_put(x, sharding) if sharding is not None else jax.numpy.asarray(x)


def _place_like(x, like):
    return x if getattr(x, "sharding", None) == getattr(like, "sharding", None) else _place(np.asarray(x), like)


def _abstract(x):
    if isinstance(x, jax.ShapeDtypeStruct):
        return x
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None))
