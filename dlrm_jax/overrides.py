"""Override values into typed config fields: `--set key=value` strings and JSON values.

The schema (field names, types, defaults) is `config.py`; this module only
reads a raw value as a field's type, so `model.top_mlp=512,256`,
`train.examples=2**20` and `1e6` mean what a user means, and a value that is
none of the field's types is one line naming the key:

    coerce("train.examples", "2**20", int) -> 1048576
    coerce("model.interaction", "sum", Literal["dot", "cat"])
        -> UserError("model.interaction must be dot or cat, got 'sum'")
"""
from __future__ import annotations

import math
import types
import typing
from typing import Any, Iterator, Literal, Mapping

from dlrm_jax.errors import UserError


def split_assignment(s: str) -> tuple[str, str]:
    """'key=value' -> (key, value)."""
    if "=" not in s:
        raise UserError(f"--set expects key=value, got {s!r}")
    k, v = s.split("=", 1)
    return k.strip(), v.strip()


def flatten(d: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Nested dicts -> (dotted key, leaf value) pairs."""
    for k, v in d.items():
        if isinstance(v, Mapping):
            yield from flatten(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def choices(ftype: Any) -> tuple[str, ...]:
    """The allowed values of a `Literal[...]` field type."""
    return typing.get_args(ftype)


def one_of(options: tuple[str, ...]) -> str:
    """('a', 'b', 'c') -> 'a, b or c' (how messages list allowed values)."""
    return options[0] if len(options) == 1 else f"{', '.join(options[:-1])} or {options[-1]}"


def coerce(key: str, raw: Any, ftype: Any) -> Any:
    """A raw value (CLI string or JSON value) into the field's type, or UserError."""
    if typing.get_origin(ftype) is Literal:
        if isinstance(raw, str) and raw in choices(ftype):
            return raw
        raise UserError(f"{key} must be {one_of(choices(ftype))}, got {raw!r}")
    options = typing.get_args(ftype) if _is_union(ftype) else (ftype,)
    # Prefer the scalar reading of "5" for `int | tuple[int, ...]`.
    for opt in options:
        try:
            return _coerce_one(raw, opt)
        except (ValueError, TypeError):
            pass
        except OverflowError as err:   # not another option's value either: too large for any
            raise UserError(f"bad value for {key}: {raw!r} {err}") from None
    want = " or ".join(_type_name(o) for o in options)
    raise UserError(f"bad value for {key}: {raw!r} is not {want}")


def _is_union(t: Any) -> bool:
    return typing.get_origin(t) in (typing.Union, types.UnionType)


def _type_name(t: Any) -> str:
    if typing.get_origin(t) is tuple:
        return "a comma-separated list of ints"
    return {int: "an int", float: "a number", str: "a string", bool: "true/false"}.get(t, str(t))


def _coerce_one(raw: Any, t: Any) -> Any:
    if typing.get_origin(t) is tuple:
        (elem, _) = typing.get_args(t)
        if isinstance(raw, str):
            raw = raw.strip("[]() ")
            items = [x for x in raw.replace(" ", "").split(",") if x != ""]
        elif isinstance(raw, (list, tuple)):
            items = list(raw)
        else:
            raise TypeError("not a list")
        return tuple(_coerce_one(x, elem) for x in items)
    if t is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in ("true", "1", "yes", "false", "0", "no"):
            return raw.lower() in ("true", "1", "yes")
        raise ValueError("not a bool")
    if t is int:
        return _int(raw)
    if t is float:
        if isinstance(raw, bool):
            raise TypeError("bool is not float")
        return float(raw)
    if t is str:
        if not isinstance(raw, str):
            raise TypeError("not a string")
        return raw
    raise TypeError(f"unsupported type {t}")


def _int(raw: Any) -> int:
    if isinstance(raw, bool):
        raise TypeError("bool is not int")
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float) and raw.is_integer():
        return int(raw)
    if not isinstance(raw, str):
        raise TypeError("not an int")
    s = raw.replace("_", "")
    if "**" in s or s.startswith("2^"):  # 2**20 is how people write example counts
        base, exp = s.split("**", 1) if "**" in s else ("2", s[2:])
        if int(exp) < 0:
            raise ValueError("negative exponent")
        # 10**10**9 would take minutes to compute only to be refused by the range check
        # (config.check_numbers: below 2**53); past 2**1024 it is refused here, uncomputed.
        if abs(int(base)) > 1 and int(exp) * math.log2(abs(int(base))) > 1024:
            raise OverflowError("is far too large (the limit is 2**53)")
        return int(base) ** int(exp)
    try:
        return int(s)
    except ValueError:
        f = float(s)  # accepts 1e6
        if f.is_integer():
            return int(f)
        raise
