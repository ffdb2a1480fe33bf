"""`dlrm-scaling compile`: the exact train step compiled ahead of time, without running it.

Per device of the target: argument, temporary and peak memory against the
device's memory, the collectives by kind with their bytes
(`hlo_collectives.py`: async pairs once, cross-slice traffic apart), XLA's
cost-analysis FLOPs beside the analytic FLOPs of `accounting.py`, the
owner-routed lower bound of the embedding traffic, and the compile time.

Targets:
* `--devices N`: N fake CPU devices (XLA's host device count is set before
  JAX starts; a process whose JAX already runs with another count re-runs
  the command in a fresh one);
* `--topology v5e-16,v5p-128 [--slices S]`: Cloud TPU slices through libtpu's
  topology descriptions (`tpu_topologies.py`; needs `pip install -e '.[tpu]'`).
A model that does not fit is an answer ("does not fit", with the compiler's
message, the bytes needed and the capacity), not an error.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from dlrm_jax.errors import UserError

_HOST_DEVICES = "--xla_force_host_platform_device_count"


def _parser() -> argparse.ArgumentParser:
    from dlrm_jax.config import PRESETS  # plain Python: importing it starts no JAX
    p = argparse.ArgumentParser(prog="dlrm-scaling compile",
                                description="compile the train step ahead of time and report per device")
    p.add_argument("--preset", help=f"named preset: {', '.join(PRESETS)}")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (repeatable)")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--devices", type=int, help="N fake CPU devices")
    target.add_argument("--topology", help="TPU slice(s), comma-separated: v5e-16,v5p-128,v6e-256,v4-8,tpu7x-8")
    p.add_argument("--slices", type=int, default=1, help="TPU slices joined by DCN (multi-slice)")
    p.add_argument("--batch", type=int, help="global batch (default: the config's train.batch_size)")
    p.add_argument("--json", action="store_true", help="one JSON object per target, one per line")
    p.add_argument("--hlo-out", help="write the compiled HLO text here (with several targets: FILE.TARGET)")
    return p


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.devices is not None:
            most = _max_devices()
            if not 1 <= args.devices <= most:
                raise UserError(f"--devices must be 1 to {most} (the devices of the largest TPU "
                                f"slice named in tpu_topologies), got {args.devices}")
            code = _ensure_host_devices(args.devices, argv)
            if code is not None:
                return code
        elif args.topology and not _jax_started():
            # Compile-only TPU devices come from libtpu's topology; the process itself must not
            # try to start a TPU backend on a CPU host (it would probe for chips and time out).
            os.environ.setdefault("JAX_PLATFORMS", "cpu")
        return _run(args)
    except UserError as err:
        print(f"dlrm-scaling compile: error: {err}", file=sys.stderr)
        return 2


def _max_devices() -> int:
    """Fake CPU devices stand in for a slice's: no more than the largest slice has (8192;
    XLA took 54 s to start that many on the 2-core VM, and 10**8 never finished)."""
    from dlrm_jax.compile import topologies as tpu_topologies
    slices = (tpu_topologies.parse(n) for n in tpu_topologies.accepted_names())
    return max(s.chips * s.devices_per_chip for s in slices)


def _ensure_host_devices(n: int, argv: list[str]) -> int | None:
    """Give this process n CPU devices before JAX starts; if JAX already runs otherwise, re-run in a child."""
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith(_HOST_DEVICES)]
    env_flags = " ".join(flags + [f"{_HOST_DEVICES}={n}"])
    if not _jax_started():
        os.environ["XLA_FLAGS"] = env_flags
        os.environ["JAX_PLATFORMS"] = "cpu"
        return None
    import jax
    if jax.devices()[0].platform == "cpu" and jax.device_count() == n:
        return None
    env = {**os.environ, "XLA_FLAGS": env_flags, "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, "-m", "dlrm_jax", "compile", *argv], env=env).returncode


def _jax_started() -> bool:
    if "jax" not in sys.modules:
        return False
    try:
        from jax._src import xla_bridge
        return bool(xla_bridge.backends_are_initialized())
    except (ImportError, AttributeError):
        return True


def _run(args) -> int:
    from dlrm_jax.compile import topologies as tpu_topologies
    from dlrm_jax.config import load_config
    cfg = load_config(args.preset, args.overrides)
    if args.batch is not None:
        if args.batch <= 0:
            raise UserError(f"--batch must be positive, got {args.batch}")
        cfg = cfg.replace(**{"train.batch_size": args.batch, "train.examples": max(cfg.train.examples, args.batch)})
    slices = _targets(args.topology, args.slices)   # all names checked before any compile
    if args.hlo_out:                                # and where the HLO goes (it was found after)
        from dlrm_jax.run.files import check_writable_file
        for s in slices if len(slices) > 1 else [None]:
            path = args.hlo_out if s is None else f"{args.hlo_out}.{s.name}"
            check_writable_file(path, "--hlo-out")
    reports = []
    if slices:
        for s in slices:
            reports.append(compile_report(cfg, tpu_topologies.devices(s), target=s))
    else:
        import jax
        reports.append(compile_report(cfg, jax.devices()))
    for r in reports:
        if args.hlo_out:
            path = args.hlo_out if len(reports) == 1 else f"{args.hlo_out}.{r['target']}"
            from dlrm_jax.run.files import write_atomic
            write_atomic(Path(path), r.pop("_hlo") or "")
            r["hlo_out"] = path
        r.pop("_hlo", None)
        print(json.dumps(r) if args.json else format_report(r))
    if len(reports) > 1 and not args.json:
        fit = [r for r in reports if r["fits"]]
        print("smallest that fits: " + (min(fit, key=lambda r: r["devices"])["target"] if fit
                                        else "none of " + ", ".join(r["target"] for r in reports)))
    return 0


def _targets(topology: str | None, slices: int) -> list:
    """The TPU Slices of `--topology A,B --slices K`; [] for CPU devices (no --topology).

    `--topology ,` (or an empty name between commas) was read as no topology at all and
    compiled for the CPU without a word; --slices without --topology was ignored."""
    from dlrm_jax.compile import topologies as tpu_topologies
    if topology is None:
        if slices != 1:
            raise UserError(f"--slices {slices} needs --topology (slices of a TPU topology)")
        return []
    names = [t.strip() for t in topology.split(",")]
    if not all(names):
        raise UserError(f"--topology {topology!r} has an empty name; give NAME[,NAME...], "
                        "e.g. v5e-16,v5p-128")
    return [tpu_topologies.parse(t, slices) for t in names]


def compile_report(cfg, devices, target=None) -> dict:
    """Compile cfg's train step for `devices` (a TPU Slice's or CPU devices) and report per device."""
    import jax

    from dlrm_jax import embedding as emb_lib
    from dlrm_jax.build import build
    from dlrm_jax.compile import hlo_collectives, sparsecore as sparsecore_compile
    from dlrm_jax.compile.memory import memory_per_device

    n = len(devices)
    b = cfg.train.batch_size
    built = build(cfg, devices)
    layout, acct, par = built.layout, built.accounting, built.par
    capacity = getattr(target, "hbm_bytes", None)
    per_device_batch = b // n
    dense_bytes = 4 * sum(x.size for x in jax.tree.leaves(par.abstract_state.params))
    f, d = len(layout.rows), layout.dim
    # Owner-routed lower bound per device and step: its own ids, their rows
    # (forward) and row gradients (backward), plus the dense gradient all-reduce.
    bound = per_device_batch * f * (4 + 2 * d * 4) + dense_bytes
    report = {
        "target": target.name if target is not None else f"{devices[0].platform}-{n}",
        "platform": devices[0].platform, "device_kind": getattr(devices[0], "device_kind", ""),
        "devices": n, "slices": getattr(target, "slices", 1), "topology": getattr(target, "topology", None),
        "mesh": built.mesh_shape,
        "embedding_sharding": built.embedding_sharding,
        "global_batch": b, "per_device_batch": per_device_batch,
        "table_rows": layout.total_rows, "embed_dim": d,
        "table_bytes": emb_lib.table_bytes(layout, cfg.embedding.optimizer),
        "device_memory_bytes": capacity,
        "flops_analytic": acct.flops_per_example * per_device_batch,
        "owner_routed_bound_bytes": bound,
        "jax_version": jax.__version__,
    }
    backend = par.backend
    if getattr(backend, "pools_bags", False):   # multi-hot bags: how each table group exchanges them
        report["bag_exchange"] = [backend.exchange_mode(i, b) for i in range(len(backend.placement.groups))]
    state_bytes = sum(_shard_bytes(x) for x in jax.tree.leaves(par.abstract_state))
    t0 = time.perf_counter()
    try:
        compiled = built.lower().compile()
    except Exception as err:  # noqa: BLE001 -- XLA's out-of-memory error type differs across jax versions
        if not _is_oom(err):
            raise
        # libtpu's figure ("required for HLO temporaries") includes the state's own shard
        # (measured: 23.66 GiB for criteo-mlperf on v5e-4, whose state is 22.55 GiB per chip).
        needed = _bytes_needed(str(err))
        report.update(fits=False, compile_s=time.perf_counter() - t0, error=_first_lines(str(err)),
                      memory={"argument": state_bytes}, bytes_needed=max(needed or 0, state_bytes),
                      _hlo=None, collectives=None)
        return report
    report["compile_s"] = time.perf_counter() - t0
    memory = memory_per_device(compiled)
    report["memory"] = memory
    report["fits"] = capacity is None or not memory or memory["peak"] <= capacity
    if not report["fits"]:
        report["bytes_needed"] = memory["peak"]
    hlo = compiled.as_text()
    slice_of = None
    if getattr(target, "slices", 1) > 1:
        order = list(par.mesh.devices.flat)
        slice_of = lambda i: getattr(order[i], "slice_index", 0)  # noqa: E731
    coll = hlo_collectives.bytes_by_kind(hlo, slice_of)
    report["collectives"] = coll["within_slice"]
    report["collectives_cross_slice"] = coll["cross_slice"]
    total = sum(coll["within_slice"].values()) + sum(coll["cross_slice"].values())
    report["collective_bytes"] = total
    report["collective_bytes_over_bound"] = total / bound
    report["flops_xla"], report["bytes_accessed_xla"] = _cost(compiled)
    if target is not None:   # a TPU slice: the chip's published figures give a step-time estimate
        from dlrm_jax.compile.estimate import estimate
        report["estimate"] = estimate(
            generation=target.generation, topology=target.topology, devices=n,
            devices_per_chip=target.devices_per_chip, global_batch=b, flops=report["flops_xla"],
            bytes_accessed=report["bytes_accessed_xla"], collectives=coll["within_slice"],
            cross_slice=coll["cross_slice"])
    report.update(sparsecore_compile.sparsecore_ops(hlo))  # 0 calls on CPU and on TPUs without SparseCores
    if cfg.embedding.backend == "sparsecore":   # the library's stacking and sharding, as a checkpoint records it
        report["layout"] = par.layout
    report["_hlo"] = hlo
    return report


def _shard_bytes(x) -> int:
    """Bytes of one device's shard of a ShapeDtypeStruct (the whole array without a sharding)."""
    import numpy as np
    shape = x.sharding.shard_shape(x.shape) if getattr(x, "sharding", None) is not None else x.shape
    return int(np.prod(shape)) * x.dtype.itemsize


def _cost(compiled) -> tuple[float | None, float | None]:
    """XLA's FLOPs and bytes accessed of one step per device (None where the backend gives none)."""
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    cost = cost or {}
    flops, accessed = cost.get("flops"), cost.get("bytes accessed")
    return (float(flops) if flops is not None else None, float(accessed) if accessed is not None else None)


def _is_oom(err: Exception) -> bool:
    text = str(err)
    return "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower() or "Ran out of memory" in text


_UNITS = {"": 1, "K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30, "T": 2 ** 40}


def _bytes_needed(text: str) -> int | None:
    """The bytes the compiler's out-of-memory message says were needed (libtpu's wordings), else None.

    'Used 98.5G of 15.75G hbm', or 'the total memory required for HLO
    temporaries (23.66G) exceeds available HBM (15.75G)' (libtpu 0.0.42; G = GiB).
    """
    m = (re.search(r"Used ([\d.]+)([KMGT]?) of [\d.]+[KMGT]? hbm", text)
         or re.search(r"required for [\w ]+\(([\d.]+)([KMGT]?)\) exceeds", text))
    return int(float(m.group(1)) * _UNITS[m.group(2)]) if m else None


def _first_lines(text: str, n: int = 3) -> str:
    return "\n".join(line for line in text.strip().splitlines()[:n])


def _gib(x) -> str:
    if x is None:
        return "n/a"
    return f"{x / 2 ** 30:,.2f} GiB" if x >= 2 ** 30 else f"{x / 2 ** 20:,.1f} MiB"


def _mb(x) -> str:
    return f"{x / 1e6:,.1f} MB"


def format_report(r: dict) -> str:
    head = (f"{r['target']} ({r['devices']} x {r['device_kind'] or r['platform']}"
            f"{', ' + r['topology'] if r.get('topology') else ''}"
            f"{', %d slices' % r['slices'] if r['slices'] > 1 else ''}),"
            f" mesh {r['mesh']}, {r['embedding_sharding']} tables: {r['table_rows']:,} rows x {r['embed_dim']} "
            f"({_gib(r['table_bytes'])} with optimizer state), global batch {r['global_batch']:,} "
            f"({r['per_device_batch']:,} per device)")
    if not r["fits"]:
        m = r.get("memory") or {}
        lines = [head, f"  does not fit: needs {_gib(r.get('bytes_needed'))} per device (its share of the "
                       f"state alone {_gib(m.get('argument'))}), "
                       f"{_gib(r['device_memory_bytes'])} available (compile {r['compile_s']:.1f} s)"]
        if r.get("error"):
            lines.append("  compiler: " + r["error"].replace("\n", "\n            "))
        return "\n".join(lines)
    m = r["memory"]
    lines = [head,
             f"  fits: peak {_gib(m.get('peak'))} per device of {_gib(r['device_memory_bytes'])} "
             f"(arguments {_gib(m.get('argument'))}, temporaries {_gib(m.get('temp'))}); "
             f"compile {r['compile_s']:.1f} s",
             "  collectives per device and step: " + (", ".join(f"{k} {_mb(v)}" for k, v in r["collectives"].items())
                                                      or "none")]
    if r.get("collectives_cross_slice"):
        cross = r["collectives_cross_slice"]
        lines.append("  cross-slice (DCN): " + ", ".join(f"{k} {_mb(v)}" for k, v in cross.items()))
    lines.append(f"  total {_mb(r['collective_bytes'])} = {r['collective_bytes_over_bound']:.2f} x the owner-routed "
                 f"bound {_mb(r['owner_routed_bound_bytes'])}"
                 + (f"; multi-hot bags per table group: {', '.join(r['bag_exchange'])}" if r.get("bag_exchange")
                    else ""))
    if r.get("sparsecore_calls"):
        lines.append(f"  SparseCore calls per step: {r['sparsecore_calls']} (jax-tpu-embedding lookups and updates: "
                     f"{r['sparsecore_library_calls']}; inside: "
                     + ", ".join(f"{k} {v}" for k, v in r["sparsecore_custom_calls"].items()) + ")")
        if r.get("sparsecore_offloads"):
            lines.append("  libtpu's own SparseCore calls (offloaded from the TensorCore program): "
                         + ", ".join(f"{k} {v}" for k, v in sorted(r["sparsecore_offloads"].items())))
    fx = r.get("flops_xla")
    lines.append(f"  FLOPs per device and step: XLA {fx / 1e9:,.2f} G, analytic {r['flops_analytic'] / 1e9:,.2f} G"
                 if fx else f"  FLOPs per device and step: analytic {r['flops_analytic'] / 1e9:,.2f} G")
    if r.get("estimate"):
        from dlrm_jax.compile.estimate import format_estimate
        lines.append(format_estimate(r["estimate"]))
    return "\n".join(lines)
