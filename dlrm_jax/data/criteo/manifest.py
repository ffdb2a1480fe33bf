"""DATA_DIR/manifest.json of prepared Criteo shards: written, read, checked.

The manifest is the only thing readers trust: sources (size, sha256, lines),
the options that decided the bytes, the split rule, table sizes, shards per
split in stream order, bad-row counts and per-column stats (per split and
overall).  It holds no timestamps, so a resumed preparation writes the same
manifest as an uninterrupted one.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from dlrm_jax.errors import UserError
from dlrm_jax.run import storage
from dlrm_jax.run.files import write_atomic

from . import format as cf

FORMAT = "dlrm-scaling/criteo-shards"
FORMAT_VERSION = 1
COLUMNS = ("dense", "sparse", "labels")

_DENSE_RULES = {"log1p": "missing -> 0, x < 0 -> 0, then log(x + 1)",
                "signed-log1p": "missing -> 0, sign(x) log(1 + |x|)",
                "none": "missing -> 0, float(x)"}
_VOCAB_RULE = ("id 0 = missing, 1 = rare (count < min_count in the counted split), "
               "2.. = frequent values by decreasing count, ties by value")


def write_json(path: Path, obj) -> None:
    """Atomically (temp file + rename)."""
    write_atomic(path, json.dumps(obj, indent=1, sort_keys=True) + "\n")


def shard_stats(labels, dense_raw, dense_missing, dense_out, cat_missing) -> dict:
    """Stats of one block's rows of one split: exact integers plus float64
    sums of the transformed dense values (summed over fixed blocks, so the
    totals are reproducible)."""
    present = ~dense_missing
    lim = np.iinfo(np.int64)
    d = dense_out.astype(np.float64)
    return {"rows": int(labels.size), "positives": int(labels.sum()),
            "dense_missing": dense_missing.sum(0), "dense_negative": ((dense_raw < 0) & present).sum(0),
            "dense_min": np.where(present, dense_raw, lim.max).min(0),
            "dense_max": np.where(present, dense_raw, lim.min).max(0),
            "dense_sum": d.sum(0), "dense_sumsq": np.einsum("ij,ij->j", d, d),
            "cat_missing": cat_missing.sum(0)}


def add_stats(acc: dict | None, s: dict) -> dict:
    """Accumulate block stats (numpy) into shard stats."""
    if acc is None:
        return dict(s)
    out = {k: acc[k] + s[k] for k in ("rows", "positives", "dense_missing", "dense_negative",
                                      "dense_sum", "dense_sumsq", "cat_missing")}
    out["dense_min"] = np.minimum(acc["dense_min"], s["dense_min"])
    out["dense_max"] = np.maximum(acc["dense_max"], s["dense_max"])
    return out


def stats_json(s: dict) -> dict:
    seen = s["dense_missing"] < s["rows"]
    j = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in s.items()}
    j["dense_min"] = [int(v) if ok else None for v, ok in zip(s["dense_min"], seen)]
    j["dense_max"] = [int(v) if ok else None for v, ok in zip(s["dense_max"], seen)]
    return j


def _merge_json(acc: dict | None, s: dict) -> dict:
    if acc is None:
        return {k: (list(v) if isinstance(v, list) else v) for k, v in s.items() if k != "name"}
    for k in ("rows", "positives"):
        acc[k] += s[k]
    for k in ("dense_missing", "dense_negative", "dense_sum", "dense_sumsq", "cat_missing"):
        acc[k] = [a + b for a, b in zip(acc[k], s[k])]
    for k, f in (("dense_min", min), ("dense_max", max)):
        acc[k] = [b if a is None else a if b is None else f(a, b) for a, b in zip(acc[k], s[k])]
    return acc


def _summary(raw: dict | None) -> dict:
    """Readable per-column stats (dense mean/std are of the transformed values)."""
    if raw is None:
        return {"rows": 0}
    n = raw["rows"]
    dense = {}
    for j, name in enumerate(cf.DENSE_NAMES):
        mean = raw["dense_sum"][j] / n
        dense[name] = {"missing": raw["dense_missing"][j],
                       "missing_rate": raw["dense_missing"][j] / n,
                       "negative": raw["dense_negative"][j],
                       "min": raw["dense_min"][j], "max": raw["dense_max"][j], "mean": mean,
                       "std": max(raw["dense_sumsq"][j] / n - mean * mean, 0.0) ** 0.5}
    cat = {name: {"missing": raw["cat_missing"][j], "missing_rate": raw["cat_missing"][j] / n}
           for j, name in enumerate(cf.CAT_NAMES)}
    return {"rows": n, "positives": raw["positives"], "label_rate": raw["positives"] / n,
            "dense": dense, "categorical": cat}


def build(opts, plan, infos: list[dict], results: dict, records: dict,
          table_sizes: list[int], counted_split: str) -> dict:
    """The final manifest from the per-unit records of the write pass."""
    splits = {name: {"rows": 0, "shards": [], "_raw": None} for name in plan.names}
    overall, bad, examples = None, {}, []
    for src in range(len(infos)):
        units = records.get(src, {})
        if sorted(units) != list(range(len(units))) or \
                sum(r["lines"] for r in units.values()) != results[src]["lines"]:
            raise UserError(f"{infos[src]['path']}: unit records do not cover the file; "
                            "did it change during preparation?")
        for u in sorted(units):
            rec = units[u]
            for reason, k in rec["bad_rows"].items():
                bad[reason] = bad.get(reason, 0) + k
            examples += rec["bad_examples"][:max(0, 10 - len(examples))]
            for name, sh in rec["shards"].items():
                sp = splits[name]
                sp["rows"] += sh["rows"]
                sp["shards"].append({"name": sh["name"], "rows": sh["rows"],
                                     "source": src, "unit": u})
                sp["_raw"] = _merge_json(sp["_raw"], sh)
                overall = _merge_json(overall, sh)
    for sp in splits.values():
        sp["stats"] = _summary(sp.pop("_raw"))
    sources = [dict(info, sha256=results[i]["sha256"], lines=results[i]["lines"])
               for i, info in enumerate(infos)]
    if opts.min_count:
        cat = {"mode": "vocab", "min_count": opts.min_count, "counted_split": counted_split,
               "rule": _VOCAB_RULE,
               "files": "vocab/C<j>.values.npy (uint32 values in id order from id 2), "
                        "vocab/C<j>.counts.npy"}
    else:
        cat = {"mode": "hash", "rows": list(opts.hash_rows), "rule": cf.HASH_RULE}
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "status": "complete",
            "options": opts.identity(), "sources": sources, "split": plan.describe(),
            "dense": {"transform": opts.dense_transform, "dtype": opts.dense_dtype,
                      "rule": _DENSE_RULES[opts.dense_transform]},
            "categorical": cat, "table_sizes": table_sizes,
            "layout": {"dense": f"<split>/<shard>.dense.npy {opts.dense_dtype} [rows, 13]",
                       "sparse": "<split>/<shard>.sparse.npy int32 [rows, 26]",
                       "labels": "<split>/<shard>.labels.npy uint8 [rows]"},
            "lines": sum(r["lines"] for r in results.values()),
            "rows": sum(sp["rows"] for sp in splits.values()),
            "bad_rows": {"total": sum(bad.values()), "by_reason": dict(sorted(bad.items())),
                         "examples": examples},
            "splits": splits, "stats": _summary(overall)}


def load(data_dir: str | os.PathLike) -> dict:
    """The manifest of a finished preparation (UserError otherwise); DATA_DIR may be gs://."""
    path = storage.path(data_dir) / "manifest.json"  # a bad bucket: one line now
    if not storage.is_file(path):
        raise UserError(f"{data_dir}: no manifest.json; prepare it with "
                        f"`dlrm-scaling data criteo-prepare --src ... --out {data_dir}`")
    m = json.loads(storage.read_text(path))
    if m.get("format") != FORMAT or m.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{path}: not a {FORMAT} v{FORMAT_VERSION} manifest")
    if m.get("status") != "complete":
        raise UserError(f"{data_dir}: preparation not finished; rerun the same "
                        "criteo-prepare command to resume it")
    return m


def shard_files(data_dir: str | os.PathLike, split: str, shard: dict) -> dict[str, Path]:
    """The shard's column files: Paths, or gs:// strings for a bucket."""
    if storage.is_remote(data_dir):
        base = f"{os.fspath(data_dir).rstrip('/')}/{split}/{shard['name']}"
        return {c: f"{base}.{c}.npy" for c in COLUMNS}
    base = Path(data_dir) / split / shard["name"]
    return {c: base.with_name(f"{shard['name']}.{c}.npy") for c in COLUMNS}
