"""The report's compute-optimal section: build it (fits.json entry, plots) and render it.

`write_report` calls `build_section` once and puts its entry under
`fits["compute_optimal"]`; `render_section` and `summary_lines` turn the entry into
markdown and terminal lines. A results table without IsoFLOP runs gets no section.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis import allocation_plots
from analysis.compute_optimal import (
    BUDGET_COLUMN,
    METHOD_LABELS,
    METHODS,
    compute_optimal,
    data_from_results,
    isoflop_runs,
)
from analysis.study import bayes_ne_of
from analysis.validation import Flag, fit_flags

# Table weights are float32; optimizer state (row-wise Adagrad: 4 bytes per row) is not counted.
BYTES_PER_PARAM = 4


def build_section(df: pd.DataFrame, save, *, bootstrap: int, seed: int, level: float, options,
                  budget_column: str = BUDGET_COLUMN) -> dict | None:
    """The fits.json entry (None without IsoFLOP runs). save(fig, stem) -> file name.

    Unusable IsoFLOP runs (too few budgets or sizes) give an entry with `skipped`, not
    an error: the rest of the report stands.
    """
    runs = isoflop_runs(df, budget_column)
    if runs.empty:
        return None
    entry = {"budget_column": budget_column, "n": "params_dense", "d": "train_examples",
             "n_runs": int(len(runs)), "skipped": None, "flags": []}
    try:
        co = compute_optimal(data_from_results(df, budget_column), bootstrap=bootstrap, seed=seed,
                             level=level, options=options)
    except ValueError as e:
        entry["skipped"] = str(e)
        entry["flags"] = [{"code": "compute_optimal_skipped", "message": str(e)}]
        return entry
    emb = pd.to_numeric(runs["params_embedding"], errors="coerce") if "params_embedding" in runs \
        else pd.Series(np.nan, index=runs.index)
    entry.update({
        "k_flops": co.k_flops, "k_spread": co.k_spread, "level": level,
        "budgets": [float(c) for c in co.data.budgets],
        "methods": {m: co.allocations[m].to_dict() for m in METHODS},
        "joint_fit": co.joint_fit.to_dict(),
        "agree": not co.disagreements(),
        # Budgets whose optimum lies at the edge of the sizes tried, per method: there the
        # estimate is a bound, and agreement of the methods says little.
        "at_edge": {m: [p["budget"] for p in co.allocations[m].per_budget if p["at_edge"]]
                    for m in ("envelope", "isoflop")},
        "disagreements": [list(p) for p in co.disagreements()],
        "runs": [{"run": str(r), "budget": float(c), "params_dense": float(n), "train_examples": float(d),
                  "eval_ne": float(y), "params_embedding": float(e) if np.isfinite(e) else None,
                  "table_bytes": float(BYTES_PER_PARAM * e) if np.isfinite(e) else None}
                 for r, c, n, d, y, e in zip(co.data.runs, co.data.budget, co.data.n, co.data.d, co.data.y,
                                             emb.to_numpy(float))],
        "flags": [f.to_dict() for f in co.flags + _more_flags(co, runs)],
        "plots": {"isoflop": save(allocation_plots.isoflop_figure(co), "isoflop"),
                  "allocation": save(allocation_plots.allocation_figure(co), "allocation")},
    })
    return entry


def _more_flags(co, runs: pd.DataFrame) -> list[Flag]:
    """NE-specific checks: the joint fit's own flags (convergence, bounds, residual pattern,
    asymptote below the Bayes NE) and runs that did not learn (NE >= 1 is no better than
    predicting the background CTR: the profile there shows a training failure, not a
    model-size trade-off)."""
    flags = [Flag(f.code, f"joint law: {f.message}")
             for f in fit_flags(co.joint_fit, bayes_ne=bayes_ne_of(runs), asymptote="E")]
    bad = [r for r, y in zip(co.data.runs, co.data.y) if y >= 1]
    if bad:
        flags.append(Flag("ne_above_one", f"{len(bad)} run(s) have NE >= 1, no better than predicting the background "
                          f"CTR ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}): they did not learn, and "
                          "the profiles and the joint law bend around them"))
    return flags


def _est(e: dict, spec: str = ".3f") -> str:
    s = format(e["value"], spec) if isinstance(e["value"], float) else str(e["value"])
    if e.get("lo") is not None:
        s += f" [{e['lo']:{spec}}, {e['hi']:{spec}}]" if isinstance(e["lo"], float) else f" [{e['lo']}, {e['hi']}]"
    return s


def _opt_at(m: dict, c: float) -> tuple[float, float]:
    a, b = m["a"]["value"], m["b"]["value"]
    return m["G"] * c ** a, m["H"] * c ** b


def summary_lines(entry: dict | None) -> list[str]:
    if not entry:
        return []
    if entry["skipped"]:
        return [f"Compute-optimal allocation: skipped ({entry['skipped']})"]
    lines = [f"Compute-optimal allocation ({entry['n_runs']} IsoFLOP runs, {len(entry['budgets'])} budgets; "
             "N_opt ~ C^a, D_opt ~ C^b):"]
    for m in METHODS:
        e = entry["methods"][m]
        lines.append(f"  {m:<9} a {_est(e['a']):<26} b {_est(e['b'])}")
    lines.append("  methods agree (intervals of a overlap)" if entry["agree"] else
                 "  methods DISAGREE: " + "; ".join(f"{a} vs {b}" for a, b in entry["disagreements"]))
    edge = _edge_text(entry)
    if edge:
        lines.append(f"  but {edge}")
    return lines


def _edge_text(entry: dict) -> str:
    parts = [f"{m} at {len(v)} of {len(entry['budgets'])} budgets" for m, v in entry.get("at_edge", {}).items() if v]
    return ("the optimum lies at the edge of the sizes tried (" + ", ".join(parts) + "): there the estimate is a "
            "bound, not a measurement") if parts else ""


def render_section(entry: dict | None) -> list[str]:
    """Markdown lines of the section (empty without IsoFLOP runs)."""
    if not entry:
        return []
    L = ["", "## Compute-optimal allocation (IsoFLOP study)", ""]
    if entry["skipped"]:
        return L + [f"Not estimated: {entry['skipped']}"]
    c_max = entry["budgets"][-1]
    lvl = f"{entry['level']:.0%}"
    L += [f"{entry['n_runs']} runs at {len(entry['budgets'])} training-FLOP budgets "
          f"({', '.join(f'{c:.3g}' for c in entry['budgets'])}). N = dense (FLOP-bearing) parameters, "
          f"D = training examples, C = the run's budget (`{entry['budget_column']}`). "
          f"Laws N_opt = G C^a, D_opt = H C^b; {lvl} bootstrap intervals.", "",
          f"| method | a (N_opt ~ C^a) | b (D_opt ~ C^b) | G | N_opt at {c_max:.3g} | D_opt at {c_max:.3g} | "
          f"N_opt at {10 * c_max:.3g} | D_opt at {10 * c_max:.3g} |",
          "|---|---|---|---|---|---|---|---|"]
    for m in METHODS:
        e = entry["methods"][m]
        n1, d1 = _opt_at(e, c_max)
        n10, d10 = _opt_at(e, 10 * c_max)
        L.append(f"| {METHOD_LABELS[m]} | {_est(e['a'])} | {_est(e['b'])} | {e['G']:.4g} | {n1:.3g} | {d1:.3g} | "
                 f"{n10:.3g} | {d10:.3g} |")
    L += ["", ("**The three methods agree**: their intervals for a overlap." if entry["agree"] else
               "**The methods disagree** beyond their intervals: "
               + "; ".join(f"{a} vs {b}" for a, b in entry["disagreements"]) + ".")
          + (f" But {_edge_text(entry)}." if _edge_text(entry) else ""),
          "",
          f"Joint law: C = k N D with k = C / (N D) = {entry['k_flops']:.4g} FLOPs per example per dense "
          f"parameter (geometric mean over runs; varies {entry['k_spread']:.2f}x across them). Fit: "
          + ", ".join(f"{k} {v:.4g}" for k, v in entry["joint_fit"]["params"].items())
          + f"; RMS log residual {entry['joint_fit']['rms_log_residual']:.3g}.", ""]
    L += ["| budget | envelope: best run N | IsoFLOP minimum N [interval] | joint N_opt | NE at minimum | "
          "table memory of the runs |", "|---|---|---|---|---|---|"]
    env, iso, joint = (entry["methods"][m]["per_budget"] for m in METHODS)
    for k, c in enumerate(entry["budgets"]):
        mem = [r["table_bytes"] for r in entry["runs"] if r["budget"] == c and r["table_bytes"] is not None]
        mem_txt = "-" if not mem else (f"{min(mem) / 2**20:.3g} MiB" if min(mem) == max(mem)
                                       else f"{min(mem) / 2**20:.3g} to {max(mem) / 2**20:.3g} MiB")
        ci = f" [{iso[k]['n_lo']:.3g}, {iso[k]['n_hi']:.3g}]" if "n_lo" in iso[k] else ""
        edge = " (edge)" if iso[k]["at_edge"] else ""
        L.append(f"| {c:.3g} | {env[k]['n_opt']:.3g}{' (edge)' if env[k]['at_edge'] else ''} | "
                 f"{iso[k]['n_opt']:.3g}{ci}{edge} | {joint[k]['n_opt']:.3g} | {iso[k]['ne']:.4g} | {mem_txt} |")
    L += ["", "Embedding tables are a separate resource (memory, not FLOPs): table memory is float32 weights "
          f"({BYTES_PER_PARAM} bytes per parameter); optimizer state comes on top (row-wise Adagrad: 4 bytes "
          "per row). Method: envelope = the best run per budget; IsoFLOP = the minimum of a least-squares parabola "
          "of NE in log N per budget (clipped to the sizes tried); joint = "
          "N_opt = (alpha A / (beta B))^(1/(alpha+beta)) (C/k)^(beta/(alpha+beta)). Intervals: envelope and IsoFLOP "
          "resample runs within each budget and add the lines' residual scatter (inflated by t_{K-2}/z for K "
          "budgets); joint: the law refitted on resampled runs.",
          "", f"![IsoFLOP profiles]({entry['plots']['isoflop']}) ![allocation]({entry['plots']['allocation']})"]
    return L
