"""`dlrm-scaling data criteo-multihot`: prepared one-hot shards -> MLPerf DLRMv2's multi-hot shards.

    dlrm-scaling data criteo-multihot --src PREPARED --out OUT [--multi-hot 3,2,1,...]

MLPerf's `materialize_synthetic_multihot_dataset.py` (data/multihot.py states its
algorithm) on the shards of `criteo-prepare`: each feature's bag table, drawn from
one legacy RandomState(0) over the features in order, is written to
OUT/tables/C<j>.npy (int32 [rows, k], streamed in chunks), then every shard's
sparse ids [rows, 26] become bags [rows, K] (table row at the one-hot id, features
side by side), read and written in chunks.  dense and labels are copied.  Memory
is bounded by the chunk size whatever the tables' size (MLPerf's 40M x 100
table is 16 GB on disk, never in memory).

Resumable: every file is written to a temporary name and renamed; a rerun keeps
finished tables and shards (it replays the generator's draws for finished tables
without writing them, so later tables come out the same) and writes
manifest.json last: the source's manifest plus `multi_hot` (sizes, rule, source)
and the new sparse layout.  `data.source=criteo:OUT` with the same
`model.multi_hot` reads the result.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np

from dlrm_jax.data.multihot import CHUNK_ROWS, mlperf_table_chunks
from dlrm_jax.errors import UserError
from dlrm_jax.run.files import check_writable_dir, commit_temp, write_atomic

from . import manifest as manifest_io
from .table_sizes import MLPERF_DCNV2_MULTI_HOT

MLPERF_MULTI_HOT = MLPERF_DCNV2_MULTI_HOT
RULE = ("legacy numpy RandomState(0); per feature in order, table[rows, k] = [row id, randint(0, rows, "
        "(rows, k - 1))]; bag = table[one-hot id]; bags side by side in feature order")


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp{os.getpid()}.npy")


def _write_tables(out: Path, rows, sizes, chunk_rows: int, log) -> list[Path]:
    paths = [out / "tables" / f"C{f + 1}.npy" for f in range(len(rows))]
    paths[0].parent.mkdir(parents=True, exist_ok=True)
    todo = [f for f, p in enumerate(paths) if not p.exists()]
    last = max(todo, default=-1)
    open_map, tmp = None, None
    for f, lo, chunk in mlperf_table_chunks(rows, sizes, chunk_rows):
        if f > last:
            break                      # nothing after this needs the generator
        if f not in todo:
            continue                   # finished earlier: its draws are replayed, not written
        if lo == 0:
            tmp = _tmp(paths[f])
            open_map = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.int32, shape=(rows[f], sizes[f]))
        open_map[lo:lo + len(chunk)] = chunk
        if lo + len(chunk) == rows[f]:
            open_map.flush()
            del open_map
            commit_temp(tmp, paths[f])
            log(f"table C{f + 1}: {rows[f]:,} x {sizes[f]}")
    return paths


def _write_shard(src_files: dict, dst_files: dict, tables, sizes, chunk_rows: int) -> None:
    if dst_files["sparse"].exists():
        return
    dst_files["sparse"].parent.mkdir(parents=True, exist_ok=True)
    for c in ("dense", "labels"):
        if not dst_files[c].exists():
            tmp = _tmp(dst_files[c])
            shutil.copyfile(src_files[c], tmp)
            commit_temp(tmp, dst_files[c])
    one_hot = np.load(src_files["sparse"], mmap_mode="r")                 # [rows, 26]
    tmp = _tmp(dst_files["sparse"])
    bags = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.int32, shape=(len(one_hot), sum(sizes)))
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    for lo in range(0, len(one_hot), chunk_rows):
        ids = np.asarray(one_hot[lo:lo + chunk_rows])
        for f, (s, k) in enumerate(zip(starts, sizes)):
            bags[lo:lo + len(ids), s:s + k] = tables[f][ids[:, f]]
    bags.flush()
    del bags
    commit_temp(tmp, dst_files["sparse"])


def _available_memory() -> int | None:
    """Bytes the kernel says can be allocated without swapping (Linux), else None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _check_room(src: Path, out: Path, m: dict, rows, sizes, chunk_rows: int) -> None:
    """UserError, before anything is written, when the bags cannot fit: a table chunk
    larger than the free memory (the draws are int64 [chunk, k], then concatenated),
    or files larger than the free disk under `out` (what a rerun still has to write).

    Without it a huge bag size raised MemoryError mid-way, leaving OUT/tables behind."""
    chunk = max(min(chunk_rows, n) * k * 2 * 8 for n, k in zip(rows, sizes))
    free_mem = _available_memory()
    if free_mem is not None and chunk > free_mem:
        f = max(range(len(rows)), key=lambda j: min(chunk_rows, rows[j]) * sizes[j])
        raise UserError(f"--multi-hot: table C{f + 1} ({rows[f]:,} rows x {sizes[f]:,} ids) needs "
                        f"{chunk / 2**30:,.1f} GiB of memory per chunk of "
                        f"{min(chunk_rows, rows[f]):,} rows, {free_mem / 2**30:,.1f} GiB "
                        "available; use smaller bags or --chunk-rows")
    need = sum(4 * n * k for f, (n, k) in enumerate(zip(rows, sizes))
               if not (out / "tables" / f"C{f + 1}.npy").exists())
    for split, info in m["splits"].items():
        for shard in info["shards"]:
            dst = manifest_io.shard_files(out, split, shard)
            if not dst["sparse"].exists():
                need += 4 * int(shard["rows"]) * sum(sizes)
                srcf = manifest_io.shard_files(src, split, shard)
                need += sum(srcf[c].stat().st_size for c in ("dense", "labels")
                            if not dst[c].exists() and srcf[c].exists())
    base = out
    while not base.exists() and base != base.parent:
        base = base.parent
    free = shutil.disk_usage(base).free
    if need > free:
        raise UserError(f"--out {out}: the multi-hot tables and shards need "
                        f"{need / 2**30:,.1f} GiB, {free / 2**30:,.1f} GiB free on {base}")


def materialize(src, out, sizes=MLPERF_MULTI_HOT, chunk_rows: int = CHUNK_ROWS, log=print) -> dict:
    """Write OUT (module docstring); returns its manifest."""
    src, out = Path(src), Path(out)
    m = manifest_io.load(src)
    if "multi_hot" in m:
        raise UserError(f"--src {src} is already multi-hot")
    rows = [int(r) for r in m["table_sizes"]]
    sizes = tuple(int(k) for k in sizes)
    if len(sizes) != len(rows) or min(sizes) < 1:
        raise UserError(f"--multi-hot needs {len(rows)} sizes >= 1, got {len(sizes)}: {sizes}")
    if chunk_rows < 1:
        raise UserError(f"chunk rows must be >= 1, got {chunk_rows}")
    if out.resolve() == src.resolve():
        raise UserError("--out must differ from --src")
    check_writable_dir(out, "--out")     # an existing regular file was a NotADirectoryError
    done = out / "manifest.json"
    if done.exists():
        old = manifest_io.load(out)
        if old.get("multi_hot", {}).get("sizes") != list(sizes):
            raise UserError(f"{out} holds multi-hot data of other sizes; use a new --out")
        return old
    _check_room(src, out, m, rows, sizes, chunk_rows)
    tables = [np.load(p, mmap_mode="r") for p in _write_tables(out, rows, sizes, chunk_rows, log)]
    for split, info in m["splits"].items():
        for shard in info["shards"]:
            _write_shard(manifest_io.shard_files(src, split, shard), manifest_io.shard_files(out, split, shard),
                         tables, sizes, chunk_rows)
        log(f"split {split}: {info['rows']:,} rows")
    manifest = dict(m, multi_hot={"sizes": list(sizes), "rule": RULE, "source": str(src),
                                  "tables": "tables/C<j>.npy int32 [rows, k]"},
                    layout=dict(m["layout"], sparse=f"<split>/<shard>.sparse.npy int32 [rows, {sum(sizes)}] "
                                                    "(bags side by side in feature order)"))
    write_atomic(done, json.dumps(manifest, indent=2) + "\n")
    return manifest


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="dlrm-scaling data criteo-multihot", description=__doc__.split("\n\n")[0])
    p.add_argument("--src", required=True, help="prepared one-hot shards (criteo-prepare --out)")
    p.add_argument("--out", required=True)
    p.add_argument("--multi-hot", default=",".join(map(str, MLPERF_MULTI_HOT)),
                   help="ids per feature, 26 comma-separated sizes (default: MLPerf DLRMv2's)")
    p.add_argument("--chunk-rows", type=int, default=CHUNK_ROWS)
    a = p.parse_args(argv)
    try:
        try:
            sizes = tuple(int(x) for x in a.multi_hot.split(","))
        except ValueError:
            raise UserError(f"--multi-hot expects comma-separated integers, got {a.multi_hot!r}")
        materialize(a.src, a.out, sizes, a.chunk_rows)
    except UserError as err:
        print(f"dlrm-scaling data criteo-multihot: error: {err}", file=sys.stderr)
        return 2
    print(f"multi-hot shards -> {a.out}")
    return 0
