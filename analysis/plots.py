"""Figures for the report (matplotlib, PNG, headless).

Figures are built on `matplotlib.figure.Figure` with an Agg canvas and never touch
pyplot, so importing this module changes no global backend (users' notebooks keep
theirs) and it works on machines without a display. `save` writes atomically.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter

from analysis.results import AXIS_LABELS
from dlrm_jax.run.files import atomic_write

EXTRAPOLATE = 10.0   # draw the law up to this factor beyond the largest measured x


def _figure(ncols: int = 1, width: float = 6.0, height: float = 4.2):
    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, axes


def save(fig: Figure, path) -> Path:
    """Write a PNG atomically, so no half-written image is seen."""
    path = Path(path)
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    return path


def _log_ne_axis(ax) -> None:
    """Log y for NE, but with plain numbers (0.6, 0.7) rather than 6 x 10^-1."""
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FormatStrFormatter("%.3g"))
    ax.yaxis.set_minor_formatter(FormatStrFormatter("%.3g"))
    ax.tick_params(axis="y", which="minor", labelsize=7)


def _curve(ax, fit, x_lo: float, x_hi: float, color, label: str | None, band: bool = True):
    """Fitted curve over the data (solid) and its extrapolation (dashed), with the
    bootstrap band of the curve; returns the x grid used."""
    x_max = float(np.max(fit.data["x"]))
    xs = np.geomspace(x_lo, x_hi, 200)
    inside, beyond = xs[xs <= x_max], xs[xs >= x_max]
    ax.plot(inside, fit.predict(inside), "-", color=color, lw=1.8, label=label)
    if len(beyond) > 1:
        ax.plot(beyond, fit.predict(beyond), "--", color=color, lw=1.5)
    if band and fit.bootstrap is not None:
        lo, hi = fit.predict_interval(xs)
        ax.fill_between(xs, lo, hi, color=color, alpha=0.18, lw=0)
    return xs


def law_figure(fit, *, xlabel: str = "x", title: str = "", bayes_ne: float | None = None,
               extrapolate: float = EXTRAPOLATE, others=None) -> Figure:
    """NE against the resource, log-log: points, fit, band, asymptote, extrapolation.

    others: (x, y) of runs not used by the fit (off a grid scheme's envelope), in grey.
    """
    fig, (ax,) = _figure()
    if others is not None and len(others[0]):
        ax.plot(others[0], others[1], "o", color="0.65", ms=4, label="runs off the envelope")
    x, y = fit.data["x"], fit.data["y"]
    held = np.zeros(len(x), bool)
    if fit.holdout is not None:
        held[fit.holdout.held_out] = True
    _curve(ax, fit, x.min() / 1.5, x.max() * extrapolate, "C0",
           f"fit: beta {fit.beta:.3g}, gamma {fit.gamma:.4g}")
    ax.plot(x[~held], y[~held], "o", color="k", ms=5, label="runs")
    if held.any():
        ax.plot(x[held], y[held], "s", mfc="none", mec="C3", ms=8,
                label=f"held out (largest {fit.holdout.k} scale(s)) in the check")
    ax.axhline(fit.gamma, color="C0", ls=":", lw=1.2, label="asymptote gamma")
    if bayes_ne is not None:
        ax.axhline(bayes_ne, color="C2", ls="-.", lw=1.2, label=f"Bayes NE {bayes_ne:.4g}")
    ax.set_xscale("log")
    _log_ne_axis(ax)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("eval NE")
    level = f"{fit.level:.0%} bootstrap band" if fit.bootstrap is not None else "no bootstrap"
    ax.set_title(f"{title}\nsolid: fitted range, dashed: extrapolation; {level}", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    return fig


def residuals_figure(fit, *, xlabel: str = "x", title: str = "") -> Figure:
    """Log residuals (percent) against the resource; a systematic shape means misfit."""
    fig, (ax,) = _figure(height=3.2)
    x = fit.data["x"]
    r = 100 * fit.log_residuals
    ax.axhline(0, color="k", lw=0.8)
    d = 100 * fit.options.huber_delta
    ax.axhspan(-d, d, color="C0", alpha=0.12, lw=0, label=f"Huber delta (±{d:.2g}%)")
    ax.plot(x, r, "o-", color="C3", ms=5)
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("log(fit / observed), %")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    return fig


def schemes_figure(fits: dict, axes: list[str]) -> Figure:
    """Schemes side by side on common axes: one panel per axis, one colour per scheme.

    fits: {(scheme, axis): PowerLawFit}.
    """
    axes = [a for a in axes if any(k[1] == a for k in fits)]
    fig, panels = _figure(ncols=max(len(axes), 1), width=5.0)
    schemes = list(dict.fromkeys(k[0] for k in fits))
    colors = {s: f"C{i % 10}" for i, s in enumerate(schemes)}
    for ax, axis in zip(panels, axes):
        for (scheme, a), f in fits.items():
            if a != axis:
                continue
            x = f.data["x"]
            _curve(ax, f, x.min(), x.max() * 2, colors[scheme], f"{scheme} (beta {f.beta:.3g})", band=False)
            ax.plot(x, f.data["y"], "o", color=colors[scheme], ms=4)
        ax.set_xscale("log")
        _log_ne_axis(ax)
        ax.set_xlabel(AXIS_LABELS.get(axis, axis))
        ax.set_ylabel("eval NE")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Schemes on common axes (dashed: one doubling beyond the data)", fontsize=10)
    return fig


def frontier_figure(df, frontier, x: str = "train_flops") -> Figure:
    """All runs' NE over training FLOPs, the frontier points, and its fitted law."""
    fig, (ax,) = _figure()
    for i, (scheme, sub) in enumerate(df.groupby("sweep", sort=False)):
        ax.plot(sub[x], sub["eval_ne"], "o", color=f"C{(i + 1) % 10}", ms=4, alpha=0.7, label=scheme)
    pts = frontier.points
    ax.plot(pts[x], pts["eval_ne"], "o", mfc="none", mec="k", ms=9, label="frontier")
    if frontier.fit is not None:
        f = frontier.fit
        _curve(ax, f, f.data["x"].min() / 1.5, f.data["x"].max() * EXTRAPOLATE, "C0",
               f"frontier fit: beta {f.beta:.3g}, gamma {f.gamma:.4g}")
        ax.axhline(f.gamma, color="C0", ls=":", lw=1.2)
    ax.set_xscale("log")
    _log_ne_axis(ax)
    ax.set_xlabel(AXIS_LABELS.get(x, x))
    ax.set_ylabel("eval NE")
    ax.set_title("Compute-efficient frontier (lower envelope of NE over FLOPs)", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    return fig
