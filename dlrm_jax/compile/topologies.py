"""Cloud TPU slice names as users say them (`v5p-128`) -> libtpu topologies for compiling ahead of time.

Naming, as Cloud TPU and MaxText's `accelerator_to_spec_map` use it: for v5e
and v6e the number is chips (one TensorCore each, 2-D torus); for v4, v5p and
tpu7x it is TensorCores, two per chip, so `v5p-128` is 64 chips (`v5p:4x4x4`)
and `v4-8` four (`v4:2x2x1`).  libtpu's `get_topology_desc` then gives the
slice's compile-only devices on any CPU host (docs/DESIGN.md section 1.4).

HBM per device (bytes the compiler may use are a little less), from the Cloud
TPU documentation's "TPU versions" pages: v4 32 GiB, v5e 16 GiB, v5p 95 GiB,
v6e 32 GiB per chip (one JAX device per chip: megacore for v4 and v5p);
tpu7x (Ironwood) 192 GiB per chip, whose two TensorCores libtpu 0.0.42 shows
as two devices (`tpu7x:2x2x1` is 8 devices), so 96 GiB per device.
"""
from __future__ import annotations

from typing import NamedTuple

from dlrm_jax.errors import UserError

GIB = 2 ** 30

# generation -> (libtpu prefix, TensorCores per chip, 3-D torus, chip config, HBM bytes per device)
GENERATIONS = {
    "v4": ("v4", 2, True, "megacore", 32 * GIB),
    "v5p": ("v5p", 2, True, "megacore", 95 * GIB),
    "v5e": ("v5e", 1, False, "default", 16 * GIB),
    "v6e": ("v6e", 1, False, "default", 32 * GIB),
    "tpu7x": ("tpu7x", 2, True, "default", 96 * GIB),
}

# chips -> torus shape (the shapes Cloud TPU offers; MaxText's map lists the same)
SHAPES_2D = {1: "1x1", 4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16", 256: "16x16"}
SHAPES_3D = {4: "2x2x1", 8: "2x2x2", 16: "2x2x4", 32: "2x4x4", 64: "4x4x4", 128: "4x4x8", 256: "4x8x8",
             512: "8x8x8", 1024: "8x8x16", 2048: "8x16x16", 4096: "16x16x16"}


# libtpu aborts the process (a C++ CHECK, "pr_mapper.NumSlices() < kMaxNumSlices (512 vs.
# 512)", then SIGABRT) when asked to compile for 512 slices or more: measured with libtpu
# 0.0.42.1 (jax 0.10.2); 511 compiles.
MAX_SLICES = 511
# Cloud TPU's other name for v5e slices (`v5litepod-16`).
ALIASES = {"v5litepod": "v5e"}


class Slice(NamedTuple):
    name: str                 # as the user gave it, e.g. v5p-128
    generation: str           # v5p
    topology: str             # libtpu's name, e.g. v5p:4x4x4
    chip_config: str          # megacore | default
    chips: int                # per slice
    slices: int               # multi-slice (DCN) count
    hbm_bytes: int            # per JAX device

    @property
    def devices_per_chip(self) -> int:
        """Megacore chips are one JAX device; tpu7x's two TensorCores are two."""
        return 1 if self.chip_config == "megacore" else GENERATIONS[self.generation][1]

    @property
    def hbm_bytes_per_chip(self) -> int:
        return self.hbm_bytes * self.devices_per_chip


def accepted_names() -> list[str]:
    names = []
    for gen, (_, cores, is_3d, _, _) in GENERATIONS.items():
        names += [f"{gen}-{chips * cores}" for chips in (SHAPES_3D if is_3d else SHAPES_2D)]
    return names


def parse(name: str, slices: int = 1) -> Slice:
    """`v5e-16` (or libtpu's `v5e:4x4`) -> its Slice; UserError (with the accepted names) otherwise.

    The one check of TPU slice names and slice counts: `compile --topology` and `plan
    --topology` both call it, so the planner accepts exactly the slices that compile."""
    if isinstance(slices, bool) or not 1 <= slices <= MAX_SLICES:
        raise UserError(f"--slices must be 1 to {MAX_SLICES}, got {slices}: libtpu aborts the "
                        f"process on {MAX_SLICES + 1} or more (its kMaxNumSlices)")
    unknown = UserError(f"unknown TPU topology {name!r}; accepted: {', '.join(accepted_names())} "
                        "(or libtpu's GENERATION:AxB[xC] of those slices, e.g. v5p:4x4x4)")
    text = name.strip()
    gen, sep, shape = text.partition(":")
    if not sep:
        gen, _, count = text.partition("-")
    spec = GENERATIONS.get(ALIASES.get(gen, gen))
    if spec is None:
        raise unknown
    gen = ALIASES.get(gen, gen)
    prefix, cores, is_3d, config, hbm = spec
    shapes = SHAPES_3D if is_3d else SHAPES_2D
    if sep:                                   # libtpu's name: one of the offered torus shapes
        chips = next((c for c, sh in shapes.items() if sh == shape), None)
    elif count.isdigit() and int(count) % cores == 0:
        chips = int(count) // cores
        shape = shapes.get(chips)
    else:
        chips = None
    if chips is None or shape is None:
        raise unknown
    return Slice(name, gen, f"{prefix}:{shape}", config, chips, slices, hbm)


def devices(s: Slice):
    """The slice's compile-only devices from libtpu (any CPU host); UserError without libtpu."""
    import os
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # several compiles side by side
    try:
        from jax.experimental import topologies
        # A one-chip slice (v5e-1, v6e-1) is not divisible into 2x2x1 hosts: libtpu refuses it.
        bounds = (1, 1, 1) if s.chips == 1 else (2, 2, 1)
        topo = topologies.get_topology_desc(topology_name=s.topology, platform="tpu",
                                            chip_config_name=s.chip_config,
                                            chips_per_host_bounds=bounds, num_slices=s.slices)
    except (ImportError, RuntimeError, ValueError) as err:
        if "libtpu" in str(err).lower() or isinstance(err, ImportError) or "tpu" in str(err).lower():
            raise UserError(f"compiling for {s.name} needs libtpu: pip install -e '.[tpu]' "
                            f"(jax's own tpu extra, matched to the installed jax); {str(err).splitlines()[0]}")
        raise
    return list(topo.devices)
