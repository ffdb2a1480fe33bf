"""What memory a plan may use: a byte size as users write it, or a TPU slice's HBM for tables.

The planner's bad input is a `PlanError` (one line, exit 2 at the CLI); it lives here, the
planner's lowest module, so that the planner and these checks share it without a cycle.
"""
from __future__ import annotations

import math
import re

from dlrm_jax.compile import topologies as tpu_topologies  # plain Python: names and sizes, no JAX
from dlrm_jax.errors import UserError

# TPU slices (names, chips, HBM per chip from Google Cloud's TPU pages) are
# dlrm_jax.compile.topologies', the check `compile --topology` uses.  A share of HBM is left
# for the dense arch, optimizer state of the MLPs, activations and XLA's buffers.
TABLE_SHARE = 0.75


class PlanError(ValueError):
    """Bad input to the planner; the CLI prints it as one line and exits 2."""


_UNITS = {"": 1, "b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_bytes(text: str) -> float:
    m = re.fullmatch(r"\s*([0-9.eE+-]+)\s*([A-Za-z]*)\s*", text)
    try:
        value = float(m.group(1)) * _UNITS[m.group(2).lower()] if m else None
    except (ValueError, KeyError):
        value = None
    if value is None or not (math.isfinite(value) and value > 0):
        raise PlanError(f"--memory expects a positive size such as 17179869184, 16GiB or 40GB, got {text!r}")
    return value


def topology_memory(name: str) -> tuple[float, str]:
    """Bytes for tables on a TPU slice, from the analytic HBM per chip; (bytes, description).

    Names are checked by `dlrm_jax.compile.topologies.parse`, as `compile --topology` checks
    them: a slice the planner sizes tables for is one the compiler can be asked about."""
    try:
        s = tpu_topologies.parse(name)
    except UserError as e:
        raise PlanError(f"--topology {name!r}: {e}") from None
    per_chip = s.hbm_bytes_per_chip / 2**30
    total = s.chips * s.hbm_bytes_per_chip * TABLE_SHARE
    return total, (f"{name}: {s.chips} chips x {per_chip:g} GiB HBM x {TABLE_SHARE:.0%} for tables "
                   f"= {total / 2**30:.4g} GiB (analytic)")
