"""The analysis report: builds fits.json (machine-readable), then report.md and plots.

    fits = write_report("runs/demo", "runs/demo/report")   # -> the fits.json content
    print(summary_text(fits))                               # (analysis/render.py)

This module fits and assembles; `render.py` turns the fits into text.

The report states every choice needed to redo the analysis (form, loss, delta,
optimiser, starts, bootstrap, holdout, which runs, how parameters and FLOPs were
counted) next to the numbers, and the flags a careful reader should see first.
Every file is written to a temporary name and renamed into place.  A report for a
bucket (`out_dir` gs://...) is made in a local temporary directory and uploaded
file by file, report.md last (a single-object write is atomic on GCS).
"""

from __future__ import annotations

import json
import os
import re
import sys
from datetime import datetime, timezone
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import scipy

from analysis import allocation_report, architectures, plots
from analysis.fitting import FitOptions
from analysis.render import render_markdown
from analysis.results import (
    AXIS_LABELS,
    COMMON_AXES,
    ENVELOPE_SCHEMES,
    RESOURCE_AXES,
    check_axes,
    finished_runs,
    load_results,
    resource_axis,
)
from analysis.study import (
    compare_schemes,
    compute_frontier,
    fit_schemes,
    gain_per_doubling,
    json_number,
    multiplier_for_improvement,
    points,
    resource_for_target,
)
from analysis.validation import (
    GRAD_REL_TOL,
    HOLDOUT_MAX_REL_ERROR,
    HOLDOUT_MIN_REL_ERROR,
    HOLDOUT_RMS_FACTOR,
    MIN_SHARE_REACHED,
    MIN_SPAN,
    PATTERN_P,
)
from dlrm_jax.run import storage
from dlrm_jax.run.files import write_atomic

FORMAT = "dlrm-scaling-fits/1"
LAW = "NE = alpha * x**(-beta) + gamma"


def write_report(path_or_df, out_dir, *, bootstrap: int = 200, seed: int = 0, holdout: int = 1,
                 huber_delta: float = 1e-3, level: float = 0.95, axes: dict[str, str] | None = None,
                 improvement: float = 0.01, targets: list[float] | None = None) -> dict:
    """Fit every scheme, compare, find the frontier, plot, write report.md and fits.json.

    path_or_df: a sweep dir, a dir of sweep dirs, a results.csv, or a DataFrame like
    `load_results` returns. axes: scheme -> resource column overrides. improvement:
    relative NE improvement for the resource-multiplier question (0.01 = 1%). targets:
    NE values to invert (default: 1% below the best NE measured).
    Returns the fits.json content. Raises ValueError when no scheme can be fitted.
    """
    if storage.is_remote(out_dir):
        return _write_report_to_bucket(path_or_df, out_dir, dict(
            bootstrap=bootstrap, seed=seed, holdout=holdout, huber_delta=huber_delta, level=level,
            axes=axes, improvement=improvement, targets=targets))
    df, source, left_out = _load(path_or_df)
    check_axes(df, axes)            # before any fit: a wrong --axis is one line, not a KeyError
    if isinstance(bootstrap, bool) or int(bootstrap) != bootstrap or bootstrap < 0:
        raise ValueError(f"bootstrap must be a count >= 0, got {bootstrap!r}")
    options = FitOptions(huber_delta=huber_delta)
    fit_kw = dict(bootstrap=bootstrap, seed=seed, level=level, options=options)

    schemes = fit_schemes(df, axes, holdout=holdout, **fit_kw)
    if not any(s.fit is not None for s in schemes.values()):
        why = "; ".join(f"{s.scheme}: {s.skipped}" for s in schemes.values())
        raise ValueError(f"no scheme could be fitted ({why})")
    comparison = compare_schemes(df, reuse=schemes, **fit_kw)
    frontier = compute_frontier(df, **fit_kw) if "train_flops" in df.columns else None
    if targets is None:
        targets = [round(float(df["eval_ne"].min()) * (1 - improvement), 6)]

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fits = {
        "format": FORMAT,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": source,
        "law": LAW,
        "method": _method(options, bootstrap, seed, level, holdout, axes, improvement),
        "counting": _counting(),
        "runs": {"used": int(len(df)), "left_out": left_out},
        "schemes": {},
        "comparison": [],
        "most_ne_per_flop": [],
        "frontier": None,
        "plots": {},
        "flags": [],
    }
    for name, sf in schemes.items():
        fits["schemes"][name] = _scheme_entry(sf, improvement, targets)
        fits["flags"] += [{"scope": name, **fl.to_dict()} for fl in sf.flags]
        if sf.fit is not None:
            label = AXIS_LABELS.get(sf.axis, sf.axis)
            others = None
            if sf.envelope:      # show the grid runs that the envelope left out, greyed
                rest = points(df[df["sweep"].astype(str) == name], sf.axis)
                rest = rest[~rest["run"].astype(str).isin(sf.runs)]
                others = (rest[sf.axis].to_numpy(float), rest["eval_ne"].to_numpy(float))
            fits["plots"][f"law_{name}"] = _save(plots.law_figure(
                sf.fit, xlabel=label, title=f"{name}: NE vs {label}", bayes_ne=sf.bayes_ne, others=others),
                out, f"law_{name}")
            fits["plots"][f"residuals_{name}"] = _save(plots.residuals_figure(
                sf.fit, xlabel=label, title=f"{name}: residuals"), out, f"residuals_{name}")
    fits["comparison"] = _json_rows(comparison.table)
    flops_rows = [r for r in fits["comparison"] if r["axis"] == "train_flops"]
    fits["most_ne_per_flop"] = sorted(
        ({"scheme": r["scheme"], "gain_per_doubling": r["gain_per_doubling"], "lo": r["gain_lo"],
          "hi": r["gain_hi"], "at_flops": r["x_max"], "flags": r["flags"]} for r in flops_rows),
        key=lambda r: -r["gain_per_doubling"])
    if comparison.fits:
        fits["plots"]["schemes"] = _save(plots.schemes_figure(comparison.fits, list(COMMON_AXES)), out, "schemes")
    if frontier is not None:
        fits["frontier"] = _frontier_entry(frontier, targets)
        fits["flags"] += [{"scope": "frontier", **fl.to_dict()} for fl in frontier.flags]
        if len(frontier.points):
            fits["plots"]["frontier"] = _save(plots.frontier_figure(df, frontier), out, "frontier")

    fits["compute_optimal"] = allocation_report.build_section(
        df, lambda fig, stem: _save(fig, out, stem), bootstrap=bootstrap, seed=seed, level=level, options=options)
    fits["flags"] += [{"scope": "compute_optimal", **f} for f in (fits["compute_optimal"] or {}).get("flags", [])]

    if architectures.has_architectures(df):   # runs of several interactions: compare their frontiers
        try:
            cmp = architectures.compare_architectures(df, **fit_kw)
            fits["architectures"] = cmp.to_dict()
            fits["plots"]["architectures"] = _save(architectures.figure(cmp), out, "architectures")
        except ValueError as e:
            fits["architectures"] = {"skipped": str(e)}

    fits = _clean(fits)
    write_atomic(out / "fits.json", json.dumps(fits, indent=2, allow_nan=False) + "\n")
    write_atomic(out / "report.md", render_markdown(fits))
    return fits


def _write_report_to_bucket(path_or_df, out_dir, options: dict) -> dict:
    """write_report into gs://: matplotlib and the atomic writes need a local directory."""
    import tempfile
    storage.makedirs(out_dir)  # the bucket is checked before the fits
    with tempfile.TemporaryDirectory(prefix="dlrm-report.") as tmp:
        fits = write_report(path_or_df, tmp, **options)
        for name in sorted(os.listdir(tmp), key=lambda n: (n == "report.md", n)):  # report.md last
            with open(os.path.join(tmp, name), "rb") as f:
                storage.write_atomic(f"{os.fspath(out_dir).rstrip('/')}/{name}", f.read())
    return fits


# -- inputs ------------------------------------------------------------------------

def _load(path_or_df):
    """(df, source description, runs left out); keeps load_results' warning visible."""
    if isinstance(path_or_df, pd.DataFrame):
        df, left = finished_runs(path_or_df)
        if df.empty:
            raise ValueError("write_report: no finished runs in the DataFrame")
        return df, "DataFrame", left
    df = load_results(path_or_df)          # warns about the runs it leaves out
    source = os.fspath(path_or_df) if storage.is_remote(path_or_df) else str(Path(path_or_df))
    return df, source, list(df.attrs.get("left_out", []))


def _method(options, bootstrap, seed, level, holdout, axes, improvement) -> dict:
    """Every fitting choice, in words and numbers."""
    grid = options.exponent_grid(1)
    return {
        "form": LAW + " per scheme, x = the scheme's resource; alpha, gamma >= 0",
        "loss": ("Huber loss on log residuals log(prediction) - log(NE), summed over runs "
                 "(not averaged)"),
        "huber_delta": options.huber_delta,
        "parametrisation": ("log alpha, beta, log gamma; x and NE divided by their geometric means "
                            "during the fit, results converted back"),
        "optimizer": {"name": "scipy.optimize.minimize L-BFGS-B, exact gradients",
                      "ftol": options.ftol, "gtol": options.gtol, "maxiter": options.maxiter,
                      "objective_scaling": "divided by huber_delta**2 inside the optimiser",
                      "bounds": {"exponent": list(options.exponent_bounds),
                                 "log_coefficient_normalised": list(options.log_coef_bounds)}},
        "initialisation": (f"variable projection: {len(grid)} values of beta, geometric from {grid[0]:g} to "
                           f"{grid[-1]:g}; for each, alpha and gamma "
                           "by non-negative least squares on relative errors (scipy.optimize.nnls); "
                           f"the best {options.n_polish} starts polished (grid local minima first)"),
        "bootstrap_refit": (f"grid recomputed on each resample plus the full-data optimum as a start; the best "
                            f"{options.n_polish_bootstrap} by starting objective polished"),
        "bootstrap": {"samples": bootstrap, "seed": seed, "level": level,
                      "method": "resample runs with replacement, refit, percentile intervals"},
        "holdout": {"k": holdout, "rule": "refit without the k largest resource values; relative error "
                    "and whether each held-out run lies in the bootstrap interval of the extrapolated curve"},
        "flags": {"residual_pattern_p": PATTERN_P, "holdout_rms_factor": HOLDOUT_RMS_FACTOR,
                  "holdout_min_rel_error": HOLDOUT_MIN_REL_ERROR, "holdout_max_rel_error": HOLDOUT_MAX_REL_ERROR,
                  "min_share_reached": MIN_SHARE_REACHED, "grad_rel_tol": GRAD_REL_TOL, "min_span": MIN_SPAN,
                  "residual_pattern_test": "permutation test of the Durbin-Watson ratio of residuals ordered by x"},
        "resource_axes": {s: resource_axis(s, axes) for s in RESOURCE_AXES} | dict(axes or {}),
        "envelope_schemes": {"schemes": sorted(ENVELOPE_SCHEMES),
                             "rule": "grid sweeps (model size x examples) are fitted to their lower envelope of NE "
                                     "over the resource: only runs better than every run with less of it"},
        "improvement": {"relative": improvement,
                        "at": "largest measured resource of the scheme"},
        "software": {"python": sys.version.split()[0], "numpy": np.__version__, "scipy": scipy.__version__,
                     "pandas": pd.__version__, "matplotlib": matplotlib.__version__},
    }


def _counting() -> dict:
    """How the axes were counted: the conventions of dlrm_jax/model/accounting.py, whose numbers
    each run records in summary.json (the analysis takes them as recorded)."""
    return {
        "params_total": "params_embedding + params_dense",
        "params_embedding": "sum over tables of rows x embedding dim (optimizer state not counted)",
        "params_dense": "weights + biases of the bottom and top MLPs and of the interaction (dcn, wukong)",
        "flops_per_example": ("training FLOPs per example = 3 x forward (backward ~ 2 x forward, as Kaplan et al. "
                              "2020 and Ardalani et al. 2022); forward = MLP matmuls (2 x fan_in x fan_out per "
                              "layer) + the dot interaction (2 x (F+1)^2 x D) or the dcn / wukong interaction's "
                              "matmuls; a multiply-add counts 2; "
                              "embedding lookups are memory traffic, not FLOPs"),
        "train_flops": "flops_per_example x train_examples",
        "train_examples": "examples seen in training (one pass unless the run's config says otherwise)",
        "ne": "eval_ne: mean eval log loss / entropy of the eval set's background CTR (He et al. 2014)",
    }


# -- entries -----------------------------------------------------------------------

def _scheme_entry(sf, improvement: float, targets: list[float]) -> dict:
    e = {"axis": sf.axis, "axis_label": AXIS_LABELS.get(sf.axis, sf.axis), "n_runs": len(sf.runs),
         "runs": sf.runs, "envelope": sf.envelope, "n_scheme_runs": sf.n_scheme_runs,
         "bayes_ne": sf.bayes_ne, "skipped": sf.skipped,
         "holdout_skipped": sf.holdout_skipped, "flags": [f.to_dict() for f in sf.flags]}
    f = sf.fit
    if f is None:
        return e
    e["x_range"] = [float(f.data["x"].min()), float(f.data["x"].max())]
    e["fit"] = f.to_dict()
    e["gain_per_doubling"] = gain_per_doubling(f).to_dict()
    e["multiplier_for_improvement"] = {"improvement": improvement, "relative": True,
                                       **multiplier_for_improvement(f, improvement).to_dict()}
    e["targets"] = [resource_for_target(f, t, resource=e["axis_label"]).to_dict() for t in targets]
    return e


def _frontier_entry(frontier, targets: list[float]) -> dict:
    e = {"axis": "train_flops", "points": [
        {"run": str(r.get("run")), "sweep": str(r.get("sweep")), "train_flops": float(r["train_flops"]),
         "eval_ne": float(r["eval_ne"])} for _, r in frontier.points.iterrows()],
        "skipped": frontier.skipped, "flags": [f.to_dict() for f in frontier.flags]}
    if frontier.fit is not None:
        e["fit"] = frontier.fit.to_dict()
        e["gain_per_doubling"] = gain_per_doubling(frontier.fit).to_dict()
        e["targets"] = [resource_for_target(frontier.fit, t, resource="training FLOPs").to_dict()
                        for t in targets]
    return e


def _json_rows(table: pd.DataFrame) -> list[dict]:
    return [{k: (None if v is None or (isinstance(v, float) and np.isnan(v)) else v) for k, v in row.items()}
            for row in table.to_dict(orient="records")]


def _clean(o):
    """Plain JSON types throughout; JSON has no inf or NaN, so they become "inf" / null."""
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple, np.ndarray)):
        return [_clean(v) for v in o]
    if isinstance(o, (bool, np.bool_)):
        return bool(o)
    if isinstance(o, (int, np.integer)):
        return int(o)
    if isinstance(o, (float, np.floating)):
        return json_number(o)
    return o


# -- files -------------------------------------------------------------------------

def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _save(fig, out: Path, stem: str) -> str:
    name = _safe(stem) + ".png"
    plots.save(fig, out / name)
    return name
