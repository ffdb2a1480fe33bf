"""Scaling-law analysis: run results -> fitted laws, intervals, checks, plots, report.

Imports numpy, scipy, pandas and matplotlib only, never JAX (users import it on
laptops; a test checks). Training and analysis meet only through files.

    from analysis import fit_power_law, fit_additive_power_law, load_results
    f = fit_power_law(x, y)                 # y = alpha * x**(-beta) + gamma
    f.alpha, f.beta, f.gamma, f.predict(x), f.ci, f.predict_interval(x)
    g = fit_additive_power_law(n, d, y)     # y = E + A * n**(-alpha) + B * d**(-beta)
    df = load_results("runs/demo")          # one row per finished run

Modules: objective (log-space law, Huber loss), fitting (starts, L-BFGS-B,
convergence), bootstrap, laws (public fits), validation (holdout, flags), results
(loading, resource axes), study (multipliers, gains, inversion, comparisons, frontier),
plots, report, cli; planted (the answers a planted synthetic world must give).
"""

from analysis.bootstrap import Bootstrap
from analysis.fitting import Convergence, FitOptions
from analysis.laws import AdditivePowerLawFit, PowerLawFit, fit_additive_power_law, fit_power_law
from analysis.render import render_markdown, summary_text
from analysis.report import write_report
from analysis.results import COMMON_AXES, RESOURCE_AXES, ResultsWarning, load_results, resource_axis
from analysis.study import (
                              Comparison,
                              Estimate,
                              Frontier,
                              Inversion,
                              SchemeFit,
                              compare_schemes,
                              compute_frontier,
                              fit_scheme,
                              fit_schemes,
                              gain_per_doubling,
                              multiplier_for_improvement,
                              resource_for_target,
)
from analysis.validation import Flag, HoldoutCheck, fit_flags, holdout_check

__all__ = [
    "AdditivePowerLawFit", "Bootstrap", "COMMON_AXES", "Comparison", "Convergence", "Estimate",
    "FitOptions", "Flag", "Frontier", "HoldoutCheck", "Inversion", "PowerLawFit", "RESOURCE_AXES",
    "ResultsWarning", "SchemeFit", "compare_schemes", "compute_frontier", "fit_additive_power_law",
    "fit_flags", "fit_power_law", "fit_scheme", "fit_schemes", "gain_per_doubling",
    "holdout_check", "load_results", "multiplier_for_improvement", "resource_axis",
    "render_markdown", "resource_for_target", "summary_text", "write_report",
]
