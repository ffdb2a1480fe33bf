"""Orbax checkpoints of the train state in `RUN_DIR/checkpoints/`.

Saves are synchronous: a step's checkpoint is complete (Orbax finalises it with
a rename) before training goes on, so a run killed at any moment resumes from
its newest complete checkpoint.  Restoring takes an abstract state whose leaves
carry shardings, so a checkpoint restores onto any mesh.

Each checkpoint records its embedding layout (the backend's `describe()`), so
it restores onto another mesh or backend: `embedding/relayout.py` says what
that takes (zero padding rows added or dropped, tables moved to other groups,
SparseCore <-> TensorCore conversion) and does the moving; this module reads
and writes.  A layout that holds other tables is refused with a clear message.

Each checkpoint also records the run's time so far (`RunTime`), so a resumed
run's `wall_s` and `examples_per_s` cover every process it took, not the last.

A checkpoint that was committed and later damaged (a truncated file after a
full disk, a bad copy between buckets, a lost directory) costs one checkpoint
interval, not the run: `restore_newest_readable` tries the checkpoints newest
first, moves each one that cannot be read to `<step>.unreadable` (never
deleted) once an older one restores, and starts over from step 0 only when
asked to.  In a multi-process run every process reads each candidate and the
processes agree (through a JAX collective) before any of them goes on, so all
of them resume from the same step.

Orbax refuses zero-size arrays (SGD's empty accumulator), so they are stored
as a one-element stand-in and given back empty.
"""
from __future__ import annotations

import contextlib
import json
import logging
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import numpy as np
import orbax.checkpoint as ocp

from dlrm_jax.embedding import placement, relayout
from dlrm_jax.errors import UserError
from dlrm_jax.run import storage
from dlrm_jax.run.chrono import RunTime

LAYOUT_KEY = "embedding_layout"
RUN_TIME_KEY = "run_time"
LOG_WINDOW_KEY = "log_window"
UNREADABLE_SUFFIX = ".unreadable"  # checkpoints/<step>.unreadable: set aside, never deleted
# Orbax's per-step metadata file (it holds our layout and run time).  Orbax logs
# and ignores a damaged one, which would silently lose both, so we check it.
STEP_METADATA_FILE = "_CHECKPOINT_METADATA"
# Orbax's commit marker on object storage, written last into a step (atomicity.py).
COMMIT_FILE = "commit_success.txt"


class SetAside(NamedTuple):
    """A checkpoint that could not be read, and where it was moved (`checkpoints/<step>.unreadable`)."""
    step: int
    reason: str
    moved_to: str  # the directory's new name


class Restored(NamedTuple):
    """What `restore_newest_readable` resumes from.

    step: the restored checkpoint's step (0: a fresh start); state: the restored
    state (the `like` given on a fresh start); run_time: the time recorded with
    it; set_aside: the checkpoints moved aside, newest first.
    """
    step: int
    state: Any
    run_time: RunTime
    set_aside: tuple[SetAside, ...] = ()


UNREADABLE_EVENT = "checkpoint_unreadable"


def unreadable_event(aside: SetAside, resumed_step: int, batch_size: int, flops_per_example: int) -> dict:
    """The metrics.jsonl line for a checkpoint set aside.

    Dated at the step resumed from, so truncating the log to a later resume
    point keeps it, and a fallback to an earlier one drops it with the rest.
    """
    seen = resumed_step * batch_size
    return {"step": resumed_step, "examples_seen": seen, "flops_seen": seen * flops_per_example,
            "event": UNREADABLE_EVENT, "checkpoint": aside.step, "reason": aside.reason,
            "moved_to": f"checkpoints/{aside.moved_to}"}


# A candidate's outcome, agreed between processes as the maximum over them.
_READABLE, _UNREADABLE, _REFUSED = 0, 1, 2


class Checkpointer:
    def __init__(self, directory: Path, keep: int = 2):
        if keep < 2:
            warnings.warn(f"checkpoint.keep={keep}: with a single checkpoint kept, a damaged checkpoint "
                          f"means a restart from step 0 (keep >= 2 lets a run fall back to the one before)",
                          stacklevel=2)
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                               enable_async_checkpointing=False)
        # Not Path(...).absolute(): that turns gs://b/r into <cwd>/gs:/b/r (storage.py).
        self._manager = ocp.CheckpointManager(storage.absolute(directory), options=options,
                                              item_handlers=ocp.StandardCheckpointHandler())
        # Restores read through the item handler, not the manager: the manager's
        # restore ends in a barrier that a process whose read failed never
        # reaches, which would stall the others instead of letting them agree.
        self._reader = ocp.StandardCheckpointHandler()

    @property
    def directory(self) -> Path:
        return storage.path(self._manager.directory)  # a pathlib.Path locally, as before

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state, layout: dict | None = None, run_time: RunTime | None = None,
             log_window: dict | None = None) -> None:
        """`layout`: the state's embedding layout (`Parallel.layout`); `run_time`: the run's time so far;
        `log_window`: the train-loss sums of steps not yet logged (a save between log lines, on
        preemption), so the resumed run's next log line is the uninterrupted one's.  All are kept
        with the checkpoint."""
        state = jax.tree.map(lambda x: _EMPTY if x.size == 0 else x, state)
        custom = {LAYOUT_KEY: layout} if layout is not None else {}
        if run_time is not None:
            custom[RUN_TIME_KEY] = run_time._asdict()
        if log_window is not None:
            custom[LOG_WINDOW_KEY] = log_window
        # A failed write (a full disk) is logged by every Orbax thread it reaches, each with
        # its traceback, then raised here: the raised error is the one report the CLI gives.
        with _quiet_orbax_thread_errors():
            self._manager.save(step, args=ocp.args.StandardSave(state), force=True,
                               custom_metadata=custom or None)
            self._manager.wait_until_finished()

    def _custom_metadata(self, step: int) -> dict:
        return self._manager.metadata(step).custom_metadata or {}

    def saved_layout(self, step: int) -> dict | None:
        return self._custom_metadata(step).get(LAYOUT_KEY)

    def saved_log_window(self, step: int) -> dict | None:
        """The unlogged train-loss window saved with `step` (`save(log_window=...)`), if any."""
        return self._custom_metadata(step).get(LOG_WINDOW_KEY)

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
        _check_step_metadata(self.directory / str(step))
        saved = self.saved_layout(step) if layout is not None else None
        how, why = relayout.how_to_restore(saved, layout)
        if why is not None:
            raise UserError(f"checkpoint {step} in {self._manager.directory}: {why}; resume with "
                            f"the embedding.sharding and mesh.model it was saved with")
        if how == relayout.CONVERTED:
            return self._restore_converted(step, like, saved, layout)
        if how == relayout.RELAID:
            return self._restore_relaid(step, like, saved, layout)
        abstract = jax.tree.map(lambda x: _EMPTY if x.size == 0 else _abstract(x), like)
        # PADDED: only trailing padding rows differ (zero, never read), so the reader pads or drops them.
        restored = self._reader.restore(self._item_dir(step),
                                        args=ocp.args.StandardRestore(abstract, strict=how == relayout.AS_SAVED))
        return jax.tree.map(lambda x, r: _like_empty(x) if x.size == 0 else r, like, restored)

    def _item_dir(self, step: int) -> Path:
        """Where the state of `step` lies (read through the handler, not the manager: see `_reader`)."""
        return self.directory / str(step) / ocp.checkpoint_manager.DEFAULT_ITEM_NAME

    def _restore_converted(self, step: int, like, saved: dict, layout: dict):
        """Restore a checkpoint whose embedding layout is the other backend's (relayout.CONVERTED):
        its tables and optimizer state are read into host memory as saved, converted, then placed
        with `like`'s shardings; everything else restores as usual."""
        optimizer = saved.get("optimizer") or layout.get("optimizer") or relayout.optimizer_of(like.emb)
        host_emb = relayout.host_like(saved, optimizer, saved.get("dim") or layout["dim"])
        abstract = jax.tree.map(lambda x: _EMPTY if x.size == 0 else _abstract(x), like.replace(emb=host_emb))
        restored = self._reader.restore(self._item_dir(step), args=ocp.args.StandardRestore(abstract))
        emb = relayout.convert(saved, layout, restored.emb, optimizer)
        emb = jax.tree.map(lambda t, x: _like_empty(t) if t.size == 0 else _place(np.asarray(x), t), like.emb, emb)
        return restored.replace(emb=emb, params=jax.tree.map(_place_like, restored.params, like.params),
                                opt_state=jax.tree.map(_place_like, restored.opt_state, like.opt_state),
                                step=_place_like(restored.step, like.step))

    def _restore_relaid(self, step: int, like, saved: dict, layout: dict):
        """Restore the tables as `saved` lays them out, then move each table to `layout`'s place
        (relayout.RELAID).  `like` is a TrainState or an embedding state alone."""
        emb_like = like.emb if hasattr(like, "emb") else like
        saved_emb, sgd = relayout.saved_like(saved, emb_like)
        saved_like = like.replace(emb=saved_emb) if hasattr(like, "emb") else saved_emb
        abstract = jax.tree.map(lambda x: _EMPTY if x.size == 0 else _abstract(x), saved_like)
        restored = self._reader.restore(self._item_dir(step), args=ocp.args.StandardRestore(abstract))
        emb = relayout.relayout(placement.as_groups(restored.emb if hasattr(like, "emb") else restored), saved, layout,
                                emb_like, sgd)
        restored = restored.replace(emb=emb) if hasattr(like, "emb") else emb
        return jax.tree.map(lambda x, r: _like_empty(x) if x.size == 0 else r, like, restored)

    def restore_newest_readable(self, like, layout: dict | None = None, *, restart_if_unreadable: bool = False,
                                log: Callable[[str], None] | None = None) -> Restored:
        """Restore the newest checkpoint that can be read; a fresh start if there is none.

        Each checkpoint that fails to read (any error from Orbax or TensorStore,
        a damaged metadata file, an embedding layout that does not fit), newer
        than the one restored, is moved to `<step>.unreadable` and named in one
        line through `log` (stderr by default).  With none readable: a UserError
        naming each and why (nothing moved, so the same command says the same),
        unless `restart_if_unreadable`, which sets them all aside and starts
        from step 0.  A layout refusal with nothing older readable is the user's
        mesh, not damage: it is raised as `restore` raises it, nothing moved.

        Every process calls this; each reads each candidate, and a candidate
        counts as readable only if every process read it.  When it raises, it
        has closed this Checkpointer (no Orbax thread outlives the error).
        """
        try:
            return self._restore_newest_readable(like, layout, restart_if_unreadable,
                                                 log or (lambda line: print(line, file=sys.stderr)))
        except BaseException:
            self.close()
            raise

    def _restore_newest_readable(self, like, layout, restart_if_unreadable: bool, log) -> Restored:
        failed: list[tuple[int, str, int]] = []  # (step, reason, outcome), newest first
        refusal = None
        for step in self._agreed_steps():
            outcome, reason, state, run_time = _READABLE, "", None, RunTime()
            try:
                state = self.restore(step, like, layout)
                run_time = self.saved_run_time(step)
            except UserError as err:  # placement.restorable refused the layout
                outcome, reason, refusal = _REFUSED, str(err), refusal or err
            except Exception as err:  # noqa: BLE001: whatever Orbax and TensorStore raise for a bad file
                outcome, reason = _UNREADABLE, unreadable_reason(err)
                # A failed read can leave TensorStore reads in flight; closing the handler
                # settles them before its event loop goes (else: "Event loop is closed").
                self._reader.close()
                self._reader = ocp.StandardCheckpointHandler()
            agreed, others = _agree(step, outcome)
            if agreed == _READABLE:
                return Restored(step, state, run_time, self._set_aside(failed, log, f"resuming from step {step}"))
            failed.append((step, reason or f"unreadable on process(es) {', '.join(map(str, others))}", agreed))
        if not failed:
            return Restored(0, like, RunTime())
        if refusal is not None or any(o == _REFUSED for _, _, o in failed):
            raise refusal or UserError(f"checkpoint {failed[0][0]} in {self.directory}: {failed[0][1]}")
        if not restart_if_unreadable:
            listed = "; ".join(f"{s}: {r}" for s, r, _ in failed)
            raise UserError(f"no readable checkpoint in {self.directory} ({listed}); rerun with "
                            f"--restart-if-unreadable (checkpoint.restart_if_unreadable=true) to set "
                            f"{'it' if len(failed) == 1 else 'them'} aside and start from step 0")
        aside = self._set_aside(failed, log, "starting from step 0 (restart_if_unreadable)")
        return Restored(0, like, RunTime(), aside)

    def _agreed_steps(self) -> list[int]:
        """The checkpoints' steps, newest first; every process must see the same ones."""
        steps = sorted(self._manager.all_steps(), reverse=True)
        if _process_count() > 1:
            seen = _allgather(np.array([len(steps), max(steps, default=-1)], np.int32))  # [processes, 2]
            if not (seen == seen[0]).all():
                raise UserError(f"the processes see different checkpoints in {self.directory} "
                                f"(count, newest per process: {seen.tolist()}); it must be one shared directory")
        return steps

    def _set_aside(self, failed: list[tuple[int, str, int]], log, then: str) -> tuple[SetAside, ...]:
        """Move each failed checkpoint to `<step>.unreadable` (process 0 alone) and forget it."""
        if not failed:
            return ()
        aside = tuple(SetAside(step, reason, unreadable_path(self.directory, step).name) for step, reason, _ in failed)
        _sync("dlrm_jax.run.checkpoint.set_aside.named")  # every process names the targets before any is taken
        if _process_index() == 0:
            for a in aside:
                # On a bucket the step stops being a checkpoint first (no rename there: storage.move).
                storage.move(self.directory / str(a.step), self.directory / a.moved_to, marker=COMMIT_FILE)
        for a in aside:
            log(f"checkpoint {a.step} in {self.directory} is unreadable ({a.reason}); moved to {a.moved_to}, {then}")
        _sync("dlrm_jax.run.checkpoint.set_aside.moved")  # moved before any process lists the steps again
        storage.forget_listings()  # on a bucket each process's gcsfs still lists the moved step
        self._manager.reload()  # the manager caches its steps; a moved one must not be listed or kept
        return aside

    def close(self) -> None:
        self._reader.close()
        self._manager.close()


@contextlib.contextmanager
def _quiet_orbax_thread_errors():
    def drop(record: logging.LogRecord) -> bool:
        return not (record.levelno >= logging.ERROR and "_SignalingThread" in record.getMessage())
    loggers = [logging.getLogger("absl"), logging.getLogger()]
    for logger in loggers:
        logger.addFilter(drop)
    _ignore_closed_event_loops()
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(drop)


def _ignore_closed_event_loops() -> None:
    """When a save fails, TensorStore's callbacks into the save's finished asyncio loops
    raise "Event loop is closed" in other threads, during and after it, one traceback
    each: harmless (the save is over), so they are not printed.  Any other unraisable
    error still is."""
    previous = sys.unraisablehook
    if getattr(previous, "_drops_closed_loops", False):
        return

    def hook(unraisable):
        if isinstance(unraisable.exc_value, RuntimeError) and "Event loop is closed" in str(unraisable.exc_value):
            return
        previous(unraisable)
    hook._drops_closed_loops = True
    sys.unraisablehook = hook


def unreadable_path(directory: Path, step: int) -> Path:
    """`<step>.unreadable`, or `<step>.unreadable.<n>` when that exists (never overwrite one set aside)."""
    directory = storage.path(directory)
    target, n = directory / f"{step}{UNREADABLE_SUFFIX}", 1
    while storage.exists(target):
        target, n = directory / f"{step}{UNREADABLE_SUFFIX}.{n}", n + 1
    return target


def unreadable_reason(err: BaseException, limit: int = 300) -> str:
    """One line: the innermost cause (TensorStore's own error is at the end of the chain)."""
    while err.__cause__ is not None:
        err = err.__cause__
    text = next((line for line in str(err).splitlines() if line.strip()), "")
    text = text.split(" [tensorstore_spec=")[0].strip()  # TensorStore appends the whole spec
    line = f"{type(err).__name__}: {text}" if text else type(err).__name__
    return line if len(line) <= limit else line[:limit - 3] + "..."


def _check_step_metadata(step_dir: Path) -> None:
    """Orbax reads a damaged or missing step metadata file as empty; we need what it holds."""
    path = step_dir / STEP_METADATA_FILE
    try:
        json.loads(storage.read_text(path))
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: {err}") from None


# The processes' view, in functions of their own so tests can play a second process.
def _process_index() -> int:
    return jax.process_index()


def _process_count() -> int:
    return jax.process_count()


def _allgather(x: np.ndarray) -> np.ndarray:
    """Every process's `x`, stacked in process order: [processes, *x.shape]."""
    from jax.experimental import multihost_utils
    return np.asarray(multihost_utils.process_allgather(x))


def _sync(name: str) -> None:
    if _process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)


def _agree(step: int, outcome: int) -> tuple[int, list[int]]:
    """Every process's outcome for `step` -> (the worst one, the processes that could not read it)."""
    if _process_count() == 1:
        return outcome, []
    seen = _allgather(np.array([step, outcome], np.int32))  # [processes, 2]
    if not (seen[:, 0] == step).all():
        raise RuntimeError(f"processes tried different checkpoints {seen[:, 0].tolist()} at once")
    return int(seen[:, 1].max()), [i for i, o in enumerate(seen[:, 1]) if o != _READABLE]


_EMPTY = np.zeros((1,), np.float32)


def _like_empty(x):
    if isinstance(x, jax.ShapeDtypeStruct):
        return jax.numpy.zeros(x.shape, x.dtype, device=x.sharding)
    return x


def _place(x: np.ndarray, like):
    sharding = getattr(like, "sharding", None)
    return jax.device_put(x, sharding) if sharding is not None else jax.numpy.asarray(x)


def _place_like(x, like):
    return x if getattr(x, "sharding", None) == getattr(like, "sharding", None) else _place(np.asarray(x), like)


def _abstract(x):
    if isinstance(x, jax.ShapeDtypeStruct):
        return x
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None))
