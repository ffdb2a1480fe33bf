"""Architectures compared on the compute axis: frontiers, the winner per budget, crossovers.

    cmp = compare_architectures(df)          # df: load_results(...) of an `architecture` sweep
    cmp.frontiers["dcn"].fit.beta, cmp.winner_at(1e12), cmp.crossovers

The question (Ardalani et al. 2022 found DLRM's parameter scaling "out of steam";
Zhang et al. 2024 claim Wukong keeps scaling where DLRM and DCNv2 plateau): at a given
training-FLOP budget, which interaction gives the lowest NE, and does that change as
the budget grows?  For each architecture (the runs' `model.interaction`):

* its compute-efficient frontier: the lower envelope of NE over training FLOPs of its
  own grid of model sizes x example counts (`study.lower_envelope`), fitted with
  NE = alpha * C**(-beta) + gamma and bootstrap intervals (`fit_power_law`);
* at each budget C on a log grid over the measured FLOPs and `extrapolate` times
  beyond, the architecture with the lowest fitted NE, and how often it is the lowest
  over the bootstrap refits (the refits of different architectures are independent
  resamples, paired by index);
* where the winner changes, the budget at which the two fitted frontiers cross, with
  a percentile interval from the crossings of the paired refits (refits whose curves do
  not cross within `CROSSING_SEARCH` of the measured range are counted, not used).

Only numpy/pandas/scipy: no JAX (analysis/ runs on laptops).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.optimize import brentq

from analysis.bootstrap import percentile_interval
from analysis.laws import PowerLawFit, fit_power_law
from analysis.study import bayes_ne_of, json_number, lower_envelope, points
from analysis.validation import Flag, fit_flags

COLUMN = "model.interaction"       # the config key that names the architecture
AXIS = "train_flops"
N_BUDGETS = 25                     # budgets on the log grid
CROSSING_SEARCH = 100.0            # refits' crossings are looked for within this factor of the measured range


@dataclass
class ArchitectureFrontier:
    name: str
    points: pd.DataFrame           # the runs on this architecture's envelope
    n_runs: int                    # its runs usable on the axis
    fit: PowerLawFit | None
    flags: list[Flag] = field(default_factory=list)
    skipped: str | None = None


@dataclass(frozen=True)
class Crossover:
    before: str                    # winner below the budget
    after: str                     # winner above it
    budget: float                  # where the fitted frontiers cross (training FLOPs)
    lo: float | None               # percentile interval over the paired refits
    hi: float | None
    share_crossing: float | None   # refits whose curves cross within the search range
    extrapolated: bool             # beyond the largest measured budget

    def to_dict(self) -> dict:
        return {"before": self.before, "after": self.after, "budget": json_number(self.budget),
                "lo": json_number(self.lo), "hi": json_number(self.hi),
                "share_crossing": self.share_crossing, "extrapolated": self.extrapolated}


@dataclass
class ArchitectureComparison:
    frontiers: dict[str, ArchitectureFrontier]
    budgets: np.ndarray                       # training FLOPs
    ne: dict[str, np.ndarray]                 # fitted frontier NE per architecture at each budget
    winners: list[str]                        # lowest fitted NE at each budget
    win_share: list[float | None]             # share of paired refits in which that winner wins
    crossovers: list[Crossover]
    measured_max: float                       # largest measured budget (beyond: extrapolation)
    level: float

    def winner_at(self, budget: float) -> str:
        fitted = {a: f.fit for a, f in self.frontiers.items() if f.fit is not None}
        return min(fitted, key=lambda a: fitted[a].predict(budget))

    def to_dict(self) -> dict:
        return {
            "column": COLUMN, "axis": AXIS, "level": self.level, "measured_max": self.measured_max,
            "frontiers": {a: _frontier_dict(f) for a, f in self.frontiers.items()},
            "budgets": [{"train_flops": float(c), "winner": w, "win_share": s,
                         "extrapolated": bool(c > self.measured_max * (1 + 1e-9)),
                         "ne": {a: float(v[i]) for a, v in self.ne.items()}}
                        for i, (c, w, s) in enumerate(zip(self.budgets, self.winners, self.win_share))],
            "crossovers": [c.to_dict() for c in self.crossovers],
        }


def has_architectures(df: pd.DataFrame) -> bool:
    """Whether the results hold runs of more than one architecture."""
    return COLUMN in df.columns and df[COLUMN].dropna().astype(str).nunique() > 1


def compare_architectures(df: pd.DataFrame, *, extrapolate: float = 10.0, n_budgets: int = N_BUDGETS,
                          bootstrap: int = 200, seed: int = 0, level: float = 0.95, **fit_kw
                          ) -> ArchitectureComparison:
    """Fit each architecture's frontier and compare them (module docstring).

    df: finished runs with `model.interaction`, `train_flops` and `eval_ne` (all sweeps'
    runs count: a `compute` sweep of dot runs adds to dot's grid).  Raises ValueError
    when fewer than two architectures have a fitted frontier.
    """
    if COLUMN not in df.columns:
        raise ValueError(f"compare_architectures: the results have no {COLUMN!r} column")
    kinds = list(dict.fromkeys(df[COLUMN].dropna().astype(str)))
    frontiers = {}
    for a in kinds:
        own = df[df[COLUMN].astype(str) == a]
        front = lower_envelope(own, AXIS)
        info = dict(name=a, points=front, n_runs=len(points(own, AXIS)))
        try:
            f = fit_power_law(front[AXIS].to_numpy(float), front["eval_ne"].to_numpy(float),
                              bootstrap=bootstrap, seed=seed, level=level, **fit_kw)
        except ValueError as e:
            frontiers[a] = ArchitectureFrontier(fit=None, skipped=str(e), **info)
            continue
        frontiers[a] = ArchitectureFrontier(fit=f, flags=fit_flags(f, bayes_ne=bayes_ne_of(own), label=AXIS), **info)
    fitted = {a: fr.fit for a, fr in frontiers.items() if fr.fit is not None}
    if len(fitted) < 2:
        why = "; ".join(f"{a}: {fr.skipped}" for a, fr in frontiers.items() if fr.fit is None)
        raise ValueError(f"compare_architectures: {len(fitted)} architecture(s) with a fitted frontier, need 2"
                         + (f" ({why})" if why else ""))
    lo = min(float(f.data["x"].min()) for f in fitted.values())
    hi = max(float(f.data["x"].max()) for f in fitted.values())
    budgets = np.geomspace(lo, hi * extrapolate, n_budgets)
    names = list(fitted)
    ne = {a: np.asarray(fitted[a].predict(budgets), float) for a in names}
    table = np.stack([ne[a] for a in names])                          # [A, budgets]
    winners = [names[i] for i in np.argmin(table, axis=0)]
    win_share = _win_share(fitted, names, budgets, winners)
    crossovers = []
    for i in range(1, len(budgets)):
        if winners[i] != winners[i - 1]:
            crossovers.append(_crossover(fitted[winners[i - 1]], fitted[winners[i]], winners[i - 1], winners[i],
                                         budgets[i - 1], budgets[i], lo, hi, level))
    return ArchitectureComparison(frontiers, budgets, ne, winners, win_share, crossovers, hi, level)


def _win_share(fitted, names, budgets, winners) -> list[float | None]:
    if any(f.samples is None for f in fitted.values()):
        return [None] * len(budgets)
    s = min(len(next(iter(f.samples.values()))) for f in fitted.values())
    samples = np.stack([fitted[a].predict_samples(budgets)[:s] for a in names])   # [A, S, budgets]
    best = np.argmin(samples, axis=0)                                               # [S, budgets]
    return [float(np.mean(best[:, j] == names.index(w))) for j, w in enumerate(winners)]


def _crossing(fa, fb, lo: float, hi: float) -> float | None:
    """The budget in [lo, hi] where fa(C) - fb(C) changes sign (log-space root), or None."""
    def g(logc):
        return float(fa(np.exp(logc)) - fb(np.exp(logc)))
    a, b = np.log(lo), np.log(hi)
    if g(a) * g(b) > 0:
        return None
    return float(np.exp(brentq(g, a, b, xtol=1e-10)))


def _crossover(f_before: PowerLawFit, f_after: PowerLawFit, before: str, after: str, c0: float, c1: float,
               measured_lo: float, measured_hi: float, level: float) -> Crossover:
    budget = _crossing(f_before.predict, f_after.predict, c0, c1)
    if budget is None:   # a third curve in between: take the grid midpoint
        budget = float(np.sqrt(c0 * c1))
    lo = hi = share = None
    if f_before.samples is not None and f_after.samples is not None:
        grid = np.geomspace(measured_lo / CROSSING_SEARCH, measured_hi * CROSSING_SEARCH, 400)
        pa, pb = f_before.predict_samples(grid), f_after.predict_samples(grid)
        s = min(len(pa), len(pb))
        found = []
        for d in pa[:s] - pb[:s]:
            changes = np.flatnonzero(np.sign(d[:-1]) != np.sign(d[1:]))
            if len(changes):   # the sign change nearest (in log budget) to the fitted crossing
                j = changes[np.argmin(np.abs(np.log(grid[changes]) - np.log(budget)))]
                w = d[j] / (d[j] - d[j + 1])                  # linear in log budget between grid points
                found.append(float(np.exp((1 - w) * np.log(grid[j]) + w * np.log(grid[j + 1]))))
        share = len(found) / s if s else None
        if found:
            lo, hi = (float(v) for v in percentile_interval(np.asarray(found), level))
    return Crossover(before, after, budget, lo, hi, share, bool(budget > measured_hi))


def _frontier_dict(f: ArchitectureFrontier) -> dict:
    out = {"n_runs": f.n_runs, "skipped": f.skipped, "flags": [fl.to_dict() for fl in f.flags],
           "points": [{"run": str(r.get("run")), "train_flops": float(r[AXIS]), "eval_ne": float(r["eval_ne"])}
                      for _, r in f.points.iterrows()]}
    if f.fit is not None:
        out["fit"] = {"params": dict(f.fit.params), "ci": {k: list(v) for k, v in f.fit.ci.items()},
                      "n_points": f.fit.n_points,
                      "rms_log_residual": float(np.sqrt(np.mean(f.fit.log_residuals ** 2)))}
    return out


# -- report --------------------------------------------------------------------------

def _num(v, spec=".4g") -> str:
    return "-" if v is None else v if isinstance(v, str) else format(v, spec)


def _with_ci(p: dict, ci: dict, name: str) -> str:
    s = f"{p[name]:.4g}"
    if name in ci:
        s += f" [{ci[name][0]:.4g}, {ci[name][1]:.4g}]"
    return s


def markdown(entry: dict, plot: str | None = None) -> list[str]:
    """The report.md section for `ArchitectureComparison.to_dict()` output."""
    L = ["## Architectures on the compute axis", "",
         f"Each architecture (`{entry['column']}`) fitted on its own compute-efficient frontier (lower envelope "
         f"of NE over training FLOPs of its runs): NE = alpha * C**(-beta) + gamma, {entry['level']:.0%} "
         "bootstrap intervals.", "",
         "| architecture | runs | on frontier | FLOPs measured | alpha | beta | gamma | flags |",
         "|---|---|---|---|---|---|---|---|"]
    for a, f in entry["frontiers"].items():
        if "fit" not in f:
            L.append(f"| {a} | {f['n_runs']} | {len(f['points'])} | | skipped: {f['skipped']} ||| |")
            continue
        p, ci = f["fit"]["params"], f["fit"]["ci"]
        flags = ",".join(sorted({fl["code"] for fl in f["flags"]})) or "-"
        xs = [pt["train_flops"] for pt in f["points"]]
        L.append(f"| {a} | {f['n_runs']} | {len(f['points'])} | {min(xs):.3g} to {max(xs):.3g} | "
                 f"{_with_ci(p, ci, 'alpha')} | "
                 f"{_with_ci(p, ci, 'beta')} | {_with_ci(p, ci, 'gamma')} | {flags} |")
    L += ["", "Winner (lowest fitted frontier NE) per budget; share: fraction of paired bootstrap refits in which "
          "it is also the lowest. Budgets above "
          f"{entry['measured_max']:.3g} FLOPs are extrapolations, and so is an architecture's NE below its own "
          "smallest measured budget (table above).", "",
          "| training FLOPs | winner | share | " + " | ".join(f"NE {a}" for a in entry["budgets"][0]["ne"]) + " |",
          "|---|---|---|" + "---|" * len(entry["budgets"][0]["ne"])]
    rows = entry["budgets"]
    for i in sorted(set(np.linspace(0, len(rows) - 1, 9).round().astype(int))):   # 9 of the budgets
        r = rows[i]
        mark = " (extrapolated)" if r["extrapolated"] else ""
        L.append(f"| {r['train_flops']:.3g}{mark} | {r['winner']} | {_num(r['win_share'], '.0%')} | "
                 + " | ".join(f"{v:.4f}" for v in r["ne"].values()) + " |")
    last = rows[-1]
    L += ["", f"At the largest budget ({last['train_flops']:.3g} FLOPs"
          + (", extrapolated" if last["extrapolated"] else "") + f"): **{last['winner']}** "
          f"(lowest in {_num(last['win_share'], '.0%')} of the paired refits)."]
    if entry["crossovers"]:
        for c in entry["crossovers"]:
            iv = f" [{c['lo']:.3g}, {c['hi']:.3g}]" if c["lo"] is not None else ""
            share = "" if c["share_crossing"] is None else f"; {c['share_crossing']:.0%} of refits cross"
            L.append(f"* The winner changes from {c['before']} to {c['after']} at {_num(c['budget'], '.3g')}"
                     f"{iv} FLOPs" + (" (extrapolated)" if c["extrapolated"] else "") + share + ".")
    else:
        L.append("* The winner does not change over these budgets.")
    if plot:
        L += ["", f"![architectures]({plot})"]
    return L + [""]


def figure(cmp: ArchitectureComparison):
    """Every architecture's runs, its frontier points and fitted law (band: bootstrap interval)."""
    from analysis.plots import EXTRAPOLATE, _curve, _figure, _log_ne_axis
    fig, (ax,) = _figure(width=6.5)
    for i, (a, fr) in enumerate(cmp.frontiers.items()):
        color = f"C{i % 10}"
        own = fr.points
        ax.plot(own[AXIS], own["eval_ne"], "o", color=color, ms=6)
        if fr.fit is not None:
            f = fr.fit
            _curve(ax, f, f.data["x"].min() / 1.5, f.data["x"].max() * EXTRAPOLATE, color,
                   f"{a}: beta {f.beta:.3g}, gamma {f.gamma:.4g}")
        else:
            ax.plot([], [], "o", color=color, label=f"{a} (no fit)")
    for c in cmp.crossovers:
        ax.axvline(c.budget, color="0.4", ls=":", lw=1)
    ax.set_xscale("log")
    _log_ne_axis(ax)
    # The bootstrap bands widen without bound below the data; keep the frontiers readable.
    ne = np.concatenate([fr.points["eval_ne"].to_numpy(float) for fr in cmp.frontiers.values()])
    ax.set_ylim(ne.min() * 0.93, ne.max() * 1.07)
    ax.set_xlabel("training FLOPs")
    ax.set_ylabel("eval NE")
    ax.set_title("Compute-efficient frontier per architecture (dashed: extrapolation)", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    return fig
