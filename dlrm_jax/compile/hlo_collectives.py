"""The collectives of a compiled XLA program, read from its HLO text.

Per device bytes of each collective op, by kind.  Convention: the bytes a
device's buffer of the op's *result* holds (for an all-gather, the gathered
array; for an all-reduce, the reduced array; for a reduce-scatter, the
scattered piece; for an all-to-all, what the device receives), which is what
it receives over the interconnect up to a constant of the algorithm (a ring
all-reduce sends and receives about 2x its array).  Async pairs
(`all-gather-start` / `-done`) are counted once, at their start.  An op inside
a while loop (the embedding exchange's rounds) is counted once: the figure is
per round, and a step without overflow runs one round.

With `slice_of` (device id -> slice), an op whose replica groups span several
slices is counted apart as cross-slice (data-center network, DCN) traffic.
libtpu lowers the cross-slice part of a multi-slice collective to host
transfers (`send` with `_xla_host_transfer_handler_name="xla_megascale_runtime"`,
named after the collective, e.g. `all_to_all.39_0`): those sends are counted as
cross-slice traffic of that kind (pmin/pmax/psum: all-reduce), their operand's bytes.
"""
from __future__ import annotations

import re
from collections import defaultdict
from typing import Callable

KINDS = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "ragged-all-to-all", "collective-permute",
         "collective-broadcast")

_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4,
                "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16, "f8e4m3fn": 1, "f8e5m2": 1,
                "s4": 1, "u4": 1}
_OP = re.compile(r"^\s*(?:ROOT\s+)?%?(?P<name>[\w.\-]+)\s*=\s*(?P<shape>.*?)\s+"
                 r"(?P<op>" + "|".join(sorted(KINDS, key=len, reverse=True)) + r")(?P<start>-start)?\(")
_ARRAY = re.compile(r"\b(?P<dtype>[a-z]+\d*(?:e\d+m\d+(?:fn)?)?)\[(?P<dims>[\d,]*)\]")
_DCN_SEND = re.compile(r"^\s*(?:ROOT\s+)?%?(?P<name>[\w.\-]+)\s*=\s*"
                       r"\((?P<shape>.*?),\s*u32\[\]\S*,\s*token\[\]\)\s+send\(")
_DCN_OP = re.compile(r'_xla_host_transfer_rendezvous="(?P<op>[a-z_\-]+)')
_DCN_KINDS = {"pmin": "all-reduce", "pmax": "all-reduce", "psum": "all-reduce"}
_GROUPS = re.compile(r"replica_groups=(\{[\d,{} ]*\}|\[[\d,]+\]<=\[[\d,]+\](?:T\([\d,]+\))?)")


def array_bytes(shape_text: str) -> list[int]:
    """Bytes of each array in an HLO shape ('f32[8,16]{1,0}' or a tuple of them)."""
    out = []
    for m in _ARRAY.finditer(shape_text):
        n = 1
        for d in m.group("dims").split(","):
            if d:
                n *= int(d)
        out.append(n * _DTYPE_BYTES.get(m.group("dtype"), 4))
    return out


def collectives(hlo_text: str, slice_of: Callable[[int], int] | None = None) -> list[dict]:
    """One dict per collective op: kind, bytes (per device, see the module docstring), cross_slice."""
    ops = []
    for line in hlo_text.splitlines():
        dcn = _DCN_SEND.match(line) if "xla_megascale_runtime" in line else None
        op = _DCN_OP.search(line) if dcn else None
        if op:
            kind = _DCN_KINDS.get(op.group("op"), op.group("op").replace("_", "-"))
            ops.append({"name": dcn.group("name"), "kind": kind, "bytes": sum(array_bytes(dcn.group("shape"))),
                        "cross_slice": True})
            continue
        m = _OP.match(line)
        if not m:
            continue
        kind, sizes = m.group("op"), array_bytes(m.group("shape"))
        if not sizes:
            continue
        if m.group("start") and kind in ("all-gather", "collective-permute", "all-to-all", "ragged-all-to-all"):
            # (operands..., results...[, contexts]): the results are the second half of the arrays.
            arrays = [s for s in sizes]
            if kind == "collective-permute" and len(arrays) >= 4:
                arrays = arrays[:2]  # (input, output, u32[] contexts)
            size = sum(arrays[len(arrays) // 2:])
        else:
            size = sum(sizes)
        ops.append({"name": m.group("name"), "kind": kind, "bytes": size,
                    "cross_slice": bool(slice_of) and _spans_slices(line, slice_of)})
    return ops


def bytes_by_kind(hlo_text: str, slice_of: Callable[[int], int] | None = None) -> dict:
    """{kind: bytes} over the program, and {"cross_slice": {kind: bytes}} for ops spanning slices."""
    total, cross = defaultdict(int), defaultdict(int)
    for op in collectives(hlo_text, slice_of):
        (cross if op["cross_slice"] else total)[op["kind"]] += op["bytes"]
    return {"within_slice": dict(total), "cross_slice": dict(cross)}


def _spans_slices(line: str, slice_of: Callable[[int], int]) -> bool:
    m = _GROUPS.search(line)
    if not m:
        return False
    for group in _replica_groups(m.group(1)):
        if len({slice_of(d) for d in group}) > 1:
            return True
    return False


def _replica_groups(text: str) -> list[list[int]]:
    """'{{0,1},{2,3}}' or the iota form '[2,4]<=[8]' / '[4,2]<=[2,4]T(1,0)' -> lists of device ids."""
    if text.startswith("{"):
        return [[int(x) for x in g.split(",") if x.strip()] for g in re.findall(r"\{([\d, ]*)\}", text)]
    import numpy as np
    m = re.match(r"\[([\d,]+)\]<=\[([\d,]+)\](?:T\(([\d,]+)\))?", text)
    shape = [int(x) for x in m.group(1).split(",")]
    ids = np.arange(int(np.prod([int(x) for x in m.group(2).split(",")]))).reshape(
        [int(x) for x in m.group(2).split(",")])
    if m.group(3):
        ids = ids.transpose([int(x) for x in m.group(3).split(",")])
    return ids.reshape(shape[0], -1).tolist()
