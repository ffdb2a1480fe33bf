"""Figures of the compute-optimal analysis: IsoFLOP profiles and the allocation laws.

Same conventions as `plots` (Agg canvas, no pyplot, saved atomically by `plots.save`).
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from analysis.compute_optimal import METHODS, ComputeOptimal
from analysis.plots import _figure, _log_ne_axis

MARKERS = {"envelope": "s", "isoflop": "o", "joint": "D"}
COLORS = {"envelope": "C1", "isoflop": "C0", "joint": "C2"}
EXTEND = 16.0      # draw the allocation laws this factor beyond the largest budget


def isoflop_figure(co: ComputeOptimal) -> Figure:
    """NE against dense parameters, one curve per budget: runs, the parabola in log N, its
    minimum with its bootstrap interval (horizontal bar), and the joint law along the
    same IsoFLOP line (dotted)."""
    fig, (ax,) = _figure(width=7.0, height=4.8)
    d = co.data
    iso = co.allocations["isoflop"].per_budget
    fit = co.joint_fit
    for k, (c, g) in enumerate(zip(d.budgets, d.groups)):
        color = f"C{k % 10}"
        logn, logd = np.log(d.n[g]), np.log(d.d[g])
        ax.plot(d.n[g], d.y[g], "o", color=color, ms=5, label=f"C = {c:.3g} FLOPs")
        u = np.linspace(logn.min(), logn.max(), 100)
        ax.plot(np.exp(u), np.polyval(co.parabolas[k], u), "-", color=color, lw=1.4)
        s, t = np.polyfit(logn, logd, 1)
        ax.plot(np.exp(u), fit.predict(np.exp(u), np.exp(s * u + t)), ":", color=color, lw=1.2)
        p = iso[k]
        xerr = None
        if "n_lo" in p:
            xerr = [[max(p["n_opt"] - p["n_lo"], 0)], [max(p["n_hi"] - p["n_opt"], 0)]]
        ax.errorbar([p["n_opt"]], [p["ne"]], xerr=xerr, fmt="*", color=color, mec="k", ms=13, capsize=3,
                    zorder=5)
    ax.plot([], [], "*", color="0.5", mec="k", ms=11, label="parabola minimum (bar: interval)")
    ax.plot([], [], ":", color="0.3", label="joint law on the same budget")
    ax.set_xscale("log")
    _log_ne_axis(ax)
    ax.set_xlabel("dense parameters N (FLOP-bearing; embeddings excluded)")
    ax.set_ylabel("eval NE")
    ax.set_title("IsoFLOP profiles: NE against model size at fixed training FLOPs", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    return fig


def allocation_figure(co: ComputeOptimal) -> Figure:
    """N_opt and D_opt against C, the three methods: per-budget optima and fitted laws
    (solid over the budgets, dashed beyond) with their bootstrap bands."""
    fig, (ax_n, ax_d) = _figure(ncols=2, width=5.2, height=4.4)
    cs = co.data.budgets
    grid = np.geomspace(cs.min() / 1.5, cs.max() * EXTEND, 100)
    inside = grid <= cs.max()
    for m in METHODS:
        al = co.allocations[m]
        col = COLORS[m]
        for ax, fn, ifn, key, expo in ((ax_n, al.n_opt, al.n_opt_interval, "n_opt", al.a),
                                      (ax_d, al.d_opt, al.d_opt_interval, "d_opt", al.b)):
            y = fn(grid)
            ci = "" if expo.lo is None else f" [{expo.lo:.2f}, {expo.hi:.2f}]"
            name = "a" if key == "n_opt" else "b"
            ax.plot(grid[inside], y[inside], "-", color=col, lw=1.6, label=f"{m}: {name} = {expo.value:.3f}{ci}")
            ax.plot(grid[~inside], y[~inside], "--", color=col, lw=1.3)
            band = ifn(grid)
            if band is not None and np.all(np.isfinite(band[0])) and np.all(np.isfinite(band[1])):
                ax.fill_between(grid, band[0], band[1], color=col, alpha=0.12, lw=0)
            if m != "joint":
                pts = np.array([p[key] for p in al.per_budget])
                ax.plot(cs, pts, MARKERS[m], color=col, mfc="none" if m == "envelope" else col, ms=7)
    for ax, what in ((ax_n, "N_opt: dense parameters"), (ax_d, "D_opt: training examples")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("training FLOPs C")
        ax.set_ylabel(what)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Compute-optimal allocation, three methods (markers: per-budget optima; "
                 f"{co.level:.0%} bootstrap bands; dashed: extrapolation)", fontsize=9)
    return fig
