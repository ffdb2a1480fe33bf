"""SparseCore work in a compiled TPU program, and the ahead-of-time compile of a SparseCore step.

On a TPU with SparseCores, libtpu runs SparseCore work as asynchronous calls
on the "sparsecore" execution thread:

    %sparse-core-call.N.call-start = ... call-start(), async_execution_thread="sparsecore", ...,
        metadata={op_name=".../tpu_sparse_dense_matmul/sparse_dense_matmul_csr" ...}

`sparsecore_ops` counts them per step, those of jax-tpu-embedding (the lookup
`tpu_sparse_dense_matmul`, one call per table stack, and the fused update
`tpu_sparse_dense_matmul_grad`: one per stack with SGD, three with our Adagrad
custom optimizer, as libtpu 0.0.50.1 compiles it) apart from the others
("other"), and the calls libtpu makes by itself, by the instruction's name
(`sparsecore_offloads`): it moves gathers and scatters of the TensorCore program
onto the SparseCores (`gather_offload_*`, `scatter_offload_*`, with a few `copy`
calls feeding them).  The 26 SparseCore calls of criteo-mlperf-dcnv2's TensorCore
step on v5p-128 (libtpu 0.0.50.1) are all such: 16 gathers (the exchange's row
lookups, `jnp.take`), 8 scatters (the dedup's scatter-min, the gradient and count
scatter-adds) and 2 copies; none is the library's.  And the
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

_SC_CALL = re.compile(r'^\s*(?:ROOT\s+)?%?(?P<name>[\w.\-]*)[^\n]*?'
                      r'call-start\([^\n]*async_execution_thread="sparsecore"[^\n]*', re.M)
OFFLOADS = ("gather", "scatter", "copy")
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_TARGET = re.compile(r'custom_call_target="([^"]+)"')
LIBRARY_OPS = ("tpu_sparse_dense_matmul_grad", "tpu_sparse_dense_matmul")


def sparsecore_ops(hlo_text: str) -> dict:
    """SparseCore calls of one step in compiled HLO text (see the module docstring)."""
    calls = list(_SC_CALL.finditer(hlo_text))
    by_op: Counter = Counter()
    offloads: Counter = Counter()
    for call in calls:
        m = _OP_NAME.search(call.group(0))
        name = m.group(1) if m else ""
        kind = next((op for op in LIBRARY_OPS if f"/{op}/" in name or name.endswith(f"/{op}")), None)
        by_op[kind or "other"] += 1
        if kind is None:      # libtpu's own: what it offloaded, by the instruction's name
            offloads[next((o for o in OFFLOADS if call["name"].startswith(o)), "other")] += 1
    targets = Counter(_TARGET.findall(hlo_text))
    sparse = {k: v for k, v in sorted(targets.items()) if k.startswith(("Sparse", "AllToAllDynamic", "PartitionCsr",
                                                                         "DynamicSliceCsr", "RowPtr"))}
    return {"sparsecore_calls": len(calls),
            "sparsecore_library_calls": sum(v for k, v in by_op.items() if k in LIBRARY_OPS),
            "sparsecore_calls_by_op": dict(by_op),
            "sparsecore_offloads": dict(offloads),
            "sparsecore_custom_calls": sparse}
