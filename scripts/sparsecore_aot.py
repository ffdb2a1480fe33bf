"""Compile criteo-mlperf's train step ahead of time for TPU slices, SparseCore and TensorCore backends.

    ALLOW_MULTIPLE_LIBTPU_LOAD=1 python scripts/sparsecore_aot.py --topology v5p-128 --backend sparsecore \
        --batch 262144 --out sc_v5p128.json [--hlo-out sc_v5p128.hlo]

Needs the `sparsecore` extra (Python >= 3.12) for --backend sparsecore; any CPU host works
(libtpu describes the slice).  One JSON object: fits, per-chip memory, compile time, the
SparseCore calls of the step (sparsecore_compile.sparsecore_ops) and, where the HLO
collective reader is present (`dlrm_jax.compile.hlo_collectives`), collective bytes by kind.
"""
import argparse
import json
import os
import sys
import time

os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# user names -> (libtpu topology, chip config, HBM bytes per device); Cloud TPU docs' per-chip HBM
SLICES = {"v5p-128": ("v5p:4x4x4", "megacore", 95 * 2 ** 30), "v6e-256": ("v6e:16x16", "default", 32 * 2 ** 30),
          "v5p-8": ("v5p:2x2x1", "megacore", 95 * 2 ** 30), "tpu7x-8": ("tpu7x:2x2x1", "default", 96 * 2 ** 30)}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--topology", required=True, choices=sorted(SLICES))
    p.add_argument("--backend", default="sparsecore", choices=("sparsecore", "tensorcore"))
    p.add_argument("--batch", type=int, default=262144)
    p.add_argument("--preset", default="criteo-mlperf")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--out", required=True)
    p.add_argument("--hlo-out")
    a = p.parse_args()
    from jax.experimental import topologies
    from dlrm_jax.config import load_config
    from dlrm_jax.run.files import write_atomic
    from dlrm_jax.compile.sparsecore import compile_step, sparsecore_ops
    name, chip_config, hbm = SLICES[a.topology]
    topo = topologies.get_topology_desc(topology_name=name, platform="tpu", chip_config_name=chip_config,
                                        chips_per_host_bounds=(2, 2, 1), num_slices=1)
    cfg = load_config(a.preset, [f"embedding.backend={a.backend}", "embedding.optimizer=adagrad",
                                 f"train.batch_size={a.batch}", f"train.examples={max(a.batch, 2 ** 20)}",
                                 "mesh.data=-1", *a.overrides])
    t0 = time.perf_counter()
    report = {"topology": a.topology, "libtpu_topology": name, "backend": a.backend, "devices": len(topo.devices),
              "device_kind": topo.devices[0].device_kind, "global_batch": a.batch, "hbm_bytes": hbm}
    try:
        compiled, par = compile_step(cfg, list(topo.devices))
    except Exception as err:  # noqa: BLE001 -- a compile-time out-of-memory is an answer
        report.update(fits=False, error=str(err)[:2000], compile_s=time.perf_counter() - t0)
        write_atomic(a.out, json.dumps(report, indent=1))
        print(json.dumps(report))
        return 0
    report["compile_s"] = time.perf_counter() - t0
    m = compiled.memory_analysis()
    mem = {"argument": m.argument_size_in_bytes, "output": m.output_size_in_bytes, "alias": m.alias_size_in_bytes,
           "temp": m.temp_size_in_bytes, "code": m.generated_code_size_in_bytes}
    mem["peak"] = mem["argument"] + mem["output"] - mem["alias"] + mem["temp"] + mem["code"]
    report.update(fits=mem["peak"] <= hbm, memory=mem, layout=par.layout if a.backend == "sparsecore" else None)
    hlo = compiled.as_text()
    report.update(sparsecore_ops(hlo))
    try:
        from dlrm_jax.compile import hlo_collectives
        report["collectives"] = hlo_collectives.bytes_by_kind(hlo)["within_slice"]
    except ImportError:
        report["collectives"] = None
    if a.hlo_out:
        write_atomic(a.hlo_out, hlo)
    write_atomic(a.out, json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items() if k != "layout"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
