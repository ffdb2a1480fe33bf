"""Orbax checkpoints of the train state in `RUN_DIR/checkpoints/`.

Saves are synchronous: a step's checkpoint is complete (Orbax finalises it with
a rename) before training goes on, so a run killed at any moment resumes from
its newest complete checkpoint.  Restoring takes an abstract state whose leaves
carry shardings, so a checkpoint restores onto any mesh.
"""
from __future__ import annotations

from pathlib import Path

import jax
import orbax.checkpoint as ocp


class Checkpointer:
    def __init__(self, directory: Path, keep: int = 2):
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                               enable_async_checkpointing=False)
        self._manager = ocp.CheckpointManager(Path(directory).absolute(), options=options)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state) -> None:
        self._manager.save(step, args=ocp.args.StandardSave(state), force=True)
        self._manager.wait_until_finished()

    def restore(self, step: int, like):
        """Restore `step` into the structure, dtypes and shardings of `like` (arrays or ShapeDtypeStructs)."""
        abstract = jax.tree.map(_abstract, like)
        return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))

    def close(self) -> None:
        self._manager.close()


def _abstract(x):
    if isinstance(x, jax.ShapeDtypeStruct):
        return x
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None))
