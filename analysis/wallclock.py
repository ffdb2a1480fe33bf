"""A plan's training FLOPs as hours and chip-hours on a named TPU slice (an ESTIMATE).

Two sources of the slice's rate, both from `dlrm_jax.compile.estimate`'s chip table:

* a `dlrm-scaling compile --json --topology NAME` report (`--compile-report FILE`): the
  compiled step's estimate gives the model FLOP/s a chip achieves with that config (the
  study's FLOPs per example x the per-chip batch / the estimated step time, its high and
  low ends); the plan's FLOPs at that rate.  It assumes the planned model keeps the
  compiled one's utilisation: compile the planned config itself for the closest figure;
* without one, the chip's peak FLOP/s: a lower bound on the time (all FLOPs at peak).

Plain Python (the planner stays JAX-free): the compile report is read as JSON.
"""
from __future__ import annotations

import json
from pathlib import Path

from analysis.capacity import PlanError


def _report_for(path: str, name: str) -> dict:
    try:
        lines = [ln for ln in Path(path).read_text().splitlines() if ln.strip()]
        reports = [json.loads(ln) for ln in lines]
    except (OSError, ValueError) as e:
        raise PlanError(f"--compile-report {path}: not readable as `dlrm-scaling compile --json` output ({e})")
    found = [r for r in reports if isinstance(r, dict) and r.get("target") == name]
    if not found:
        targets = ", ".join(str(r.get("target")) for r in reports if isinstance(r, dict)) or "none"
        raise PlanError(f"--compile-report {path} has no report for --topology {name} (it has: {targets}); "
                        f"run `dlrm-scaling compile --topology {name} --json` on the config")
    r = found[0]
    e = r.get("estimate") or {}
    if not r.get("fits", False):
        raise PlanError(f"--compile-report {path}: the compiled config does not fit on {name}")
    if not e.get("available"):
        raise PlanError(f"--compile-report {path}: no step-time estimate for {name} ({e.get('why', 'none')})")
    return r


def slice_time(flops: tuple, topology: str, compile_report: str | None = None) -> list[str]:
    """Lines: hours and chip-hours of `flops` (value, lo, hi) on the slice `topology`."""
    from dlrm_jax.compile import estimate as E, topologies
    from dlrm_jax.errors import UserError
    try:
        s = topologies.parse(topology)
    except UserError as e:
        raise PlanError(f"--topology {topology!r}: {e}") from None
    chips = s.chips * s.slices
    if compile_report is not None:
        r = _report_for(compile_report, topology)
        e = r["estimate"]
        per_chip = r["flops_analytic"] * s.devices_per_chip       # model FLOPs of one step, per chip
        rates = (per_chip / e["step_s_high"], per_chip / e["step_s_low"])
        how = (f"at the compiled step's estimated rate ({compile_report}: {rates[0] / 1e12:.3g} to "
               f"{rates[1] / 1e12:.3g} model TFLOP/s per chip)")
    else:
        peak = E.CHIPS.get(s.generation, E.Chip(None, None, None, None)).peak_flops
        if peak is None:
            raise PlanError(f"--topology {topology}: no published peak FLOP/s for {s.generation} in the chip table")
        rates = (peak, peak)
        how = (f"at the chip's peak {peak / 1e12:.4g} TFLOP/s: a lower bound (give --compile-report, "
               f"`dlrm-scaling compile --topology {topology} --json`, for the compiled step's estimate)")

    def hours(c, rate):
        return c / (chips * rate) / 3600

    v, lo, hi = flops
    h, best = hours(v, rates[0]), hours(v, rates[1])
    out = [f"ESTIMATE on {topology} ({chips} chips) {how}:",
           f"  {h:.3g} hours" + ("" if best == h else f" (best {best:.3g})")
           + f", {h * chips:.3g} chip-hours" + ("" if best == h else f" (best {best * chips:.3g})")]
    if lo is not None and hi is not None:
        out.append(f"  over the FLOPs interval: {hours(lo, rates[0]):.3g} to {hours(hi, rates[0]):.3g} hours")
    return out
