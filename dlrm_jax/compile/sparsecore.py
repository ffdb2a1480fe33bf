"""SparseCore work in a compiled TPU program, and the ahead-of-time compile of a SparseCore step.

On a TPU with SparseCores, libtpu runs SparseCore work as asynchronous calls
on the "sparsecore" execution thread:

    %sparse-core-call.N.call-start = ... call-start(), async_execution_thread="sparsecore", ...,
        metadata={op_name=".../tpu_sparse_dense_matmul/sparse_dense_matmul_csr" ...}

`sparsecore_ops` counts them per step, those of jax-tpu-embedding (the lookup
`tpu_sparse_dense_matmul`, one call per table stack, and the fused update
`tpu_sparse_dense_matmul_grad`: one per stack with SGD, three with our Adagrad
custom optimizer, as libtpu 0.0.50.1 compiles it) apart from the others
("other": calls without an op name, which libtpu makes by itself, e.g. for
gathers and scatters of the TensorCore program; 22 in the small test step), and the
SparseCore custom calls inside (SparseGather, AllToAllDynamic, PartitionCsr,
...): the id all-to-all of the SparseCore path is such a custom call, not an
HLO collective, so a collectives count alone does not show it.

`dlrm-scaling compile --set embedding.backend=sparsecore` (compile/report.py)
compiles the exact SparseCore train step (dlrm_jax/build.py) for a slice's
compile-only devices and adds these counts to its report.
"""
from __future__ import annotations

import re
from collections import Counter

_SC_CALL = re.compile(r'call-start\([^\n]*async_execution_thread="sparsecore"[^\n]*')
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_TARGET = re.compile(r'custom_call_target="([^"]+)"')
LIBRARY_OPS = ("tpu_sparse_dense_matmul_grad", "tpu_sparse_dense_matmul")


def sparsecore_ops(hlo_text: str) -> dict:
    """SparseCore calls of one step in compiled HLO text (see the module docstring)."""
    calls = _SC_CALL.findall(hlo_text)
    by_op: Counter = Counter()
    for line in calls:
        m = _OP_NAME.search(line)
        name = m.group(1) if m else ""
        kind = next((op for op in LIBRARY_OPS if f"/{op}/" in name or name.endswith(f"/{op}")), None)
        by_op[kind or "other"] += 1
    targets = Counter(_TARGET.findall(hlo_text))
    sparse = {k: v for k, v in sorted(targets.items()) if k.startswith(("Sparse", "AllToAllDynamic", "PartitionCsr",
                                                                         "DynamicSliceCsr", "RowPtr"))}
    return {"sparsecore_calls": len(calls),
            "sparsecore_library_calls": sum(v for k, v in by_op.items() if k in LIBRARY_OPS),
            "sparsecore_calls_by_op": dict(by_op),
            "sparsecore_custom_calls": sparse}
