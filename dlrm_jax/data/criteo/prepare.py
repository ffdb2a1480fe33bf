"""`dlrm-scaling data criteo-prepare`: Criteo TSV -> memory-mappable shards.

Streams plain or gzipped sources in blocks of whole lines (bounded memory),
parses them with `format.parse_block` in a few threads, and writes
each *unit* of `rows_per_shard` input lines as one shard per split:

    DATA_DIR/manifest.json
    DATA_DIR/<split>/shard-SSS-UUUUU.dense.npy    float32|float16 [rows, 13]
    DATA_DIR/<split>/shard-SSS-UUUUU.sparse.npy   int32 [rows, 26]
    DATA_DIR/<split>/shard-SSS-UUUUU.labels.npy   uint8 [rows]
    DATA_DIR/vocab/C<j>.values.npy, .counts.npy   (--min-count only)

(SSS = source index, UUUUU = unit within the source.)  Shard files are written
under a temporary name and renamed; then a record in DATA_DIR/.progress marks
the unit finished.  A rerun with the same sources and options skips finished
units, so a killed run resumes and ends byte-identical to an uninterrupted
one; the records fold into manifest.json at the end.  Shards depend only on
the lines of their unit, never on worker or thread counts.

Bad input (`FILE:LINE: what`) stops the run by default (exit 2); a fresh run
then removes everything it wrote, a resumed one keeps its finished units and
only drops temp files.  `--on-bad-row skip` drops bad rows and counts them per
reason in the manifest.  Empty files and truncated/corrupt gzip always stop.
Temp files carry the writer's pid, and workers stop when their main process
is gone, so a killed `--workers N` run cannot race its rerun.

`--out gs://bucket/data`: the preparation runs in a local staging directory
(`--staging`, default under the temp dir, one per --out) and each finished
unit's shards are uploaded, then deleted locally, so the local disk holds
about one unit; manifest.json is uploaded last (readers trust only a complete
manifest: it is the commit).  A killed run rerun with the same staging
directory resumes; shards finished but not yet uploaded are uploaded then.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable, Sequence

from dlrm_jax.errors import UserError
from dlrm_jax.run import storage

from . import format as cf, manifest as manifest_io
from .io import StreamError, count_lines, is_gzip
from .manifest import FORMAT, FORMAT_VERSION, write_json
from .options import DEFAULT_HASH_ROWS, PrepareOptions
from .source_pass import PROGRESS, SourcePass, Task, run_task
from .splits import parse_split
from .vocab import Vocab, merge_counts


# ---------------------------------------------------------------------------
# The whole preparation
# ---------------------------------------------------------------------------
def _source_infos(sources: Sequence[str]) -> list[dict]:
    infos = []
    for s in sources:
        p = Path(s)
        if not p.is_file():
            raise UserError(f"--src {s}: no such file")
        st = p.stat()
        infos.append({"path": str(p.resolve()), "name": p.name, "size": st.st_size,
                      "mtime_ns": st.st_mtime_ns,
                      "compression": "gzip" if is_gzip(p) else "none"})
    return infos


def _open_out(out: Path, opts: PrepareOptions, infos: list[dict]) -> tuple[dict, bool]:
    """(state, fresh): the manifest of an earlier run with the same inputs, or a
    new in-progress one.  Refuses a directory holding anything else."""
    mpath = out / "manifest.json"
    if mpath.exists():
        state = json.loads(mpath.read_text())
        if state.get("format") != FORMAT or state.get("format_version") != FORMAT_VERSION:
            raise UserError(f"{mpath}: not a {FORMAT} v{FORMAT_VERSION} manifest")
        if state["options"] != opts.identity():
            diff = sorted(k for k, v in opts.identity().items() if state["options"].get(k) != v)
            raise UserError(f"--out {out} was prepared with other options ({', '.join(diff)}); "
                            "use a new --out or delete it")
        key = ("path", "size", "mtime_ns")
        if [[i[k] for k in key] for i in state["sources"]] != [[i[k] for k in key] for i in infos]:
            raise UserError(f"--out {out} was prepared from other or changed sources; "
                            "use a new --out or delete it")
        return state, False
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {out} exists and holds no manifest.json; refusing to write there")
    out.mkdir(parents=True, exist_ok=True)
    state = {"format": FORMAT, "format_version": FORMAT_VERSION, "status": "in_progress",
             "options": opts.identity(), "sources": infos}
    write_json(mpath, state)
    return state, True


def _records(out: Path, mode: str) -> dict[int, dict[int, dict]]:
    recs: dict[int, dict[int, dict]] = {}
    for p in (out / PROGRESS).glob(f"{mode}-[0-9]*-[0-9]*.json"):
        r = json.loads(p.read_text())
        recs.setdefault(r["source"], {})[r["unit"]] = r
    return recs


def _run_pass(mode, out, paths, displays, opts, plan, workers, threads, on_unit_done, log):
    """Run `mode` over every source not yet finished; results per source."""
    done = _records(out, mode)
    results, tasks = {}, []
    for i, (p, d) in enumerate(zip(paths, displays)):
        rp = out / PROGRESS / f"{mode}-source-{i:03d}.json"
        if rp.exists():
            results[i] = json.loads(rp.read_text())
        else:
            tasks.append(Task(str(out), i, p, d, opts, plan, mode, done.get(i, {}), threads))
    if tasks:
        resumed = sum(len(t.done) for t in tasks)
        log(f"criteo-prepare: {mode} pass over {len(tasks)} source(s)"
            + (f", resuming after {resumed} finished unit(s)" if resumed else ""))
    if workers <= 1 or len(tasks) <= 1:
        for t in tasks:
            results[t.index] = SourcePass(t, on_unit_done).run()
            log(f"  {t.display}: {results[t.index]['lines']:,} lines")
    else:
        ctx = multiprocessing.get_context("spawn")     # never fork a process that may hold JAX
        with ctx.Pool(min(workers, len(tasks))) as pool:
            for t, res in zip(tasks, pool.imap(run_task, tasks)):
                results[t.index] = res
                if on_unit_done is not None:
                    for u, rec in sorted(_records(out, mode).get(t.index, {}).items()):
                        if u not in t.done:
                            on_unit_done(rec)
                log(f"  {t.display}: {res['lines']:,} lines")
    return results


def _cleanup(out: Path, fresh: bool) -> None:
    """After a failure: remove temp files; a fresh run removes all it wrote."""
    if fresh:
        for p in list(out.iterdir()):
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        out.rmdir()
        return
    for p in out.rglob("*.tmp*"):
        p.unlink(missing_ok=True)


def prepare(sources: Sequence[str | os.PathLike], out: str | os.PathLike,
            opts: PrepareOptions = PrepareOptions(), *, workers: int = 1,
            threads: int | None = None, on_unit_done: Callable[[dict], None] | None = None,
            log: Callable[[str], None] | None = None, staging: str | os.PathLike | None = None) -> dict:
    """Prepare (or resume preparing) `out` from `sources`; returns the manifest.

    `workers` processes work on different sources; each runs `threads` parse
    threads (default: the CPUs shared out).  `on_unit_done(record)` is called
    after each finished unit of either pass (record["pass"] is "count" or
    "write"; per source when workers > 1).  `staging`: the local directory of a
    gs:// `out` (see the module docstring).
    """
    log = log or (lambda msg: None)
    opts.check()
    if workers < 1:
        raise UserError(f"--workers must be >= 1, got {workers}")
    if storage.is_remote(out):
        return _prepare_to_bucket(sources, os.fspath(out).rstrip("/"), opts, staging, workers=workers,
                                  threads=threads, on_unit_done=on_unit_done, log=log)
    threads = threads or max(1, min(4, (os.cpu_count() or 1) // workers))
    spec = parse_split(opts.split)
    displays = spec.order_sources([str(s) for s in sources])
    infos = _source_infos(displays)
    paths = [i["path"] for i in infos]
    out = Path(out)
    state, fresh = _open_out(out, opts, infos)
    if state["status"] == "complete":
        log(f"criteo-prepare: {out} is already complete")
        return state
    try:
        (out / PROGRESS).mkdir(exist_ok=True)
        for p in out.rglob("*.tmp*"):             # left by a killed run
            p.unlink()
        counts = state.setdefault("line_counts", {})
        for i, need in enumerate(spec.needs_counts(displays)):
            if need and str(i) not in counts:
                log(f"criteo-prepare: counting lines of {displays[i]}")
                try:
                    counts[str(i)] = count_lines(paths[i])
                except StreamError as e:
                    raise UserError(f"{displays[i]}:{e.line}: {e}") from None
                if counts[str(i)] == 0:
                    raise UserError(f"{displays[i]}:1: file is empty (no rows)")
                write_json(out / "manifest.json", state)
        plan = spec.bind(paths, [counts.get(str(i)) for i in range(len(paths))])
        counted = opts.counted_split(plan.names)
        run = dict(out=out, paths=paths, displays=displays, opts=opts, plan=plan,
                   workers=workers, threads=threads, log=log)
        counted_sources = {}
        if opts.min_count:
            if not (out / "vocab" / "done").exists():
                counted_sources = _run_pass("count", on_unit_done=on_unit_done, **run)
                vocab = Vocab.build(merge_counts(sorted((out / PROGRESS).glob("count-*.npz"))),
                                    opts.min_count)
                vocab.save(out / "vocab")
                (out / "vocab" / "done").write_text("")
            table_sizes = Vocab.load(out / "vocab").sizes
        else:
            table_sizes = list(opts.hash_rows)
        results = _run_pass("write", on_unit_done=on_unit_done, **run)
        for i, c in counts.items():
            if results[int(i)]["lines"] != c:
                raise UserError(f"{displays[int(i)]}: {c} lines when counted, "
                                f"{results[int(i)]['lines']} when read: did it change?")
        for i, r in counted_sources.items():
            if r["sha256"] != results[i]["sha256"]:
                raise UserError(f"{displays[i]}: changed between the vocabulary and the "
                                "write pass (sha256 differs)")
        manifest = manifest_io.build(opts, plan, infos, results, _records(out, "write"),
                                     table_sizes, counted)
        write_json(out / "manifest.json", manifest)
        shutil.rmtree(out / PROGRESS)
        (out / "vocab" / "done").unlink(missing_ok=True)
        log(f"criteo-prepare: {manifest['rows']:,} rows -> {out} "
            + ", ".join(f"{k} {v['rows']:,}" for k, v in manifest["splits"].items()))
        return manifest
    except UserError:
        _cleanup(out, fresh)
        raise
    except BaseException:
        _cleanup(out, False)
        raise


def _prepare_to_bucket(sources, out: str, opts: PrepareOptions, staging, **kw) -> dict:
    storage.path(out)  # a missing bucket or a 403: one line, before anything is written
    staging = Path(staging) if staging is not None else \
        Path(tempfile.gettempdir()) / "dlrm-criteo-prepare" / hashlib.sha1(out.encode()).hexdigest()[:16]
    remote_manifest = f"{out}/manifest.json"
    fresh = not storage.listdir(out)  # nothing there yet: a failure removes what this run uploaded
    if not fresh and not staging.exists():
        if not storage.is_file(remote_manifest):
            raise UserError(f"--out {out} holds no manifest.json and {staging} no staged preparation to "
                            f"resume; refusing to write there (use a new --out, or the --staging of the run "
                            f"that wrote it)")
        staging.mkdir(parents=True)  # compared to these options and sources as a local one would be
        (staging / "manifest.json").write_bytes(storage.read_bytes(remote_manifest))
    log, user_done = kw.pop("log"), kw.pop("on_unit_done")

    def unit_done(rec: dict) -> None:
        _upload_staged(staging, out)
        if user_done is not None:
            user_done(rec)

    try:
        manifest = prepare(sources, staging, opts, on_unit_done=unit_done, log=log, **kw)
        _upload_staged(staging, out, vocab=True)  # what a killed run staged but did not upload
        storage.write_atomic(remote_manifest, (staging / "manifest.json").read_bytes())  # last: the commit
    except UserError:
        if fresh:
            storage.rmtree(out)
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(staging)
    log(f"criteo-prepare: uploaded to {out}")
    return manifest


def _upload_staged(staging: Path, out: str, vocab: bool = False) -> None:
    """Upload every finished shard file in `staging` and delete it there (a file still there
    is one not yet uploaded).  The vocabulary stays until the end: later passes read it."""
    for d in sorted(p for p in staging.iterdir() if p.is_dir() and p.name != PROGRESS):
        if d.name == "vocab" and not vocab:
            continue
        for f in sorted(d.iterdir()):
            if ".tmp" in f.name or f.name == "done":
                continue
            storage.write_atomic(f"{out}/{d.name}/{f.name}", f.read_bytes())
            f.unlink()


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    def error(self, message):            # one line, exit code 2 via UserError
        raise UserError(f"{self.prog}: {message}")


def _hash_rows(text: str) -> tuple[int, ...]:
    try:
        rows = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise UserError(f"--hash-rows {text!r}: want an integer or {cf.NUM_SPARSE} "
                        "comma-separated integers") from None
    if len(rows) == 1:
        rows *= cf.NUM_SPARSE
    if len(rows) != cf.NUM_SPARSE:
        raise UserError(f"--hash-rows: want 1 or {cf.NUM_SPARSE} values, got {len(rows)}")
    return rows


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="dlrm-scaling data criteo-prepare",
                 description="Criteo click logs (TSV, plain or gzip) -> memory-mappable shards "
                             "+ manifest.json; resumable.")
    ap.add_argument("--src", nargs="+", required=True, metavar="FILE",
                    help="train.txt or day_0 .. day_23 (plain or .gz)")
    ap.add_argument("--out", required=True, metavar="DATA_DIR", help="a directory, or gs://BUCKET/PATH")
    ap.add_argument("--staging", default=None, metavar="DIR",
                    help="with a gs:// --out: the local directory shards pass through (default: one per "
                         "--out under the temp dir; rerun with the same one to resume)")
    ap.add_argument("--split", default="none",
                    help="kaggle-dlrm | terabyte | terabyte-dlrm | random:F1,F2,F3:SEED | "
                         "head:N | none (default)")
    cat = ap.add_mutually_exclusive_group()
    cat.add_argument("--hash-rows", type=_hash_rows, default=None, metavar="N[,N...]",
                     help=f"rows per hashed table, one or 26 (default {DEFAULT_HASH_ROWS:,})")
    cat.add_argument("--min-count", type=int, default=None, metavar="K",
                     help="vocabulary mode: ids for values seen >= K times (two passes)")
    ap.add_argument("--vocab-split", default=None, help="split counted by --min-count "
                    "(default train)")
    ap.add_argument("--dense-transform", default="log1p", choices=cf.DENSE_TRANSFORMS)
    ap.add_argument("--dense-dtype", default="float32", choices=("float32", "float16"))
    ap.add_argument("--rows-per-shard", type=int, default=1_000_000, metavar="N",
                    help="input lines per shard: the resume granularity; memory per "
                         "worker is about 200 bytes x N")
    ap.add_argument("--on-bad-row", default="error", choices=("error", "skip"))
    ap.add_argument("--workers", type=int, default=1, help="processes over source files")
    ap.add_argument("--threads", type=int, default=None, help="parse threads per worker")
    ap.add_argument("--quiet", action="store_true")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    try:
        a = build_parser().parse_args(argv)
        opts = PrepareOptions(split=a.split, min_count=a.min_count, vocab_split=a.vocab_split,
                              dense_transform=a.dense_transform, dense_dtype=a.dense_dtype,
                              rows_per_shard=a.rows_per_shard, on_bad_row=a.on_bad_row,
                              **({"hash_rows": a.hash_rows} if a.hash_rows else {}))
        prepare(a.src, a.out, opts, workers=a.workers, threads=a.threads,
                log=None if a.quiet else (lambda m: print(m, flush=True)), staging=a.staging)
        return 0
    except UserError as e:
        print(str(e), file=sys.stderr)
        return 2
    except OSError as e:                  # unwritable --out, disk full, ...
        print(f"dlrm-scaling data criteo-prepare: {e}", file=sys.stderr)
        return 2
    except SystemExit as e:               # --help
        return int(e.code or 0)


if __name__ == "__main__":
    sys.exit(main())
