"""Sweep definitions: one module per study, each with `points(base_config)`.

A sweep module says what it tests and how to run it (its docstring) and returns
the points as dicts of dotted config keys, derived from the base config so the same sweep runs small on a CPU or on
Criteo 1TB on a TPU pod.  `load_sweep` takes a name (`data`) or a file path.  The x axis each scheme is fitted
against lives in one table, `analysis.results.RESOURCE_AXES`.
"""
from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from dlrm_jax.errors import UserError

# Every module of this package but the runner is a sweep; its file name is its name.
NAMES = tuple(sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name != "runner"))


@dataclass(frozen=True)
class Sweep:
    name: str
    description: str
    points: Callable[[Any], list[dict[str, Any]]]
    # Optional: extend(base, rows, log) -> more points, given the finished rows so far (an
    # IsoFLOP sweep bracketing its valley); called until it returns none it already has.
    extend: Callable[..., list[dict[str, Any]]] | None = None


def load_sweep(name_or_file: str) -> Sweep:
    path = Path(name_or_file)
    if name_or_file in NAMES:
        module = importlib.import_module(f"sweeps.{name_or_file}")
        name = name_or_file
    elif path.suffix == ".py":
        if not path.is_file():
            raise UserError(f"sweep file {path} does not exist")
        spec = importlib.util.spec_from_file_location(f"sweep_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as err:
            raise UserError(f"{path}: cannot load sweep: {err}")
        name = path.stem
    else:
        raise UserError(f"unknown sweep {name_or_file!r}; choose one of {', '.join(NAMES)} or a .py file")
    if not callable(getattr(module, "points", None)):
        raise UserError(f"sweep {name_or_file}: defines no points(base_config) function")
    return Sweep(name=name, description=(module.__doc__ or "").strip().splitlines()[0] if module.__doc__ else "",
                 points=module.points, extend=getattr(module, "extend", None))
