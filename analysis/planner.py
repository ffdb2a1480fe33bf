"""Planning from a study's joint law: the model and data for a FLOP budget or a target NE.

    dlrm-scaling plan STUDY --flops C [--memory BYTES | --topology NAME]
    dlrm-scaling plan STUDY --target-ne X [--memory BYTES | --topology NAME]

STUDY is what `analyze` reads (a sweep directory, a directory of sweeps, a results.csv).
The runs that vary both model size and data are used: the IsoFLOP runs (a positive
`train.flop_budget`) when there are any, else the `compute` grid sweep's runs. On them:

* the joint law NE = E + A / N**alpha + B / D**beta (N dense parameters, D examples),
  refitted with a bootstrap over runs for intervals;
* the study's scaling path: how each varied model setting (embedding dimension, MLP
  widths) grows with N, as log-log lines through the study's distinct models, and the
  training FLOPs per example as a part proportional to N plus a fixed part.

`--flops C`: the N that minimises the law at D = C / flops_per_example(N) (a 1-D search
along the path, up to 10x beyond the sizes measured, for the point estimate and every
bootstrap refit; an optimum at the end of that range is reported as a bound), the NE there, and
the config as `--set` lines. `--target-ne X`: the least C whose best NE reaches X, or
"unreachable" when X is at or below the asymptote E (or, on synthetic data, the
Bayes-optimal NE of the evaluation set, which no model beats); a target the study's
smallest budget already reaches is refused too (below the measured budgets the law is no
estimate). A budget more than 100x outside the measured FLOPs gets a warning.
`--memory` / `--topology` bound the embedding tables: when the study's tables (float32
rows x D plus row-wise Adagrad's 4 bytes per row) do not fit, a per-table row cap
`model.table_rows` is proposed, with a warning that the law was fitted at the study's
table sizes. Topologies use the analytic HBM per chip of `dlrm_jax.compile.topologies` (the
slice names `dlrm-scaling compile --topology` takes, which checks by compiling).

Bad input (missing study, nothing to fit, an unreachable target) raises `PlanError`
(a ValueError): one line, exit 2 at the CLI (`analysis.plan_cli`).
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.bootstrap import percentile_interval
from analysis.capacity import PlanError, parse_bytes, topology_memory  # noqa: F401 (part of the planner's API)
from analysis.compute_optimal import BUDGET_COLUMN, isoflop_runs
from analysis.laws import AdditivePowerLawFit, fit_additive_power_law
from analysis.results import ResultsWarning, load_results
from dlrm_jax.run import storage

EXTRAPOLATION_WARN = 100.0      # warn beyond this factor outside the measured FLOPs
NUM_TABLES = 26                 # Criteo's categorical features (dlrm_jax.data.base.NUM_SPARSE)
BYTES_PER_FLOAT = 4
# The 1-D search spans the study's model sizes and this factor beyond them on each side:
# further out the path's settings and FLOPs per example are guesses, not interpolations.
SEARCH_FACTOR = 10.0


@dataclass(frozen=True)
class Path1D:
    """The study's scaling path: log-log lines of each varied setting against N."""
    keys: tuple[str, ...]                      # varied model keys, e.g. model.embed_dim
    shapes: tuple[int, ...]                    # 0: a scalar setting; m: a list of m widths
    slopes: np.ndarray                         # (P,) one per scalar component
    intercepts: np.ndarray
    fpe_per_param: float                       # flops_per_example = fpe_fixed + fpe_per_param * N
    fpe_fixed: float
    batch_size: int

    def flops_per_example(self, n):
        return self.fpe_fixed + self.fpe_per_param * np.asarray(n, float)

    def settings(self, n: float) -> dict[str, object]:
        vals = np.exp(self.intercepts + self.slopes * np.log(n))
        out, i = {}, 0
        for key, m in zip(self.keys, self.shapes):
            if m == 0:
                out[key] = max(1, int(round(vals[i])))
                i += 1
            else:
                out[key] = ",".join(str(max(1, int(round(v)))) for v in vals[i:i + m])
                i += m
        return out


@dataclass
class Study:
    source: str
    runs: pd.DataFrame
    which: str                                 # "isoflop" or "compute"
    fit: AdditivePowerLawFit
    path: Path1D
    flops_range: tuple[float, float]
    reference_run: str
    table_rows: float | None                   # total rows of the study's tables
    embed_dim_fixed: float | None              # D when the path does not vary it
    bayes_ne: float | None = None              # Bayes-optimal NE of the eval data (synthetic)
    # (NE, run, training FLOPs): the best NE measured at the study's smallest budget
    cheapest: tuple[float, str, float] | None = None


@dataclass
class Plan:
    question: str
    flops: tuple[float, float | None, float | None]       # value, lo, hi
    n_dense: tuple[float, float | None, float | None]
    examples: tuple[float, float | None, float | None]
    ne: tuple[float, float | None, float | None]
    sets: dict[str, object]
    table_bytes: float | None
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """The answer and the config; `warnings` are separate (the CLI prints them to stderr)."""
        def est(t, spec=".3g"):
            v, lo, hi = t
            return f"{v:{spec}}" + ("" if lo is None else f" [{lo:{spec}}, {hi:{spec}}]")
        out = []
        if self.question == "target":
            out.append(f"least training FLOPs to reach NE {self.ne[0]:.4g}: {est(self.flops)}")
        else:
            out.append(f"best predicted NE at {self.flops[0]:.3g} training FLOPs: {est(self.ne, '.4g')}")
        out.append(f"  dense parameters N {est(self.n_dense)}, training examples {est(self.examples)}")
        if self.table_bytes is not None:
            out.append(f"  embedding tables: {self.table_bytes / 2**30:.3g} GiB (float32 rows x D + row-wise "
                       "Adagrad state)")
        out += [f"  note: {n}" for n in self.notes]
        out.append("config (paste into `dlrm-scaling train`, on top of the study's other settings):")
        out += [f"  --set {k}={v}" for k, v in self.sets.items()]
        return out


# -- the study -------------------------------------------------------------------------

def _varied_model_keys(runs: pd.DataFrame) -> list[str]:
    return [c for c in runs.columns if c.startswith("model.") and runs[c].astype(str).nunique() > 1]


def _components(value) -> list[float]:
    return [float(x) for x in str(value).split(",")]


def _path(runs: pd.DataFrame) -> Path1D:
    models = runs.drop_duplicates("params_dense").sort_values("params_dense")
    if len(models) < 2:
        raise PlanError("the study's runs have one model size; the planner needs a scaling path")
    logn = np.log(models["params_dense"].to_numpy(float))
    keys = _varied_model_keys(runs)
    shapes, cols = [], []
    for k in keys:
        comps = [_components(v) for v in models[k]]
        m = len(comps[0])
        if any(len(c) != m for c in comps):
            raise PlanError(f"{k} changes its number of layers across the study's runs; the planner "
                            "follows paths that scale widths, not depth")
        shapes.append(0 if m == 1 and "," not in str(models[k].iloc[0]) and not k.endswith("_mlp") else m)
        cols += [np.log(np.array([c[j] for c in comps])) for j in range(m)]
    slopes, icpts = [], []
    for c in cols:
        s, t = np.polyfit(logn, c, 1)
        slopes.append(s)
        icpts.append(t)
    fpe = runs.drop_duplicates("params_dense").sort_values("params_dense")
    if "flops_per_example" in fpe and np.isfinite(pd.to_numeric(fpe["flops_per_example"], errors="coerce")).all():
        f = pd.to_numeric(fpe["flops_per_example"]).to_numpy(float)
    else:
        f = (pd.to_numeric(fpe["train_flops"]) / pd.to_numeric(fpe["train_examples"])).to_numpy(float)
    # FLOPs per example = a part that grows with N (the MLP matmuls) plus one that does
    # not (the interaction, the layers a path leaves alone): a line in N, fitted on
    # relative errors; through the origin if the free intercept came out negative.
    n = np.exp(logn)
    fs, ft = np.polyfit(n, f, 1, w=1 / f)
    if ft < 0:
        fs, ft = float(np.sum(f * n / f ** 2) / np.sum(n * n / f ** 2)), 0.0
    bs = pd.to_numeric(runs.get("train.batch_size", pd.Series(dtype=float)), errors="coerce").dropna()
    batch = int(bs.iloc[0]) if len(bs) else int(np.gcd.reduce(runs["train_examples"].to_numpy(np.int64)))
    return Path1D(tuple(keys), tuple(shapes), np.array(slopes), np.array(icpts), float(fs), float(ft), batch)


def load_study(path, *, bootstrap: int = 200, seed: int = 0, level: float = 0.95) -> Study:
    try:
        p = storage.path(path)  # a gs:// study: a bad bucket is one line
    except ValueError as e:
        raise PlanError(str(e)) from None
    if not storage.exists(p):
        raise PlanError(f"study {p} does not exist (give a sweep directory, a directory of sweeps or a "
                        "results.csv)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResultsWarning)     # unfinished runs are simply not used
            df = load_results(p)
    except (ValueError, FileNotFoundError) as e:
        raise PlanError(str(e)) from None
    runs, which = isoflop_runs(df), "isoflop"
    if runs.empty:
        runs, which = df[df["sweep"].astype(str) == "compute"], "compute"
    if runs.empty:
        raise PlanError(f"{p}: no runs vary both model size and data (no IsoFLOP runs with {BUDGET_COLUMN} > 0, "
                        "no `compute` sweep); run `dlrm-scaling sweep isoflop` first")
    for col in ("params_dense", "train_examples", "eval_ne", "train_flops"):
        if col not in runs.columns:
            raise PlanError(f"{p}: the study's runs have no {col!r} column")
    try:
        fit = fit_additive_power_law(runs["params_dense"], runs["train_examples"], runs["eval_ne"],
                                     bootstrap=bootstrap, seed=seed, level=level)
    except ValueError as e:
        raise PlanError(f"{p}: cannot fit the joint law to the {which} runs: {e}") from None
    flops = pd.to_numeric(runs["train_flops"], errors="coerce").to_numpy(float)
    ref = runs.sort_values("params_dense").iloc[len(runs) // 2]
    path = _path(runs)
    # The embedding dimension of the reference run: a results column when the sweep varied
    # it, else from the run's own config.json (results.csv holds only the varied values).
    # In a directory of sweeps the column comes from the sweep that varied it (embedding_dim)
    # and is empty for the runs of the others: NaN there, not a dimension.
    dim = pd.to_numeric(pd.Series([ref.get("model.embed_dim")]), errors="coerce").iloc[0]
    dim = float(dim) if np.isfinite(dim) and dim > 0 else _config_embed_dim(p, ref)
    rows = float(ref["params_embedding"]) / dim if dim and "params_embedding" in runs else None
    dim_fixed = dim if "model.embed_dim" not in path.keys else None
    bayes = pd.to_numeric(runs["bayes_ne"], errors="coerce").dropna() if "bayes_ne" in runs else pd.Series([])
    return Study(str(p), runs, which, fit, path, (float(np.nanmin(flops)), float(np.nanmax(flops))),
                 str(ref["run"]), rows, dim_fixed, float(bayes.median()) if len(bayes) else None,
                 _cheapest(runs, which))


def _cheapest(runs: pd.DataFrame, which: str) -> tuple[float, str, float] | None:
    """(NE, run, FLOPs) of the best run at the smallest budget: the IsoFLOP runs of the least
    `train.flop_budget`, else the runs of the least training FLOPs."""
    if which == "isoflop":
        budget = pd.to_numeric(runs[BUDGET_COLUMN], errors="coerce")
        group = runs[budget == budget.min()]
    else:
        flops = pd.to_numeric(runs["train_flops"], errors="coerce")
        group = runs[flops == flops.min()]
    ne = pd.to_numeric(group["eval_ne"], errors="coerce")
    if not np.isfinite(ne).any():
        return None
    best = group.loc[ne.idxmin()]
    return float(ne.min()), str(best["run"]), float(best["train_flops"])


def _config_embed_dim(study, ref) -> float | None:
    base = study.parent if storage.is_file(study) else study
    for run_dir in (base / str(ref["run"]), base / str(ref.get("sweep", "")) / str(ref["run"])):
        try:
            return float(json.loads(storage.read_text(run_dir / "config.json"))["model"]["embed_dim"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None


# -- the search ------------------------------------------------------------------------

def _grid(study: Study) -> np.ndarray:
    n = study.runs["params_dense"].to_numpy(float)
    return np.geomspace(n.min() / SEARCH_FACTOR, n.max() * SEARCH_FACTOR, 401)   # ~1% steps in N


def _best(study: Study, theta_fn, c: np.ndarray):
    """For each budget c (C,), the N on the grid minimising the law, per parameter set.

    theta_fn(n, d) -> NE with shape (S, len(n)); returns (ne (S, C), n (S, C))."""
    ng = _grid(study)
    fpe = study.path.flops_per_example(ng)
    ne_out, n_out = [], []
    for cc in np.atleast_1d(c):
        d = cc / fpe
        ne = theta_fn(ng, d)                                   # (S, G)
        i = np.argmin(ne, axis=1)
        ne_out.append(ne[np.arange(len(i)), i])
        n_out.append(ng[i])
    return np.stack(ne_out, 1), np.stack(n_out, 1)


def _law_point(fit):
    return lambda n, d: np.asarray(fit.predict(n, d))[None, :]


def _law_samples(fit):
    return lambda n, d: fit.predict_samples(n, d)


def _interval(samples: np.ndarray, level: float):
    lo, hi = percentile_interval(samples, level)
    return float(lo), float(hi)


def _extrapolation(study: Study, c: float) -> str | None:
    lo, hi = study.flops_range
    factor = max(c / hi, lo / c)
    if factor > EXTRAPOLATION_WARN:
        where = "above the largest" if c > hi else "below the smallest"
        return (f"{c:.3g} FLOPs is {factor:.3g}x {where} budget measured ({lo:.3g} to {hi:.3g}); "
                f"beyond {EXTRAPOLATION_WARN:g}x the law is an extrapolation, not a measurement")
    return None


def plan_for_flops(study: Study, flops: float, memory: float | None = None) -> Plan:
    if not (math.isfinite(flops) and flops > 0):
        raise PlanError(f"--flops must be a positive number, got {flops}")
    fit = study.fit
    ne, n = _best(study, _law_point(fit), np.array([flops]))
    ne0, n0 = float(ne[0, 0]), float(n[0, 0])
    plan = Plan("flops", (flops, None, None), (n0, None, None), (0.0, None, None), (ne0, None, None), {}, None)
    if fit.bootstrap is not None:
        ne_s, n_s = _best(study, _law_samples(fit), np.array([flops]))
        plan.ne = (ne0, *_interval(ne_s[:, 0], fit.level))
        plan.n_dense = (n0, *_interval(n_s[:, 0], fit.level))
        d_s = flops / study.path.flops_per_example(n_s[:, 0])
        plan.examples = (0.0, *_interval(d_s, fit.level))
    if study.bayes_ne is not None and ne0 < study.bayes_ne:
        plan.warnings.append(f"the predicted NE {ne0:.4g} is below the Bayes-optimal NE {study.bayes_ne:.4g} of the "
                             "evaluation data, which no model can beat: the law overshoots at this budget")
    _finish(study, plan, n0, flops, memory)
    return plan


def plan_for_target(study: Study, target: float, memory: float | None = None) -> Plan:
    if not (math.isfinite(target) and target > 0):
        raise PlanError(f"--target-ne must be a positive number, got {target}")
    fit = study.fit
    e_ci = fit.ci.get("E")
    e_txt = f"{fit.E:.4g}" + (f" [{e_ci[0]:.4g}, {e_ci[1]:.4g}]" if e_ci else "")
    if study.bayes_ne is not None and target <= study.bayes_ne:
        raise PlanError(f"target NE {target:g} is at or below the Bayes-optimal NE {study.bayes_ne:.4g} of the study's "
                        "evaluation data: unreachable by any model")
    if target <= fit.E:
        raise PlanError(f"target NE {target:g} is at or below the fitted asymptote E = {e_txt}: unreachable "
                        "with any model size and data under this law")
    # A target the smallest budget measured already reaches is refused, not planned: its
    # answer lies below every budget measured, where small runs are still in the learning
    # onset (docs/DESIGN.md section 4.6: NE falls faster than the law there), so the law's inverse is no
    # estimate.  Far enough below, the answer was the search grid's floor and a batch-
    # rounded example count, outside the plan's own bootstrap interval.
    if study.cheapest is not None and target >= study.cheapest[0]:
        ne, run, flops = study.cheapest
        raise PlanError(f"target NE {target:g} is at or above NE {ne:.4g}, which the study's "
                        f"smallest budget already reaches (run {run}, {flops:.3g} training FLOPs): "
                        "below the budgets measured the law is an extrapolation, not a plan; train "
                        "that run's config or ask for a lower target")
    lo_c, hi_c = study.flops_range
    cs = np.geomspace(lo_c / 1e6, hi_c * 1e12, 181)     # 0.1-decade steps, interpolated

    def least_c(theta_fn) -> tuple[np.ndarray, np.ndarray]:
        """Per parameter set: the least budget reaching the target and the optimal N there."""
        ne, n_best = _best(study, theta_fn, cs)                # (S, C), NE decreasing in C
        c_out, n_out = np.full(len(ne), np.inf), np.full(len(ne), np.inf)
        for s, row in enumerate(ne):
            ok = np.flatnonzero(row <= target)
            if len(ok) == 0:
                continue
            j = ok[0]
            if j == 0:
                c_out[s], n_out[s] = cs[0], n_best[s, 0]
                continue
            # Log-linear interpolation between the grid budgets around the crossing.
            f = (row[j - 1] - target) / (row[j - 1] - row[j])
            c_out[s] = math.exp(math.log(cs[j - 1]) + f * (math.log(cs[j]) - math.log(cs[j - 1])))
            n_out[s] = math.exp(math.log(n_best[s, j - 1]) + f * (math.log(n_best[s, j]) - math.log(n_best[s, j - 1])))
        return c_out, n_out

    c0 = float(least_c(_law_point(fit))[0][0])
    if not np.isfinite(c0):
        raise PlanError(f"target NE {target:g} is not reached below {cs[-1]:.3g} FLOPs under the fitted law "
                        f"(asymptote E = {e_txt}): unreachable in practice")
    _, n = _best(study, _law_point(fit), np.array([c0]))
    n0 = float(n[0, 0])
    plan = Plan("target", (c0, None, None), (n0, None, None), (0.0, None, None), (target, None, None), {}, None)
    if fit.bootstrap is not None:
        c_s, n_s = least_c(_law_samples(fit))
        plan.flops = (c0, *_interval(c_s, fit.level))
        plan.n_dense = (n0, *_interval(n_s, fit.level))
        with np.errstate(invalid="ignore"):
            d_s = np.where(np.isfinite(c_s), c_s / study.path.flops_per_example(n_s), np.inf)
        plan.examples = (0.0, *_interval(d_s, fit.level))
        share = float(np.mean(np.isfinite(c_s)))
        if share < 1:
            plan.warnings.append(f"in {1 - share:.0%} of bootstrap refits the asymptote is at or above the "
                                 "target, so the upper end of the FLOPs interval is unbounded")
    _finish(study, plan, n0, c0, memory)
    return plan


def _finish(study: Study, plan: Plan, n: float, flops: float, memory: float | None) -> None:
    """Config lines, examples in whole batches, memory bound, extrapolation warning."""
    path = study.path
    b = path.batch_size
    examples = max(b, int(round(flops / path.flops_per_example(n) / b)) * b)
    plan.examples = (float(examples), *plan.examples[1:])
    sets = dict(path.settings(n))
    sets["train.examples"] = examples
    w = _extrapolation(study, flops)
    if w:
        plan.warnings.append(w)
    elif not study.flops_range[0] <= flops <= study.flops_range[1]:
        plan.notes.append(f"{flops:.3g} FLOPs is outside the measured {study.flops_range[0]:.3g} to "
                          f"{study.flops_range[1]:.3g} (within {EXTRAPOLATION_WARN:g}x)")
    n_grid = study.runs["params_dense"].to_numpy(float)
    grid = _grid(study)
    if n <= grid[0] * 1.0001 or n >= grid[-1] / 1.0001:
        plan.warnings.append(f"the law's best N is at the edge of the search ({SEARCH_FACTOR:g}x beyond the sizes "
                             f"measured, {n_grid.min():.3g} to {n_grid.max():.3g}): along this path "
                             + ("a smaller model always wins, model size does not pay here"
                                if n <= grid[0] * 1.0001 else "a larger model always wins")
                             + "; the plan is a bound, not an optimum")
    elif not n_grid.min() <= n <= n_grid.max():
        plan.notes.append(f"N = {n:.3g} is outside the model sizes measured ({n_grid.min():.3g} to "
                          f"{n_grid.max():.3g}); the path's settings are extrapolated along it")
    if study.table_rows is None and memory is not None:
        plan.warnings.append("the study records no table size (no embedding dimension in its results or run "
                             "directories), so the memory bound was not applied")
    elif study.table_rows is None:
        plan.notes.append(f"embedding tables: size unknown (run {study.reference_run} records no "
                          "model.embed_dim in the results or its config.json)")
    if study.table_rows is not None:
        dim = float(sets["model.embed_dim"]) if "model.embed_dim" in sets else study.embed_dim_fixed
        if dim:
            per_row = BYTES_PER_FLOAT * (dim + 1)              # weights + row-wise Adagrad accumulator
            plan.table_bytes = study.table_rows * per_row
            if memory is not None and plan.table_bytes > memory:
                cap = int(memory // per_row // NUM_TABLES)
                if cap < 1:
                    raise PlanError(f"--memory {memory:.4g} bytes cannot hold one row per table at D = {dim:g}")
                sets["model.table_rows"] = cap
                plan.warnings.append(
                    f"the study's tables ({study.table_rows:,.0f} rows, {plan.table_bytes / 2**30:.3g} GiB) exceed "
                    f"the {memory / 2**30:.3g} GiB bound; capped at {cap:,} rows per table (hashing ids into "
                    "fewer rows: NE will be worse than predicted, the law was fitted at the study's table sizes)")
                plan.table_bytes = float(min(study.table_rows, cap * NUM_TABLES) * per_row)
    plan.notes.append(f"law fitted on {len(study.runs)} {study.which} runs of {study.source}; other settings as in "
                      f"run {study.reference_run} (its config.json)")
    plan.sets = sets
