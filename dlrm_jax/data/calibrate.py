"""`dlrm-scaling data calibrate`: fit a synthetic world to prepared Criteo shards.

    dlrm-scaling data calibrate --src DATA_DIR --out world.json [--cardinalities kaggle]

Reads a `criteo-prepare` output (DATA_DIR/manifest.json and the shards; log1p
dense, categoricals hashed or in a `--min-count 1` vocabulary) and writes a
world (dlrm_jax/data/world.py) that `--set synthetic.world=world.json` uses:

* base click rate: the label rate of the rows read;
* per categorical feature: missing rate, the measured shares of its popular
  values (seen >= HEAD_MIN_COUNT times: share known to ~20%), and a
  Zipf-Mandelbrot tail (s, q) fitted so that the expected number of distinct
  ids after n rows matches the data's, in log space, at log-spaced n from
  N/100 to N (the curve that decides how embedding tables fill as data grows);
* per dense feature: missing rate and quantiles of log(1 + count) of the
  present values;
* the teacher strengths (id, pair, dense effects): not identifiable from the
  marginals; `--teacher` sets them, by default the values calibrated on the
  Criteo Kaggle head (CRITEO_HEAD_TEACHER, measured as the README describes).

The world holds numbers only (fitted parameters, shares, quantiles, the
distinct-id curves), never rows.  Bad input (not prepared data, too few rows,
a preparation whose ids cannot be counted) raises UserError: one line, exit 2.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import optimize

from dlrm_jax.data.base import NUM_DENSE, NUM_SPARSE
from dlrm_jax.data.criteo import manifest as manifest_io
from dlrm_jax.data.criteo.table_sizes import KAGGLE_TABLE_ROWS
from dlrm_jax.data.world import DenseMarginal, IdLaw, World, curve_rows, distinct_curve, round_sig
from dlrm_jax.errors import UserError
from dlrm_jax.run.files import check_writable_file, write_atomic

MIN_ROWS = 1000          # below this the distinct-id curve spans too little to fit a tail
HEAD_MIN_COUNT = 30      # a value seen this often has its share known to ~1/sqrt(30) = 18%
HEAD_MAX = 1000          # at most this many measured shares per feature
MAX_FIT_CARDINALITY = 2 ** 31 - 2   # a fitted table size stays an int32 id space ...
FIT_CARDINALITY_PER_ROW = 1000      # ... and at most 1000x the rows read: a steep tail leaves C
                                    # unconstrained, and extrapolating further means nothing
# Teacher strengths (std of the summed per-id, pairwise and dense logit parts) of
# the criteo-like world, chosen with scripts/world_head_experiment.py (3 world
# seeds, 8,000 training examples) so that the hashed-LR and DLRM eval NE on the
# world sit near theirs on the real Kaggle head split (0.885, 0.889):
#   1.5,1.0,0.8 (the default world's) LR 0.916 DLRM 0.914 (1 seed)
#   2.0,1.0,1.2 LR 0.880 DLRM 0.868    2.5,1.0,0.8 LR 0.883 DLRM 0.864 (2 seeds each)
#   2.0,0.5,0.8 LR 0.893 DLRM 0.882    1.8,0.5,1.0 LR 0.885 DLRM 0.880 (chosen)
# (per-seed sd ~0.01; the real head's 1,999 eval rows give its NE a similar spread).
CRITEO_HEAD_TEACHER = (1.8, 0.5, 1.0)
# Dense quantiles: fine at both ends, where the counts' long tails live.
DENSE_PROBS = tuple(np.unique(np.concatenate([np.linspace(0, 1, 65), [0.001, 0.005, 0.995, 0.999]])).tolist())


# --------------------------------------------------------------------------- reading

def _columns(data_dir: Path, manifest: dict, splits: Sequence[str], kind: str, j: int) -> np.ndarray:
    """Column j of `kind` (dense | sparse) over the splits' shards in stream order (memory-mapped reads)."""
    parts = []
    for name in splits:
        for sh in manifest["splits"][name]["shards"]:
            path = manifest_io.shard_files(data_dir, name, sh)[kind]
            try:
                parts.append(np.asarray(np.load(path, mmap_mode="r")[:, j]))
            except (OSError, ValueError) as err:
                raise UserError(f"{path}: unreadable shard ({err})") from None
    return np.concatenate(parts) if parts else np.zeros(0)


def _check(manifest: dict, data_dir: Path, splits: Sequence[str]) -> None:
    unknown = [s for s in splits if s not in manifest["splits"]]
    if unknown:
        raise UserError(f"{data_dir}: no split {unknown[0]!r}; it has {', '.join(manifest['splits'])}")
    if manifest["dense"]["transform"] != "log1p":
        raise UserError(f"{data_dir}: dense transform {manifest['dense']['transform']!r}; calibrate "
                        "needs log1p (criteo-prepare's default)")
    cat = manifest["categorical"]
    if cat["mode"] == "vocab" and cat["min_count"] > 1:
        raise UserError(f"{data_dir}: prepared with --min-count {cat['min_count']}, which merges rare values "
                        "into one id, so new ids cannot be counted; prepare with --min-count 1 or hashing")
    rows = sum(manifest["splits"][s]["rows"] for s in splits)
    if rows < MIN_ROWS:
        raise UserError(f"{data_dir}: {rows} rows in split(s) {', '.join(splits)}; "
                        f"calibrate needs at least {MIN_ROWS} to fit how fast new ids appear")


# --------------------------------------------------------------------------- fitting

def frequency_profile(ids: np.ndarray) -> dict:
    """Counts of the present ids (id != 0) by decreasing count, plus a few summary numbers."""
    present = ids[ids != 0]
    counts = np.sort(np.unique(present, return_counts=True)[1])[::-1] if present.size else np.zeros(0, int)
    n = max(present.size, 1)
    return {"counts": counts, "distinct": int(counts.size),
            "top1_share": float(counts[:1].sum() / n), "top10_share": float(counts[:10].sum() / n),
            "singleton_values": int(np.sum(counts == 1))}


def fit_id_law(ids: np.ndarray, cardinality: int | str = "fit") -> tuple[IdLaw, dict]:
    """A feature's IdLaw from its ids [N] in stream order (0 = missing), and the fit report.

    cardinality: present values in the world: a number, "observed" (the distinct
    values seen: right for a whole log, too small for a sample, whose curve it
    bends down), or "fit" (a third parameter of the curve fit, from the distinct
    values seen up to 1000x the rows (FIT_CARDINALITY_PER_ROW); only as well determined as the curve's
    bend: a table far larger than the rows read fits loosely, and matters little to them)."""
    n_rows = ids.size
    prof = frequency_profile(ids)
    counts, present = prof["counts"], max(int(np.sum(ids != 0)), 1)
    fit_c = cardinality == "fit"
    c_max = min(MAX_FIT_CARDINALITY, FIT_CARDINALITY_PER_ROW * n_rows)
    c = max(prof["distinct"] if cardinality in ("fit", "observed") else int(cardinality), 1)
    missing = float(np.mean(ids == 0))
    head = tuple((counts[:HEAD_MAX][counts[:HEAD_MAX] >= HEAD_MIN_COUNT] / present).tolist())
    if len(head) >= c:   # every value is popular: the measured shares are the law
        head = tuple((np.asarray(head) / sum(head)).tolist())
    grid = curve_rows(n_rows, 24, max(10, n_rows // 100))
    observed = distinct_curve(ids, grid)

    def law(p) -> IdLaw:
        cc = int(np.clip(np.round(np.exp(p[2])), c, c_max)) if fit_c else c
        return IdLaw(cc, missing, float(np.exp(p[0])), float(np.expm1(p[1])), head)

    def resid(p) -> np.ndarray:
        return np.log1p(law(p).expected_distinct(grid)) - np.log1p(observed)

    best = None
    lo, hi = [np.log(0.05), 0.0], [np.log(20.0), np.log(1e6)]
    if fit_c:   # log C from the distinct values seen (+1: room for the tail) to the cap
        lo, hi = lo + [np.log(c + 1.0)], hi + [np.log(max(c_max, c + 2.0))]
    if len(head) < c + fit_c and prof["distinct"] > len(head):
        for s0 in (0.8, 1.2, 2.0):          # a small start grid: the loss has local minima in q
            for q0 in (0.0, 5.0, 50.0):
                x0 = [np.log(s0), np.log1p(q0)] + ([np.log(10.0 * c + 1)] if fit_c else [])
                r = optimize.least_squares(resid, np.clip(x0, lo, hi), bounds=(lo, hi),
                                           diff_step=0.02)  # C is rounded: steps >= 1 from C = 50
                if best is None or r.cost < best.cost:
                    best = r
    fitted = law(best.x) if best is not None else IdLaw(c, missing, 1.0, 0.0, head)
    fitted = IdLaw(fitted.cardinality, round_sig(missing, 8), round_sig(fitted.s), round_sig(fitted.q),
                   tuple(round_sig(h, 8) for h in fitted.head))
    expected = fitted.expected_distinct(grid)
    last = grid >= n_rows / 10
    report = {"rows": grid.tolist(), "observed_distinct": observed.tolist(),
              "expected_distinct": [round_sig(e, 6) for e in expected],
              "max_rel_error_last_decade": round_sig(float(np.max(
                  np.abs(expected[last] / np.maximum(observed[last], 1) - 1))), 4),
              "distinct": prof["distinct"], "top1_share": round_sig(prof["top1_share"], 6),
              "top10_share": round_sig(prof["top10_share"], 6), "singleton_values": prof["singleton_values"]}
    return fitted, report


def fit_dense(values: np.ndarray, missing: int) -> DenseMarginal:
    """A dense feature's marginal from its log1p column [N] and how many rows were missing.

    Missing values are stored as 0, so the `missing` smallest (zero) values are dropped
    before taking quantiles of the present ones."""
    v = np.sort(np.asarray(values, np.float64))
    present = v[min(int(missing), v.size):]
    m = float(missing) / max(v.size, 1)
    if present.size == 0:
        return DenseMarginal(1.0, (0.0, 1.0), (0.0, 0.0))
    q = np.quantile(present, DENSE_PROBS, method="inverted_cdf")
    return DenseMarginal(round_sig(m, 8), DENSE_PROBS, tuple(round_sig(x, 8) for x in np.maximum.accumulate(q)))


def parse_cardinalities(spec: str) -> tuple[int | str, ...]:
    """`fit`, `observed`, `kaggle` (the published Criteo Kaggle counts), or 26 comma-separated ints."""
    if spec in ("fit", "observed"):
        return (spec,) * NUM_SPARSE
    if spec == "kaggle":
        return KAGGLE_TABLE_ROWS
    try:
        cards = tuple(int(x) for x in spec.split(","))
    except ValueError:
        cards = ()
    if len(cards) != NUM_SPARSE or min(cards) < 1:
        raise UserError(f"--cardinalities: want fit, observed, kaggle or {NUM_SPARSE} positive ints, "
                        f"got {spec!r}")
    return cards


def calibrate(src: str | Path, splits: Sequence[str] | None = None, cardinalities: str = "fit",
              teacher: Sequence[float] = CRITEO_HEAD_TEACHER, name: str = "", log=None) -> World:
    """The World fitted to prepared shards at `src` (all splits in manifest order by default)."""
    data_dir = Path(src)
    if not data_dir.is_dir():
        raise UserError(f"--src {src}: not a directory of prepared data (criteo-prepare --out)")
    m = manifest_io.load(data_dir)
    splits = list(m["splits"]) if not splits else list(splits)
    _check(m, data_dir, splits)
    cards = parse_cardinalities(cardinalities)
    rows = sum(m["splits"][s]["rows"] for s in splits)
    positives = sum(m["splits"][s]["stats"]["positives"] for s in splits)
    laws, reports = [], {}
    for j in range(NUM_SPARSE):
        ids = _columns(data_dir, m, splits, "sparse", j)
        law, rep = fit_id_law(ids, cards[j])
        if law.cardinality < rep["distinct"]:
            raise UserError(f"--cardinalities: C{j + 1} has {rep['distinct']} distinct values in the data, "
                            f"more than the {law.cardinality} given")
        laws.append(law)
        reports[f"C{j + 1}"] = rep
        if log:
            log(f"  C{j + 1}: {rep['distinct']:,} distinct of {law.cardinality:,}; {len(law.head)} measured "
                f"shares, tail s={law.s:.3g} q={law.q:.3g}; curve error <= "
                f"{rep['max_rel_error_last_decade']:.1%} over the last decade of rows")
    dense = []
    for j in range(NUM_DENSE):
        miss = sum(m["splits"][s]["stats"]["dense"][f"I{j + 1}"]["missing"] for s in splits)
        dense.append(fit_dense(_columns(data_dir, m, splits, "dense", j), miss))
    id_e, pair_e, dense_e = (float(x) for x in teacher)
    source = {"data": [{"path": Path(s["path"]).name, "sha256": s["sha256"], "lines": s["lines"]}
                       for s in m["sources"]],
              "splits": splits, "rows": rows, "label_rate": positives / rows,
              "categorical_mode": m["categorical"]["mode"], "cardinalities": cardinalities,
              "fit": reports}
    return World(name=name or data_dir.name, base_ctr=round_sig(positives / rows, 8), features=tuple(laws),
                 dense=tuple(dense), id_effect=id_e, pair_effect=pair_e, dense_effect=dense_e, latent_dim=4,
                 source=source,
                 comment=f"fitted by `dlrm-scaling data calibrate` to {rows:,} prepared rows")


def world_rows(src, stream: int, n: int):
    """The first n examples of a SyntheticSource stream as Criteo rows (`criteo.format.Rows`:
    ids as hex values, id 0 missing; dense as whole counts), plus their true click probabilities [n].
    What `criteo-prepare` reads, so a world's data can go through the real data's pipeline."""
    from dlrm_jax.data.criteo import format as cf
    idx = np.arange(n)
    batch, p = src.examples(stream, idx)
    ids = src.world_ids(stream, idx)
    counts = np.rint(np.expm1(batch.dense.astype(np.float64))).astype(np.int64)
    return cf.Rows(batch.labels.astype(np.uint8), counts, np.zeros_like(counts, bool),
                   ids.astype(np.uint32), ids == 0), p


# --------------------------------------------------------------------------- CLI

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dlrm-scaling data calibrate",
                                description="Fit a synthetic world (id popularity, dense marginals, click "
                                            "rate) to prepared Criteo shards.")
    p.add_argument("--src", required=True, help="a criteo-prepare output directory (DATA_DIR)")
    p.add_argument("--out", required=True, help="the world JSON file to write")
    p.add_argument("--split", action="append", default=[], help="split(s) to read (default: all, in order)")
    p.add_argument("--cardinalities", default="fit",
                   help="values per feature: fit (fitted with the popularity law), observed (the distinct "
                        "values read: for a whole log), kaggle (the published Criteo Kaggle counts), or "
                        "26 comma-separated ints")
    p.add_argument("--teacher", default=",".join(str(x) for x in CRITEO_HEAD_TEACHER),
                   help="ID,PAIR,DENSE effect strengths of the teacher (default: the criteo-like world's)")
    p.add_argument("--name", default="", help="the world's name (default: the data directory's)")
    return p


class _ArgumentError(UserError):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse would print usage first)
        raise _ArgumentError(message)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        p = build_parser()
        p.__class__ = _Parser
        a = p.parse_args(argv)
        try:
            teacher = tuple(float(x) for x in a.teacher.split(","))
        except ValueError:
            teacher = ()
        if len(teacher) != 3 or not all(math.isfinite(x) and x >= 0 for x in teacher):
            raise UserError("--teacher: want ID,PAIR,DENSE (three finite numbers >= 0), "
                            f"got {a.teacher!r}")
        check_writable_file(a.out, "--out")   # before the fit (~110 s on a Criteo head), not after
        world = calibrate(a.src, a.split, a.cardinalities, teacher, a.name, log=lambda s: print(s, flush=True))
        write_atomic(Path(a.out), json.dumps(world.to_json(), indent=2) + "\n")
        print(f"calibrate: {world.source['rows']:,} rows, label rate {world.base_ctr:.4f} -> {a.out}")
        return 0
    except UserError as e:
        print(f"dlrm-scaling data calibrate: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:                   # unwritable --out, disk full, ...
        print(f"dlrm-scaling data calibrate: error: {e}", file=sys.stderr)
        return 2
    except SystemExit as e:                # --help
        return int(e.code or 0)


if __name__ == "__main__":
    sys.exit(main())
