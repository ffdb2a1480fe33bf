"""One pass of `criteo-prepare` over one source file, in a worker process or in-process.

A pass streams its source once and, per unit (a source's rows-per-shard
block), either counts ids for the vocabulary ("count") or writes the split
shards and their statistics ("write"); each finished unit leaves a record in
DATA_DIR/.progress so a killed preparation resumes at the next unit.
`prepare.py` plans the passes and merges their records.
"""
from __future__ import annotations

import multiprocessing
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from dlrm_jax.errors import UserError
from dlrm_jax.run.files import atomic_write

from . import format as cf, manifest as manifest_io
from .io import Block, BlockReader, StreamError, parallel_map
from .manifest import write_json
from .options import PrepareOptions
from .splits import SplitPlan
from .vocab import CountPiece, Vocab, count_unit

PROGRESS = ".progress"


def _save_npy(path: Path, pieces: list[np.ndarray]) -> None:
    """np.save of the concatenation, written piece by piece; temp + rename."""
    shape = (sum(p.shape[0] for p in pieces),) + pieces[0].shape[1:]
    with atomic_write(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {
            "descr": np.lib.format.dtype_to_descr(pieces[0].dtype),
            "fortran_order": False, "shape": shape})
        for p in pieces:
            f.write(np.ascontiguousarray(p).data)


class _Piece:
    """Rows of one split within one unit: blocks of columns plus stats."""

    def __init__(self):
        self.cols = {c: [] for c in manifest_io.COLUMNS}
        self.stats = None

    def add(self, part: dict) -> None:
        for c in manifest_io.COLUMNS:
            self.cols[c].append(part[c])
        self.stats = manifest_io.add_stats(self.stats, part["stats"])

    def write(self, split_dir: Path, name: str) -> dict:
        split_dir.mkdir(parents=True, exist_ok=True)
        for c, pieces in self.cols.items():
            _save_npy(split_dir / f"{name}.{c}.npy", pieces)
        return dict(manifest_io.stats_json(self.stats), name=name)


@dataclass
class Task:
    out: str
    index: int
    path: str
    display: str               # the path as the user gave it, for messages
    opts: PrepareOptions
    plan: SplitPlan
    mode: str                  # "count" (vocabulary pass) or "write"
    done: dict                 # unit -> record, units finished by an earlier run
    threads: int


class SourcePass:
    """Stream one source once; count or write every unfinished unit."""

    def __init__(self, task: Task, on_unit_done: Callable | None = None):
        self.t, self.on_unit_done = task, on_unit_done
        self.R = task.opts.rows_per_shard
        self.out = Path(task.out)
        self.vocab_code = task.plan.names.index(task.opts.counted_split(task.plan.names))
        self.mapping = None
        if task.mode == "write":
            self.mapping = (Vocab.load(self.out / "vocab") if task.opts.min_count
                            else np.asarray(task.opts.hash_rows, np.int64))
        self.dtype = np.dtype(task.opts.dense_dtype)

    def _convert(self, block: Block):
        """On a pool thread: parse, transform, map ids, cut by split, stats."""
        pb = cf.parse_block(block.data)
        if pb.reasons.size != block.lines:
            raise RuntimeError("reader and parser disagree on line count")
        r, o = pb.rows, self.t.opts
        local = np.flatnonzero(pb.good) if r.labels.size < block.lines else np.arange(block.lines)
        codes = self.t.plan.assign(self.t.index, block.first_line + local)
        parts = {}
        if self.t.mode == "count":
            sel = codes == self.vocab_code
            if sel.any():
                parts[self.vocab_code] = cf.Rows(*(x[sel] for x in r))
            return pb, parts
        dense = cf.transform_dense(r.dense, r.dense_missing, o.dense_transform, self.dtype)
        ids = (self.mapping.ids(r.cats, r.cat_missing) if o.min_count
               else cf.hash_ids(r.cats, r.cat_missing, self.mapping))
        uniq = np.unique(codes)
        for c in uniq:
            sel = slice(None) if uniq.size == 1 else codes == c
            parts[int(c)] = {
                "dense": dense[sel], "sparse": ids[sel], "labels": r.labels[sel],
                "stats": manifest_io.shard_stats(r.labels[sel], r.dense[sel],
                                                 r.dense_missing[sel], dense[sel],
                                                 r.cat_missing[sel])}
        return pb, parts

    def run(self) -> dict:
        t = self.t
        first = 0
        while first in t.done:            # finished units form a prefix: skip them
            first += 1
        start = t.done[first - 1]["end_offset"] if first else 0
        self.line = first * self.R
        self._reset(first)
        reader = BlockReader(t.path, start, self.line, self.R)
        it = parallel_map(self._convert, reader.blocks(), t.threads)
        try:
            for block, (pb, parts) in it:
                if not pb.good.all():
                    self._bad_lines(block, pb)
                for c, part in parts.items():
                    self.pieces.setdefault(c, CountPiece() if t.mode == "count"
                                           else _Piece()).add(part)
                self.line += block.lines
                if self.line == (self.unit + 1) * self.R:
                    self._finish(self.R, block.offset + len(block.data))
        except StreamError as e:
            raise UserError(f"{t.display}:{self.line + 1}: {e}") from None
        finally:
            it.close()
            reader.close()
        if self.line == 0:
            raise UserError(f"{t.display}:1: file is empty (no rows)")
        if self.line > self.unit * self.R:
            self._finish(self.line - self.unit * self.R, reader.total)
        result = {"index": t.index, "sha256": reader.sha256, "lines": self.line,
                  "bytes": reader.total}
        write_json(self.out / PROGRESS / f"{t.mode}-source-{t.index:03d}.json", result)
        return result

    def _reset(self, unit: int) -> None:
        self.unit, self.pieces, self.bad, self.examples = unit, {}, {}, []

    def _bad_lines(self, block: Block, pb: cf.ParsedBlock) -> None:
        """Stop at the first bad line (with its FILE:LINE), or count it."""
        for i in np.flatnonzero(~pb.good):
            start = int(pb.line_ends[i - 1]) if i else 0
            where = f"{self.t.display}:{block.first_line + i + 1}"
            try:
                cf.parse_line(bytes(block.data[start:int(pb.line_ends[i]) - 1]))
            except cf.BadRow as e:
                if self.t.opts.on_bad_row == "error":
                    raise UserError(f"{where}: {e}") from None
                self.bad[e.reason] = self.bad.get(e.reason, 0) + 1
                if len(self.examples) < 5:
                    self.examples.append(f"{where}: {e}")
            else:
                raise RuntimeError(f"{where}: the fast and reference parsers disagree")

    def _finish(self, lines: int, end_offset: int) -> None:
        parent = multiprocessing.parent_process()
        if parent is not None and not parent.is_alive():
            raise SystemExit("criteo-prepare worker: the main process is gone")  # killed run
        t, name = self.t, f"{self.t.index:03d}-{self.unit:05d}"
        rec = {"pass": t.mode, "source": t.index, "unit": self.unit,
               "first_line": self.unit * self.R,
               "lines": lines, "end_offset": end_offset, "bad_rows": self.bad,
               "bad_examples": self.examples}
        if t.mode == "write":
            rec["shards"] = {t.plan.names[c]: p.write(self.out / t.plan.names[c], "shard-" + name)
                             for c, p in sorted(self.pieces.items())}
        else:
            count_unit(self.out / PROGRESS / f"count-{name}.npz",
                       self.pieces.get(self.vocab_code))
        write_json(self.out / PROGRESS / f"{t.mode}-{name}.json", rec)
        if self.on_unit_done is not None:
            self.on_unit_done(rec)
        self._reset(self.unit + 1)


def run_task(task: Task) -> dict:
    """Entry point of a worker process."""
    return SourcePass(task).run()
