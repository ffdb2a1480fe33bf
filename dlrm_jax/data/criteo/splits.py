"""Which rows of the Criteo logs train and which evaluate: named conventions.

A split assigns every *physical line* of the sources (bad lines included, so
skipping a bad row never moves a boundary) to one named output split.  Lines
are numbered from 0 within each source; sources are read in the order given
(`terabyte` sorts them by day).

* `kaggle-dlrm`: the sources (normally the Kaggle `train.txt`) read as one
  stream of T lines cut into 7 "days" as the reference DLRM does
  (`divmod(T, 7)`, the first `T mod 7` days one line longer); days 0-5 train;
  day 6 is halved with `np.array_split`: the first ceil(n/2) lines are `test`,
  the rest `val`.
* `terabyte`: the Criteo 1TB logs `day_0` .. `day_23`: days 0-22 train; day 23
  halved, the first ceil(n/2) lines `val`, the rest `test`, as TorchRec and
  MLPerf do.  The reference DLRM and NVIDIA's DLRM use the opposite halves
  (first half test); `terabyte-dlrm` gives that naming.  Swapping
  `data.eval_split` between val and test switches convention without
  re-preparing, since the halves themselves are the same.
* `random:F1,F2[,F3]:SEED`: each line goes to train/val/test with
  probabilities F1/F2/F3, decided by a hash of (SEED, source index, line), so
  the assignment is a pure function of the line's position (the sizes are
  binomial, not exact).
* `head:N`: the first N lines train, the rest `val` (for small real samples).
* `none`: every line in one split, `all`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from dlrm_jax.errors import UserError

NAMED = ("kaggle-dlrm", "terabyte", "terabyte-dlrm", "none")
_DAY_RE = re.compile(r"day_(\d+)(?:\.[A-Za-z0-9]+)*$")
KAGGLE_DAYS = 7
TERABYTE_DAYS = 24


def day_of(path: str | Path) -> int | None:
    m = _DAY_RE.fullmatch(Path(path).name)
    return int(m.group(1)) if m else None


@dataclass(frozen=True)
class SplitSpec:
    """A parsed `--split` value, before the line counts are known."""
    kind: str                                  # kaggle-dlrm|terabyte|terabyte-dlrm|random|head|none
    fractions: tuple[float, ...] = ()
    seed: int = 0
    head: int = 0

    @property
    def text(self) -> str:
        if self.kind == "random":
            return f"random:{','.join(repr(f) for f in self.fractions)}:{self.seed}"
        if self.kind == "head":
            return f"head:{self.head}"
        return self.kind

    @property
    def names(self) -> tuple[str, ...]:
        if self.kind == "none":
            return ("all",)
        if self.kind == "head":
            return ("train", "val")
        if self.kind == "random":
            return ("train", "val", "test")[:len(self.fractions)]
        return ("train", "val", "test")

    def order_sources(self, paths: Sequence[str]) -> list[str]:
        """Sources in stream order (terabyte: by day number, checked)."""
        if not self.kind.startswith("terabyte"):
            return list(paths)
        days = {}
        for p in paths:
            d = day_of(p)
            if d is None or not 0 <= d < TERABYTE_DAYS:
                raise UserError(f"--split {self.kind}: source {p} is not named day_0 .. "
                                f"day_{TERABYTE_DAYS - 1} (optionally with .gz)")
            if d in days:
                raise UserError(f"--split {self.kind}: day {d} given twice ({days[d]}, {p})")
            days[d] = p
        if TERABYTE_DAYS - 1 not in days:
            raise UserError(f"--split {self.kind}: day_{TERABYTE_DAYS - 1} (the evaluation "
                            "day) is missing from --src")
        return [days[d] for d in sorted(days)]

    def needs_counts(self, paths: Sequence[str]) -> list[bool]:
        """Which sources must be line-counted before any row is assigned."""
        n = len(paths)
        if self.kind == "kaggle-dlrm":
            return [True] * n
        if self.kind.startswith("terabyte"):
            return [day_of(p) == TERABYTE_DAYS - 1 for p in paths]
        if self.kind == "head":
            return [i < n - 1 for i in range(n)]      # offsets of later sources
        return [False] * n

    def bind(self, paths: Sequence[str], counts: Sequence[int | None]) -> "SplitPlan":
        return SplitPlan(self, list(paths), list(counts))


def parse_split(text: str) -> SplitSpec:
    if text in NAMED:
        return SplitSpec(text)
    m = re.fullmatch(r"head:(\d+)", text)
    if m:
        if int(m.group(1)) < 1:
            raise UserError(f"--split {text}: N must be at least 1")
        return SplitSpec("head", head=int(m.group(1)))
    m = re.fullmatch(r"random:([^:]+):(\d+)", text)
    if m:
        try:
            fr = tuple(float(x) for x in m.group(1).split(","))
        except ValueError:
            fr = ()
        if not 2 <= len(fr) <= 3 or min(fr) < 0 or abs(sum(fr) - 1) > 1e-9:
            raise UserError(f"--split {text}: want 2 or 3 non-negative fractions "
                            "summing to 1, e.g. random:0.8,0.1,0.1:0")
        return SplitSpec("random", fractions=fr, seed=int(m.group(2)))
    raise UserError(f"--split {text!r}: unknown; use one of {', '.join(NAMED)}, "
                    "head:N or random:F1,F2,F3:SEED")


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The SplitMix64 finaliser (Steele et al. 2014), vectorised on uint64."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


class SplitPlan:
    """A split bound to the sources: `assign` maps lines to split codes."""

    def __init__(self, spec: SplitSpec, paths: list[str], counts: list[int | None]):
        self.spec, self.names = spec, spec.names
        self._ranges: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # per source: cuts, codes
        offsets = np.concatenate([[0], np.cumsum([c or 0 for c in counts])]).astype(np.int64)
        self._offsets = offsets
        k = spec.kind
        if k == "kaggle-dlrm":
            total = int(offsets[-1])
            if total < KAGGLE_DAYS * 2:
                raise UserError(f"--split kaggle-dlrm needs at least {KAGGLE_DAYS * 2} "
                                f"lines, the sources have {total}")
            per, extra = divmod(total, KAGGLE_DAYS)
            days = [per + (1 if d < extra else 0) for d in range(KAGGLE_DAYS)]
            train_end = sum(days[:-1])
            test_end = train_end + (days[-1] + 1) // 2            # np.array_split
            self.boundaries = {"train": [0, train_end], "test": [train_end, test_end],
                               "val": [test_end, total]}
            self._global_cuts = (np.array([train_end, test_end]), np.array([0, 2, 1]))
        elif k.startswith("terabyte"):
            first, second = ("val", "test") if k == "terabyte" else ("test", "val")
            self.boundaries = {}
            for i, p in enumerate(paths):
                if day_of(p) == TERABYTE_DAYS - 1:
                    half = (counts[i] + 1) // 2
                    a, b = self.names.index(first), self.names.index(second)
                    self._ranges[i] = (np.array([half]), np.array([a, b]))
                    self.boundaries[first] = [Path(p).name, 0, half]
                    self.boundaries[second] = [Path(p).name, half, counts[i]]
                else:
                    self._ranges[i] = (np.array([], np.int64), np.array([0]))
        elif k == "head":
            self.boundaries = {"train": [0, spec.head], "val": [spec.head, None]}
            self._global_cuts = (np.array([spec.head]), np.array([0, 1]))
        else:
            self.boundaries = {}

    def assign(self, source: int, lines: np.ndarray) -> np.ndarray:
        """Split code (index into names) of each line number of `source`."""
        lines = np.asarray(lines, np.int64)
        k = self.spec.kind
        if k == "none":
            return np.zeros(lines.shape, np.uint8)
        if k == "random":
            key = _splitmix64(np.uint64(self.spec.seed) ^ _splitmix64(
                (np.uint64(source) << np.uint64(40)) ^ lines.astype(np.uint64)))
            u = (key >> np.uint64(11)).astype(np.float64) * 2.0 ** -53
            cum = np.cumsum(self.spec.fractions)[:-1]
            return np.searchsorted(cum, u, side="right").astype(np.uint8)
        if source in self._ranges:
            cuts, codes = self._ranges[source]
            g = lines
        else:
            cuts, codes = self._global_cuts
            g = lines + self._offsets[source]
        return codes[np.searchsorted(cuts, g, side="right")].astype(np.uint8)

    def describe(self) -> dict:
        doc = {"kaggle-dlrm": "7 equal days (divmod, first days +1); days 0-5 train; day 6: "
                              "first ceil(n/2) lines test, rest val (reference DLRM)",
               "terabyte": "day_0-day_22 train; day_23: first ceil(n/2) lines val, rest test "
                           "(TorchRec, MLPerf)",
               "terabyte-dlrm": "day_0-day_22 train; day_23: first ceil(n/2) lines test, rest "
                                "val (reference DLRM, NVIDIA DLRM)",
               "random": "per line: splitmix64(seed ^ splitmix64(source << 40 ^ line)) / 2^64 "
                         "against the cumulative fractions",
               "head": "global lines [0, N) train, the rest val",
               "none": "every line in split 'all'"}[self.spec.kind]
        return {"spec": self.spec.text, "names": list(self.names), "rule": doc,
                "line_ranges": self.boundaries}
