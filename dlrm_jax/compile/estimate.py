"""A step-time ESTIMATE for a TPU slice, from the compiled step and the chip's published figures.

Per device and step:

    compute_s    = XLA's FLOPs / the chip's peak (bf16: JAX's default matmul precision on
                   TPU runs float32 matmuls as single bf16 passes)
    memory_s     = XLA's bytes accessed / HBM bandwidth
    collective_s = the sum over kinds of bytes / bandwidth, with (n devices, B the bytes
                   hlo_collectives.py counts: the result buffer a device holds)
        all-reduce                    2 (n-1)/n B / ICI (a ring sends and receives ~2x)
        all-gather, reduce-scatter    (n-1)/n B / ICI
        all-to-all                    max((n-1)/n B / ICI, n B / (2 cut L)): a uniform
                                      exchange sends half of all bytes across the torus'
                                      bisection, `cut` links (2 planes of n / longest-side
                                      chips: the wraparound), each of bidirectional
                                      bandwidth L = ICI / (2 x torus dimensions)
        collective-permute            B / (L / 2): one link, one way
        cross-slice (any kind)        B / the chip's data-center network bandwidth

with ICI the chip's bidirectional inter-chip bandwidth.  The step takes at least the
largest part (perfect overlap) and at most their sum (none): `step_s_low`, `step_s_high`.
Examples per second per chip come from the per-chip batch over `step_s_high` (and over
`step_s_low` as the best case).  It is an estimate: no TPU ran the step, and only
bandwidths are counted, not latencies (kernel launches, collective start-up: tens of
microseconds), so a small step runs slower than this says.  Figures the
table lacks make the estimate say so instead of guessing.

The chip figures are Cloud TPU's published specifications (SOURCE), one row per generation.
"""
from __future__ import annotations

import math
from typing import NamedTuple

SOURCE = "Cloud TPU documentation, system architecture pages (docs.cloud.google.com/tpu/docs/<version>)"


class Chip(NamedTuple):
    peak_flops: float | None        # bf16 FLOP/s per chip
    hbm_bytes_per_s: float | None
    ici_bytes_per_s: float | None   # bidirectional inter-chip interconnect bandwidth per chip
    dcn_bytes_per_s: float | None   # data-center network bandwidth per chip


G = 1e9
CHIPS = {
    # v5p: 459 TFLOP/s bf16, HBM 2765 GB/s, ICI 1200 GB/s bidirectional, DCN 50 Gb/s per chip
    "v5p": Chip(459e12, 2765 * G, 1200 * G, 50 * G / 8),
    # v6e: 918 TFLOP/s bf16, HBM 1638 GB/s, ICI 800 GB/s bidirectional; no per-chip DCN figure
    "v6e": Chip(918e12, 1638 * G, 800 * G, None),
    # v5e: 197 TFLOP/s bf16, HBM 819 GB/s, ICI 400 GB/s bidirectional; 2 x 100 Gb/s NICs per 8-chip host
    "v5e": Chip(197e12, 819 * G, 400 * G, 2 * 100 * G / 8 / 8),
    # v4: 275 TFLOP/s bf16, HBM 1200 GB/s; the ICI figure is not stated per chip in the same form
    "v4": Chip(275e12, 1200 * G, None, None),
    # tpu7x (Ironwood): not in the table yet
    "tpu7x": Chip(None, None, None, None),
}

KINDS_RING_2X = ("all-reduce",)
KINDS_RING_1X = ("all-gather", "reduce-scatter", "collective-broadcast")
KINDS_ALL_TO_ALL = ("all-to-all", "ragged-all-to-all")


def torus_dims(topology: str) -> tuple[int, ...]:
    """`v5p:4x4x4` -> (4, 4, 4)."""
    return tuple(int(x) for x in topology.partition(":")[2].split("x"))


def collective_seconds(kind: str, nbytes: float, devices: int, dims: tuple[int, ...], ici: float) -> float:
    """Seconds for one device's `nbytes` of collective `kind` inside a slice (module docstring)."""
    n = devices
    spread = (n - 1) / n if n > 1 else 0.0
    link = ici / (2 * len(dims))                    # bidirectional bandwidth of one link
    if kind in KINDS_RING_2X:
        return 2 * spread * nbytes / ici
    if kind in KINDS_RING_1X:
        return spread * nbytes / ici
    if kind in KINDS_ALL_TO_ALL:
        chips = math.prod(dims)
        cut = 2 * chips // max(dims) if max(dims) > 2 else chips // max(dims)   # no wraparound on a side of 2
        bisection = n * nbytes / (2 * cut * link) if cut else 0.0
        return max(spread * nbytes / ici, bisection)
    return nbytes / (link / 2)                      # collective-permute and anything else: one link, one way


def estimate(*, generation: str, topology: str, devices: int, devices_per_chip: int, global_batch: int,
             flops: float | None, bytes_accessed: float | None, collectives: dict[str, float],
             cross_slice: dict[str, float] | None = None) -> dict:
    """The estimate of one compiled step on a slice (per device; see the module docstring)."""
    chip = CHIPS.get(generation, Chip(None, None, None, None))
    missing = [name for name, value in (("peak FLOP/s", chip.peak_flops), ("HBM bandwidth", chip.hbm_bytes_per_s),
                                        ("ICI bandwidth", chip.ici_bytes_per_s),
                                        ("XLA's FLOPs", flops), ("XLA's bytes accessed", bytes_accessed))
               if value is None]
    cross = {k: v for k, v in (cross_slice or {}).items() if v}
    if cross and chip.dcn_bytes_per_s is None:
        missing.append("DCN bandwidth")
    if missing:
        return {"estimate": True, "available": False,
                "why": f"{generation}: no figure for {', '.join(missing)}", "source": SOURCE}
    per_device = 1 / devices_per_chip               # tpu7x shows a chip's two TensorCores as two devices
    dims = torus_dims(topology)
    by_kind = {k: collective_seconds(k, b, devices, dims, chip.ici_bytes_per_s * per_device)
               for k, b in collectives.items() if b}
    by_kind.update({f"{k} (cross-slice)": b / (chip.dcn_bytes_per_s * per_device) for k, b in cross.items()})
    compute = flops / (chip.peak_flops * per_device)
    memory = bytes_accessed / (chip.hbm_bytes_per_s * per_device)
    collective = sum(by_kind.values())
    low, high = max(compute, memory, collective), compute + memory + collective
    chips = devices / devices_per_chip
    per_chip_batch = global_batch / chips
    return {"estimate": True, "available": True, "source": SOURCE,
            "compute_s": compute, "memory_s": memory, "collective_s": collective,
            "collective_s_by_kind": by_kind, "step_s_low": low, "step_s_high": high,
            "examples_per_s_per_chip": per_chip_batch / high if high else None,
            "examples_per_s_per_chip_best": per_chip_batch / low if low else None,
            "examples_per_s": global_batch / high if high else None, "chips": chips}


def format_estimate(e: dict) -> str:
    if not e.get("available"):
        return f"  estimate: none ({e['why']})"
    return (f"  ESTIMATE (no TPU ran this): compute {e['compute_s'] * 1e3:.3g} ms, "
            f"memory {e['memory_s'] * 1e3:.3g} ms, "
            f"collectives {e['collective_s'] * 1e3:.3g} ms -> step {e['step_s_low'] * 1e3:.3g} to "
            f"{e['step_s_high'] * 1e3:.3g} ms; {e['examples_per_s_per_chip']:,.0f} examples/s per chip "
            f"(best {e['examples_per_s_per_chip_best']:,.0f}), {e['examples_per_s']:,.0f} for the slice")
