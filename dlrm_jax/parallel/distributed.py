"""Several processes (hosts) as one JAX program: start-up and per-host batches.

On a Cloud TPU VM pod or a multi-node GPU job, every host runs the same
command; `initialize` joins them (`distributed.initialize=true`) before JAX
touches a device.  Each host then reads only its contiguous slice of every
global batch (`DataSource.train_batches(..., host_index, host_count)`) and
`global_batch` assembles the slices into one array sharded over the mesh.
scripts/launch_tpu_pod.sh and scripts/launch_local.py start such jobs.
"""
from __future__ import annotations

import jax
import numpy as np

from dlrm_jax.errors import UserError


def initialize(dist_cfg) -> None:
    """`jax.distributed.initialize()` with what `distributed.*` sets; the rest is auto-detected
    (Cloud TPU, SLURM, Open MPI).  A no-op unless `distributed.initialize` is true, or when done."""
    if not dist_cfg.initialize or jax.distributed.is_initialized():
        return
    kwargs = {}
    if dist_cfg.coordinator:
        kwargs["coordinator_address"] = dist_cfg.coordinator
    if dist_cfg.num_processes > 0:
        kwargs["num_processes"] = dist_cfg.num_processes
    if dist_cfg.process_id >= 0:
        kwargs["process_id"] = dist_cfg.process_id
    try:
        jax.distributed.initialize(**kwargs)
    except (ValueError, RuntimeError) as err:
        raise UserError(f"jax.distributed.initialize({', '.join(f'{k}={v!r}' for k, v in kwargs.items())}) "
                        f"failed: {str(err).splitlines()[0]}") from err


def global_batch(local: np.ndarray, sharding: jax.sharding.Sharding) -> jax.Array:
    """This host's rows [B / hosts, ...] of a global batch -> the global array [B, ...]."""
    shape = (local.shape[0] * jax.process_count(), *local.shape[1:])
    return jax.make_array_from_process_local_data(sharding, local, shape)


def replicated_input(full: np.ndarray, sharding: jax.sharding.Sharding) -> jax.Array:
    """An array every host holds whole (the eval set) -> a global array; each host places its shards."""
    return jax.make_array_from_callback(full.shape, sharding, lambda index: full[index])
