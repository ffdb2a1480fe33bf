"""The device mesh and the rules table: the only place that names mesh axes.

Model code names tensor roles; `RULES` maps each role to mesh axes (MaxText's
logical axis rules, in small).  The mesh has two axes:

    data   data parallelism
    model  model parallelism

The batch is split over *both* axes (every device runs the dense arch on
B / devices examples), dense params are replicated (their gradient all-reduce
comes from jit's sharding propagation), and each table group
(`embedding/placement.py`) is replicated or row-sharded over *every* device
(data x model): a table replicated over `data` would need every replica to
apply the whole global batch's update, traffic that grows with the device
count (`embedding/exchange.py`).
Code that needs an axis by name inside `shard_map` asks `axis(role)`.
"""
from __future__ import annotations

import jax
from jax.sharding import PartitionSpec as P

from dlrm_jax.errors import UserError

AXES = ("data", "model")

# Tensor role -> mesh axes of its leading dimension (None: replicated).
RULES: dict[str, str | tuple[str, ...] | None] = {
    "batch": ("data", "model"),     # examples [B, ...]
    "table_rows": ("data", "model"),  # rows of a sharded table group [rows, ...]: every device
    "replicated_table": None,       # small tables, every device
    "dense_param": None,            # MLP weights and their optimizer state
    "scalar": None,                 # step counter
    "host_output": None,            # loss, eval logits: every host reads them whole
}


def axis(role: str) -> str | tuple[str, ...]:
    """The mesh axis (or axes) a role is split over, for collectives inside `shard_map`."""
    name = RULES[role]
    if name is None:
        raise ValueError(f"role {role!r} is replicated: it has no mesh axis")
    return name


def spec(role: str, ndim: int = 1) -> P:
    """PartitionSpec of a tensor with `ndim` dims whose leading dim plays `role`."""
    return P(RULES[role], *([None] * (ndim - 1))) if ndim else P()


def mesh_shape(mesh_cfg, num_devices: int) -> tuple[int, int]:
    """(data, model) with -1 filled; UserError when the devices cannot be split so."""
    data, model = mesh_cfg.data, mesh_cfg.model
    if data == -1 or model == -1:
        fixed, name = (model, "mesh.model") if data == -1 else (data, "mesh.data")
        if num_devices % fixed:
            raise UserError(f"{name}={fixed} does not divide the {num_devices} devices")
        data, model = (num_devices // fixed, model) if data == -1 else (data, num_devices // fixed)
    if data * model > num_devices:
        raise UserError(f"mesh.data={data} x mesh.model={model} needs {data * model} devices; "
                        f"{num_devices} are available")
    return data, model


def make_mesh(mesh_cfg, devices=None) -> jax.sharding.Mesh:
    """The (data, model) mesh; a mesh smaller than the devices uses the first ones (one process only)."""
    devices = list(jax.devices() if devices is None else devices)
    data, model = mesh_shape(mesh_cfg, len(devices))
    if data * model < len(devices) and jax.process_count() > 1:
        raise UserError(f"mesh.data={data} x mesh.model={model} leaves devices idle; with several "
                        f"processes the mesh must use all {len(devices)} devices")
    auto = (jax.sharding.AxisType.Auto,) * len(AXES)
    slices = len({getattr(d, "slice_index", 0) for d in devices})
    if slices > 1:  # multi-slice TPU: `data` spans the slices (DCN), `model` stays within one
        from jax.experimental import mesh_utils
        if data % slices or data * model != len(devices):
            raise UserError(f"mesh.data={data} x mesh.model={model} over {slices} TPU slices: mesh.data must be a "
                            f"multiple of the slices and the mesh must use all {len(devices)} devices")
        grid = mesh_utils.create_hybrid_device_mesh((data // slices, model), (slices, 1), devices)
        return jax.sharding.Mesh(grid, AXES, axis_types=auto)
    return jax.make_mesh((data, model), AXES, axis_types=auto, devices=devices[:data * model])
