"""Frequency-thresholded categorical vocabularies (`--min-count K`).

Pass 1 counts every raw 32-bit value per feature, unit by unit (one .npz of
sorted values and counts per unit, so the pass resumes); the unit counts are
merged like a log-structured merge tree (runs of similar size are merged, so
the total work is O(N log N) and memory is the final vocabulary, 12 bytes per
distinct value).  Ids per feature:

    0 = missing, 1 = rare (count < K, or never seen in the counted split),
    2, 3, ... = values with count >= K, by decreasing count, ties by value.

The values in id order are saved as vocab/C<j>.values.npy (uint32) with their
counts in vocab/C<j>.counts.npy, so ids can be mapped back to the logs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from dlrm_jax.run.files import atomic_write

from .format import CAT_NAMES, NUM_SPARSE

MISSING_ID, RARE_ID, FIRST_ID = 0, 1, 2


class CountPiece:
    """Raw categorical values of the counted split within one unit."""

    def __init__(self):
        self.cats, self.missing = [], []

    def add(self, rows, dense=None, ids=None):
        self.cats.append(rows.cats)
        self.missing.append(rows.cat_missing)


def count_unit(path: Path, piece: CountPiece | None) -> None:
    """Save sorted (values, counts) per feature for one unit, atomically."""
    arrays = {}
    cats = np.concatenate(piece.cats) if piece else np.zeros((0, NUM_SPARSE), np.uint32)
    miss = np.concatenate(piece.missing) if piece else np.zeros((0, NUM_SPARSE), bool)
    for j in range(NUM_SPARSE):
        v, c = np.unique(cats[~miss[:, j], j], return_counts=True)
        arrays[f"v{j}"], arrays[f"c{j}"] = v.astype(np.uint32), c.astype(np.uint64)
    with atomic_write(path, "wb") as f:
        np.savez(f, **arrays)


def _merge(a: tuple, b: tuple) -> tuple:
    v = np.concatenate([a[0], b[0]])
    c = np.concatenate([a[1], b[1]])
    if v.size == 0:
        return v, c
    order = np.argsort(v, kind="stable")       # two sorted runs: a linear merge
    v, c = v[order], c[order]
    start = np.flatnonzero(np.concatenate([[True], v[1:] != v[:-1]]))
    return v[start], np.add.reduceat(c, start)


def merge_counts(paths: Sequence[Path]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Total (values, counts) per feature over the unit count files, in order."""
    runs: list[list[tuple]] = [[] for _ in range(NUM_SPARSE)]
    for p in paths:
        with np.load(p) as z:
            for j in range(NUM_SPARSE):
                stack = runs[j]
                stack.append((z[f"v{j}"], z[f"c{j}"]))
                while len(stack) > 1 and stack[-2][0].size <= 2 * stack[-1][0].size:
                    b = stack.pop()
                    stack[-1] = _merge(stack[-1], b)
    out = []
    for stack in runs:
        total = (np.zeros(0, np.uint32), np.zeros(0, np.uint64))
        while stack:
            total = _merge(stack.pop(), total)
        out.append(total)
    return out


class Vocab:
    """Per-feature maps from raw value to id (see module doc)."""

    def __init__(self, values: list[np.ndarray], counts: list[np.ndarray]):
        self.values, self.counts = values, counts          # in id order
        self._sorted, self._ids = [], []
        for v in values:
            order = np.argsort(v)
            self._sorted.append(v[order])
            self._ids.append((order + FIRST_ID).astype(np.int32))

    @property
    def sizes(self) -> list[int]:
        return [FIRST_ID + v.size for v in self.values]

    @classmethod
    def build(cls, totals, min_count: int) -> "Vocab":
        values, counts = [], []
        for v, c in totals:
            keep = c >= min_count
            v, c = v[keep], c[keep]
            order = np.lexsort((v, -c.astype(np.int64)))   # count desc, value asc
            values.append(v[order])
            counts.append(c[order])
        return cls(values, counts)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        for name, v, c in zip(CAT_NAMES, self.values, self.counts):
            for suffix, arr in (("values", v), ("counts", c)):
                with atomic_write(directory / f"{name}.{suffix}.npy", "wb") as f:
                    np.save(f, arr)

    @classmethod
    def load(cls, directory: Path) -> "Vocab":
        return cls([np.load(directory / f"{n}.values.npy") for n in CAT_NAMES],
                   [np.load(directory / f"{n}.counts.npy") for n in CAT_NAMES])

    def ids(self, cats: np.ndarray, missing: np.ndarray) -> np.ndarray:
        """Raw uint32 [n, 26] -> int32 ids [n, 26]."""
        out = np.empty(cats.shape, np.int32)
        for j in range(NUM_SPARSE):
            s = self._sorted[j]
            if s.size == 0:
                out[:, j] = RARE_ID
            else:
                pos = np.minimum(np.searchsorted(s, cats[:, j]), s.size - 1)
                out[:, j] = np.where(s[pos] == cats[:, j], self._ids[j][pos], RARE_ID)
        out[missing] = MISSING_ID
        return out
