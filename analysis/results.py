"""Run results into a DataFrame: `load_results` and the resource-axis table.

Training and analysis meet only through files (docs/DESIGN.md section 1.1). A sweep directory
holds `results.csv` (one row per run, written by the sweep runner) and one run
directory per point (`config.json`, `summary.json` written last, `metrics.jsonl`).
`load_results` accepts:

* a `results.csv` file;
* a sweep directory: its `results.csv`, or if absent rows rebuilt from
  `*/summary.json` (+ `config.json`, flattened to dotted keys like `model.embed_dim`);
* a directory of sweep directories (e.g. DEMO/data, DEMO/compute): concatenated, with
  `sweep` filled from the subdirectory name where the column is missing.

Only finished runs are kept; failed and unfinished ones are left out with one warning
that names them, so a half-finished sweep can be analysed without hiding that it is.

Any of these may be on a bucket (`gs://bucket/sweep`): every read goes through
dlrm_jax.run.storage (JAX-free; local paths are plain pathlib there).
"""

from __future__ import annotations

import io
import json
import warnings

import numpy as np
import pandas as pd

from dlrm_jax.run import storage

# Summary fields that are numbers (docs/DESIGN.md section 4.3, the run directory).
NUMERIC_FIELDS = (
    "eval_ne", "eval_logloss", "eval_auc", "eval_calibration", "eval_examples",
    "train_examples", "params_embedding", "params_dense", "flops_per_example",
    "train_flops", "examples_per_s", "wall_s", "bayes_ne", "seed", "devices",
)

# The resource each scaling scheme varies: the x of its law. Embedding schemes use all
# parameters (embedding rows count: they are what those schemes scale); MLP schemes use
# dense parameters, because with tables of any real size the MLPs are a rounding error
# of the total (the demo's top-MLP sweep spans 1.1x in total but 16x in dense
# parameters).  The other count is reported beside each.
RESOURCE_AXES = {
    "data": "train_examples",
    "embedding_dim": "params_total",
    "embedding_rows": "params_total",
    "top_mlp": "params_dense",
    "bottom_mlp": "params_dense",
    "all": "params_total",
    "compute": "train_flops",
    "isoflop": "train_flops",
    "architecture": "train_flops",    # per interaction: analysis/architectures.py
    "dcn_rank": "params_dense",
    "dcn_layers": "params_dense",
    "wukong_layers": "params_dense",
    "planted_zipf": "train_examples",
    "planted_triple": "train_flops",  # per interaction: analysis/architectures.py
}
# Schemes that are grids of model sizes x example counts: at one resource value several
# allocations compete and only the best is on the scaling curve (the compute-efficient
# frontier, Hoffmann et al. 2022; the iso-FLOP view of sweeps/compute.py). Their law is
# fitted to the lower envelope of NE over the resource, not to every run.
ENVELOPE_SCHEMES = frozenset({"compute", "isoflop", "architecture"})
# A scheme not in the table (a user's own sweep) is fitted against compute, the one
# resource every run spends; override with `axes={"my_sweep": "train_examples"}`.
DEFAULT_AXIS = "train_flops"
# Axes on which schemes are compared with each other.
COMMON_AXES = ("params_total", "params_dense", "train_flops", "train_examples")
AXIS_LABELS = {
    "train_examples": "training examples",
    "params_total": "parameters (embedding + dense)",
    "params_dense": "dense parameters (no embeddings)",
    "train_flops": "training FLOPs",
}


class ResultsWarning(UserWarning):
    """Some runs were left out (failed or unfinished)."""


class AxisError(ValueError):
    """An axis override (`axes={scheme: column}`, analyze's `--axis SCHEME=COLUMN`) that
    names a scheme the results do not have or a column that holds no resource."""

    def __init__(self, scheme: str, column: str, reason: str):
        super().__init__(f"axes {scheme}={column}: {reason}")
        self.scheme, self.column, self.reason = scheme, column, reason


def axis_columns(df: pd.DataFrame) -> list[str]:
    """Columns a law can be fitted against: numeric, with at least one finite positive value."""
    out = []
    for c in df.columns:
        x = pd.to_numeric(df[c], errors="coerce") if df[c].dtype != bool else None
        if x is not None and (np.isfinite(x) & (x > 0)).any():
            out.append(str(c))
    return sorted(out)


def check_axes(df: pd.DataFrame, overrides: dict[str, str] | None) -> None:
    """AxisError for an override whose scheme or column the results do not have.

    Without this a missing column was a KeyError deep in an envelope fit (grid
    schemes) or a scheme quietly skipped, and an unknown scheme was ignored."""
    schemes = sorted(set(df["sweep"].astype(str))) if "sweep" in df.columns else []
    usable = axis_columns(df)
    for scheme, column in (overrides or {}).items():
        if scheme not in schemes:
            raise AxisError(scheme, column, f"the results have no scheme {scheme!r} "
                                            f"(schemes: {', '.join(schemes)})")
        if column not in usable:
            what = "no column" if column not in df.columns else "no positive numbers in column"
            raise AxisError(scheme, column, f"{what} {column!r} in the results; columns that "
                                            f"can be an axis: {', '.join(usable)}")


def resource_axis(scheme: str, overrides: dict[str, str] | None = None) -> str:
    """The column a scheme's law is fitted against; `overrides` wins over the table."""
    if overrides and scheme in overrides:
        return overrides[scheme]
    return RESOURCE_AXES.get(scheme, DEFAULT_AXIS)


def load_results(path) -> pd.DataFrame:
    """One row per finished run; see the module docstring for accepted layouts.

    Adds `params_total` = params_embedding + params_dense. Raises FileNotFoundError for
    a missing path and ValueError when nothing usable is found.
    """
    p = storage.path(path)  # a bad bucket: UserError (a ValueError), one line
    if not storage.exists(p):
        raise FileNotFoundError(f"load_results: {p} does not exist")
    left_out: list[str] = []
    if storage.is_file(p):
        df = _read_csv(p, default_sweep=p.parent.name or "results")
    elif _is_sweep_dir(p):
        df = _read_sweep_dir(p, left_out)
    else:
        subs = [d for d in _children(p) if storage.is_dir(d) and _is_sweep_dir(d)]
        if not subs:
            raise ValueError(f"load_results: {p} has no results.csv, run directories or sweep directories")
        df = pd.concat([_read_sweep_dir(d, left_out) for d in subs], ignore_index=True)
    df = _keep_finished(df, left_out)
    if left_out:
        warnings.warn(f"load_results: left out {len(left_out)} run(s): " + "; ".join(left_out),
                      ResultsWarning, stacklevel=2)
    if df.empty:
        raise ValueError(f"load_results: no finished runs in {p}")
    df = df.reset_index(drop=True)
    df.attrs["left_out"] = left_out      # for the report's "runs left out" line
    return df


def finished_runs(df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The same filtering for a DataFrame built elsewhere: (finished runs, runs left out).

    Needs `sweep` and `eval_ne`; `run` is filled with row numbers when missing.
    """
    for col in ("sweep", "eval_ne"):
        if col not in df.columns:
            raise ValueError(f"results have no {col!r} column")
    df = df.copy()
    if "run" not in df.columns:
        df["run"] = [f"row{i}" for i in range(len(df))]
    left_out: list[str] = []
    df = _keep_finished(df, left_out)
    return df.reset_index(drop=True), left_out


def _children(d):
    """The entries of directory `d`, sorted by name (pathlib or epath paths)."""
    return [d / name for name in storage.listdir(d)]


def _is_run_dir(d) -> bool:
    return any(storage.exists(d / f) for f in ("summary.json", "config.json", "metrics.jsonl"))


def _is_sweep_dir(d) -> bool:
    return storage.is_file(d / "results.csv") or any(storage.is_dir(c) and _is_run_dir(c) for c in _children(d))


def _read_csv(path, default_sweep: str) -> pd.DataFrame:
    try:
        df = pd.read_csv(io.BytesIO(storage.read_bytes(path)) if storage.is_remote(path) else path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ValueError(f"load_results: cannot read {path} as CSV ({e})") from None
    if "sweep" not in df.columns:
        df["sweep"] = default_sweep
    if "run" not in df.columns:
        df["run"] = [f"row{i}" for i in range(len(df))]
    return df


def _read_sweep_dir(d, left_out: list[str]) -> pd.DataFrame:
    """results.csv if present, else rows rebuilt from run directories."""
    run_dirs = [c for c in _children(d) if storage.is_dir(c) and _is_run_dir(c)]
    unfinished = [c.name for c in run_dirs if not storage.exists(c / "summary.json")]
    if storage.is_file(d / "results.csv"):
        df = _read_csv(d / "results.csv", default_sweep=d.name)
        listed = set(df["run"].astype(str))
        # Runs still in progress are not in results.csv; name them so nobody is surprised.
        left_out += [f"{d.name}/{r} (unfinished: no summary.json)" for r in unfinished if r not in listed]
        return df
    left_out += [f"{d.name}/{r} (unfinished: no summary.json)" for r in unfinished]
    rows = [_row_from_run_dir(c, d.name) for c in run_dirs if storage.exists(c / "summary.json")]
    return pd.DataFrame(rows)


def _row_from_run_dir(run, sweep: str) -> dict:
    try:
        summary = json.loads(storage.read_text(run / "summary.json"))
        config = json.loads(storage.read_text(run / "config.json")) if storage.exists(run / "config.json") else {}
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"load_results: {run} has an unreadable JSON file ({e})") from None
    row = {"run": run.name, "sweep": sweep}
    row.update(_flatten(config))
    row.update({k: v for k, v in summary.items() if not isinstance(v, (dict, list))})
    return row


def _flatten(d: dict, prefix: str = "") -> dict:
    """{"model": {"top_mlp": [512, 256]}} -> {"model.top_mlp": "512,256"} (CSV form)."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        elif isinstance(v, (list, tuple)):
            out[key] = ",".join(str(x) for x in v)
        else:
            out[key] = v
    return out


def _keep_finished(df: pd.DataFrame, left_out: list[str]) -> pd.DataFrame:
    for col in NUMERIC_FIELDS:
        if col in df.columns:
            df[col] = pd.to_numeric(df[col], errors="coerce")
    if "eval_ne" not in df.columns:
        df["eval_ne"] = np.nan
    status = df["status"].astype(str).str.strip().str.lower() if "status" in df.columns \
        else pd.Series("done", index=df.index)
    done = status.eq("done") & np.isfinite(df["eval_ne"])
    for _, r in df[~done].iterrows():
        name = f"{r['sweep']}/{r['run']}"
        st = str(r.get("status", "")).lower()
        if st == "failed":
            err = r.get("error")
            left_out.append(f"{name} (failed: {err})" if isinstance(err, str) and err else f"{name} (failed)")
        elif st == "done":
            left_out.append(f"{name} (done but no eval_ne)")
        else:
            left_out.append(f"{name} (unfinished: status {r.get('status')})")
    df = df[done].copy()
    if {"params_embedding", "params_dense"} <= set(df.columns):
        df["params_total"] = df["params_embedding"] + df["params_dense"]
    return df
