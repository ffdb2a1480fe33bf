"""The interactions, one module each, found by `model.interaction` through REGISTRY.

An interaction takes the dense arch's output x [B, D] and the looked-up rows
emb [B, F, D] and gives the over arch's input [B, I].  Each module of this
package (dot, cat, dcn, wukong) defines `SPEC`, an `Interaction`: its Flax
module, its output width I, its parameter and FLOP counts, its size knob for the
architecture sweep and the checks of its config knobs.  The model
(dlrm_jax/model/dlrm.py), the accounting (dlrm_jax/model/accounting.py), the
architecture sweep (sweeps/architecture.py) and the config's validation all ask
REGISTRY, so adding an interaction is one new module here, its line in BUILTIN
and its test.  Code that trains in its own process (a test, a notebook calling
`dlrm_jax.train.train`) can add one at run time with `register(spec)` and take it
out with `unregister(name)`; the CLI and a sweep's runs, started as subprocesses,
know the built-in ones.

Why the built-in modules are imported on first lookup: this file imports no JAX,
so `dlrm_jax.config` imports it and stays importable without JAX (the CLI's
parser and the sweep definitions import it), and an unknown `model.interaction`
is refused, listing the names, before any interaction module loads.  Checking a
config's knobs does load them (Flax, once a process): an interaction's knob
checks live in its module beside its Flax code, so that it is one file.
"""
from __future__ import annotations

import difflib
import importlib
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

from dlrm_jax.errors import UserError
from dlrm_jax.overrides import one_of

KEY = "model.interaction"

# The built-in interactions: name -> the module of this package whose SPEC it is.
BUILTIN = {
    "dot": "dot",
    "cat": "cat",
    "dcn": "dcn",
    "wukong": "wukong",
}


def _no_knobs(model_cfg) -> None:
    """An interaction without knobs of its own accepts every config."""


def _no_size_knob(model_cfg, q, num_sparse: int) -> dict[str, Any]:
    """An interaction without parameters has no width of its own to scale (the sweep scales the over arch)."""
    return {}


@dataclass(frozen=True)
class Interaction:
    """One interaction, as the model, the accounting, the sweep and the config see it.

    module(model_cfg, dtype, name) -> f(x [B, D], emb [B, F, D]) -> [B, I].  Called
        inside DLRM's compact `__call__`, so a Flax module it makes there is DLRM's
        child; `name` is the scope its parameters live under ("interaction":
        checkpoints name it, so it must not change).  dtype is the compute dtype.
    width(model_cfg, num_sparse) -> I, the over arch's input width.
    counts(model_cfg, num_sparse) -> (parameters, forward FLOPs per example), matmuls
        only at 2 FLOPs a multiply-add (dlrm_jax/model/accounting.py's convention).
    scale(model_cfg, q, num_sparse) -> {dotted config key: value}: the interaction's
        own width at model size q x the base (q a Fraction: 1/2, 1, 2), for
        sweeps/architecture.py, which scales the over arch itself.
    validate(model_cfg) -> None, or UserError naming the key of a bad knob.  Every
        registered interaction checks its knobs on every config: they are fields of
        config.ModelConfig whichever interaction is picked, and a sweep may pick
        another one from the same base.
    """
    name: str
    module: Callable[..., Callable[[Any, Any], Any]]
    width: Callable[[Any, int], int]
    counts: Callable[[Any, int], tuple[int, int]]
    scale: Callable[[Any, Any, int], dict[str, Any]] = _no_size_knob
    validate: Callable[[Any], None] = _no_knobs


class _Registry(Mapping[str, Interaction]):
    """name -> Interaction; a built-in entry holds its module's name until first looked up."""

    def __init__(self, builtin: Mapping[str, str]):
        self._entries: dict[str, Interaction | str] = dict(builtin)

    def __getitem__(self, name: str) -> Interaction:
        entry = self._entries[name]
        if isinstance(entry, str):
            entry = importlib.import_module(f"{__name__}.{entry}").SPEC
            if entry.name != name:
                raise RuntimeError(f"{__name__}.{BUILTIN[name]}.SPEC is named {entry.name!r}, registered as {name!r}")
            self._entries[name] = entry
        return entry

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def _add(self, spec: Interaction) -> None:
        self._entries[spec.name] = spec

    def _remove(self, name: str) -> None:
        del self._entries[name]


REGISTRY: Mapping[str, Interaction] = _Registry(BUILTIN)


def register(spec: Interaction) -> Interaction:
    """Add an interaction under spec.name (a name already taken is a programming error)."""
    if not isinstance(spec, Interaction):
        raise TypeError(f"register() takes an Interaction, got {type(spec).__name__}")
    if spec.name in REGISTRY:
        raise ValueError(f"interaction {spec.name!r} is already registered")
    REGISTRY._add(spec)
    return spec


def unregister(name: str) -> None:
    """Remove an interaction added by `register` (the built-in ones stay)."""
    if name in BUILTIN:
        raise ValueError(f"interaction {name!r} is built in; only registered ones can be removed")
    REGISTRY._remove(name)


def names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def get(name: str) -> Interaction:
    """The interaction called `name`, or UserError naming the registered ones (and the closest)."""
    if name not in REGISTRY:
        known = names()
        close = difflib.get_close_matches(str(name), known, n=1)
        raise UserError(f"{KEY} must be {one_of(known)}, got {name!r}"
                        + (f" (did you mean {close[0]!r}?)" if close else ""))
    return REGISTRY[name]


def validate(model_cfg) -> None:
    """The picked interaction exists, and every registered one accepts its knobs in model_cfg."""
    get(model_cfg.interaction)
    for name in REGISTRY:
        REGISTRY[name].validate(model_cfg)


def need_at_least(model_cfg, minimum: int, *knobs: str) -> None:
    """UserError naming the first of model_cfg's knobs below minimum (how `validate`s check integer knobs)."""
    for k in knobs:
        v = getattr(model_cfg, k)
        if v < minimum:
            raise UserError(f"model.{k} must be >= {minimum}, got {v}")


def scaled(width: int, q) -> int:
    """A layer width at model size q x the base, rounded down, at least 1 (q exact: a Fraction or int)."""
    return max(1, math.floor(width * q))
