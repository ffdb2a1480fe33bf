"""Per-device memory of a compiled step: the one peak formula that bench and compile report.

XLA's memory analysis splits a program's device memory into arguments, outputs,
temporaries and generated code, with donated (aliased) argument buffers counted in
both arguments and outputs.  The program's code is resident in device memory while
it runs (libtpu counts it as "program" in its out-of-memory message), so it belongs
in the peak:

    peak = arguments + outputs - aliased + temporaries + generated code

On CPU the code is host memory and small; on TPU it is a few MiB of HBM.
"""
from __future__ import annotations

FIELDS = ("argument", "output", "temp", "alias", "generated_code")


def memory_per_device(compiled) -> dict:
    """Bytes per device of a compiled program, with `peak` (see the module docstring); {} where
    the backend gives no analysis."""
    m = compiled.memory_analysis()
    if m is None:
        return {}
    out = {k: int(getattr(m, f"{k}_size_in_bytes")) for k in FIELDS}
    out["peak"] = peak_bytes(out)
    return out


def peak_bytes(memory: dict) -> int:
    return memory["argument"] + memory["output"] - memory["alias"] + memory["temp"] + memory["generated_code"]
