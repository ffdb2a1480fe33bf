"""The report's text: report.md and the terminal summary, rendered from the fits dict.

Input is what `report.write_report` builds (the fits.json content); nothing here
fits or reads runs, so a saved fits.json renders the same report again.
"""
from __future__ import annotations

from analysis import allocation_report, architectures
from analysis.results import AXIS_LABELS


def _fmt(v, spec: str = ".4g") -> str:
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    return format(v, spec)


def _ci(ci, name: str, spec: str = ".4g") -> str:
    if not ci or name not in ci:
        return ""
    lo, hi = ci[name]
    return f" [{_fmt(lo, spec)}, {_fmt(hi, spec)}]"


def _est(e: dict, spec: str = ".3g") -> str:
    s = _fmt(e["value"], spec)
    if e.get("lo") is not None:
        s += f" [{_fmt(e['lo'], spec)}, {_fmt(e['hi'], spec)}]"
    return s


def _holdout_text(h: dict | None) -> str:
    if not h:
        return "-"
    worst = max(h["points"], key=lambda p: abs(p["rel_error"]))
    inside = "" if h["all_inside"] is None else (" (inside)" if h["all_inside"] else " (OUTSIDE)")
    return f"{worst['rel_error']:+.2%}{inside}"


def summary_text(fits: dict) -> str:
    """A short plain-text summary for a terminal."""
    m = fits["method"]
    b = m["bootstrap"]
    lines = [f"Scaling laws {fits['law']}  ({b['level']:.0%} bootstrap intervals, {b['samples']} resamples; "
             f"held-out check: largest {m['holdout']['k']} scale(s))"]
    lines.append(f"  {'scheme':<15} {'resource':<32} {'beta':<24} {'gamma':<26} {'Bayes NE':<9} held-out")
    for name, s in fits["schemes"].items():
        if "fit" not in s:
            lines.append(f"  {name:<15} skipped: {s['skipped']}")
            continue
        p, ci = s["fit"]["params"], s["fit"]["ci"]
        beta = f"{p['beta']:.3g}{_ci(ci, 'beta', '.3g')}"
        gamma = f"{p['gamma']:.4g}{_ci(ci, 'gamma')}"
        lines.append(f"  {name:<15} {s['axis_label']:<32} {beta:<24} {gamma:<26} "
                     f"{_fmt(s['bayes_ne']):<9} {_holdout_text(s['fit']['holdout'])}")
    best = fits["most_ne_per_flop"]
    if best:
        def flagged(r):
            return f" (flagged: {r['flags']})" if r["flags"] else ""
        top = best[0]
        gain = _est({"value": top["gain_per_doubling"], "lo": top["lo"], "hi": top["hi"]})
        rest = ", ".join(f"{r['scheme']} {_fmt(r['gain_per_doubling'], '.3g')} at {r['at_flops']:.3g}{flagged(r)}"
                         for r in best[1:])
        lines.append(f"Most NE per FLOP: {top['scheme']}, NE gain {gain} per doubling of FLOPs at "
                     f"{top['at_flops']:.3g} FLOPs{flagged(top)}" + (f"; then {rest}" if rest else ""))
    fr = fits.get("frontier")
    if fr and "fit" in fr:
        p, ci = fr["fit"]["params"], fr["fit"]["ci"]
        lines.append(f"Compute frontier ({len(fr['points'])} runs): beta {p['beta']:.3g}{_ci(ci, 'beta', '.3g')}, "
                     f"gamma {p['gamma']:.4g}{_ci(ci, 'gamma')}")
        for t in fr.get("targets", []):
            lines.append(f"  frontier: {t['message']}")
    lines += allocation_report.summary_lines(fits.get("compute_optimal"))
    if fits["flags"]:
        lines.append("Flags:")
        lines += [f"  {f['scope']}: {f['message']}" for f in fits["flags"]]
    else:
        lines.append("Flags: none")
    return "\n".join(lines)


def render_markdown(fits: dict) -> str:
    """report.md: results first, then the method in enough detail to redo it."""
    m = fits["method"]
    b = m["bootstrap"]
    L = ["# Scaling-law report", "",
         f"Source: `{fits['source']}` ({fits['runs']['used']} finished runs). Created {fits['created']}.", "",
         f"Law per scheme: `{fits['law']}`, fitted with a Huber loss (delta {m['huber_delta']:g}) on log "
         f"residuals; intervals are {b['level']:.0%} percentile intervals from {b['samples']} bootstrap "
         f"resamples of runs (seed {b['seed']}).", ""]
    if fits["runs"]["left_out"]:
        L += ["Runs left out (failed or unfinished): " + "; ".join(fits["runs"]["left_out"]) + ".", ""]
    L += ["## Flags", ""]
    L += [f"* **{f['scope']}** ({f['code']}): {f['message']}" for f in fits["flags"]] or ["None."]
    L += ["", "## Fits per scheme", "",
          "| scheme | resource | runs | alpha | beta | gamma | Bayes NE | NE gain per doubling | "
          f"x multiplier for {m['improvement']['relative']:.0%} better NE | held-out error |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    for name, s in fits["schemes"].items():
        if "fit" not in s:
            L.append(f"| {name} | {s['axis_label']} | {s['n_runs']} | skipped: {s['skipped']} ||||||| |")
            continue
        p, ci = s["fit"]["params"], s["fit"]["ci"]
        L.append(f"| {name} | {s['axis_label']} | {s['n_runs']} | {p['alpha']:.4g}{_ci(ci, 'alpha')} | "
                 f"{p['beta']:.4g}{_ci(ci, 'beta')} | {p['gamma']:.4g}{_ci(ci, 'gamma')} | {_fmt(s['bayes_ne'])} | "
                 f"{_est(s['gain_per_doubling'])} | {_est(s['multiplier_for_improvement'])} | "
                 f"{_holdout_text(s['fit']['holdout'])} |")
    L += ["", "NE gain per doubling and the multiplier are evaluated at each scheme's largest measured "
          "resource. A multiplier of inf means the improvement would cross the asymptote.", ""]
    for name, s in fits["schemes"].items():
        if "fit" not in s:
            continue
        c = s["fit"]["convergence"]
        L += [f"### {name}", "",
              f"Resource: {s['axis_label']} (`{s['axis']}`), {s['x_range'][0]:.4g} to {s['x_range'][1]:.4g}; "
              + (f"fitted to the lower envelope: {s['n_runs']} of the scheme's {s['n_scheme_runs']} runs; "
                 if s["envelope"] else "")
              + f"runs: {', '.join(s['runs'])}.", "",
              f"Convergence: objective {c['objective']:.4g}, projected gradient norm {c['grad_norm']:.2g}, "
              f"{c['n_reached_optimum']} of {c['n_polished']} polished starts reached the optimum, "
              f"at bound: {', '.join(c['at_bound']) or 'none'}; RMS log residual "
              f"{s['fit']['rms_log_residual']:.3g}.", ""]
        h = s["fit"]["holdout"]
        if h:
            for pt in h["points"]:
                inside = "" if "inside" not in pt else (
                    f", interval [{pt['lo']:.4g}, {pt['hi']:.4g}] " + ("contains it" if pt["inside"] else "MISSES it"))
                L.append(f"* held out x = {pt['x']:.4g}: observed {pt['observed']:.4g}, predicted "
                         f"{pt['predicted']:.4g} ({pt['rel_error']:+.2%}){inside}")
        elif s["holdout_skipped"]:
            L.append(f"* no held-out check: {s['holdout_skipped']}")
        L += [f"* {t['message']}" for t in s["targets"]]
        law, res = fits["plots"][f"law_{name}"], fits["plots"][f"residuals_{name}"]
        L += ["", f"![{name}]({law}) ![{name} residuals]({res})", ""]
    L += ["## Schemes on common axes", "",
          "Each scheme refitted against every common axis it varies along; gain per doubling at the "
          "scheme's largest value of that axis.", "",
          "| scheme | axis | runs | beta | gamma | NE gain per doubling | flags |", "|---|---|---|---|---|---|---|"]
    for r in fits["comparison"]:
        ci = {k: (r[f"{k}_lo"], r[f"{k}_hi"]) for k in ("beta", "gamma") if r[f"{k}_lo"] is not None}
        gain = _est({"value": r["gain_per_doubling"], "lo": r["gain_lo"], "hi": r["gain_hi"]})
        L.append(f"| {r['scheme']} | {AXIS_LABELS.get(r['axis'], r['axis'])} | {r['n_points']} | "
                 f"{r['beta']:.4g}{_ci(ci, 'beta')} | {r['gamma']:.4g}{_ci(ci, 'gamma')} | {gain} | "
                 f"{r['flags'] or '-'} |")
    if fits["most_ne_per_flop"]:
        order = ", ".join(f"{r['scheme']} ({_fmt(r['gain_per_doubling'], '.3g')} at {r['at_flops']:.3g} FLOPs"
                          + (f"; flagged: {r['flags']})" if r["flags"] else ")") for r in fits["most_ne_per_flop"])
        L += ["", f"NE bought per doubling of training FLOPs, most first: {order}."]
    if "schemes" in fits["plots"]:
        L += ["", f"![schemes]({fits['plots']['schemes']})"]
    fr = fits.get("frontier")
    if fr:
        L += ["", "## Compute-efficient frontier", "",
              f"{len(fr['points'])} runs are on the lower envelope of NE over training FLOPs."]
        if "fit" in fr:
            p, ci = fr["fit"]["params"], fr["fit"]["ci"]
            L += ["", f"Fit: alpha {p['alpha']:.4g}{_ci(ci, 'alpha')}, beta {p['beta']:.4g}{_ci(ci, 'beta')}, "
                  f"gamma {p['gamma']:.4g}{_ci(ci, 'gamma')}; NE gain per doubling of FLOPs "
                  f"{_est(fr['gain_per_doubling'])}."]
            L += [f"* {t['message']}" for t in fr["targets"]]
        elif fr["skipped"]:
            L += ["", f"No fit: {fr['skipped']}"]
        if "frontier" in fits["plots"]:
            L += ["", f"![frontier]({fits['plots']['frontier']})"]
    arch = fits.get("architectures")
    if arch:
        L += [""] + (architectures.markdown(arch, fits["plots"].get("architectures")) if "skipped" not in arch
                     else ["## Architectures on the compute axis", "", f"No comparison: {arch['skipped']}"])
    L += allocation_report.render_section(fits.get("compute_optimal"))
    L += ["", "## Method (everything needed to redo this analysis)", ""]
    opt = m["optimizer"]
    L += [f"* **Form**: {m['form']}.",
          f"* **Loss**: {m['loss']}; delta = {m['huber_delta']:g}.",
          f"* **Parametrisation**: {m['parametrisation']}.",
          f"* **Optimiser**: {opt['name']}; ftol {opt['ftol']:g}, gtol {opt['gtol']:g}, maxiter {opt['maxiter']}; "
          f"{opt['objective_scaling']}; bounds {opt['bounds']}.",
          f"* **Initialisation**: {m['initialisation']}.",
          f"* **Bootstrap**: {b['method']}; {b['samples']} resamples, seed {b['seed']}, level {b['level']:.0%}; "
          f"refits: {m['bootstrap_refit']}.",
          f"* **Holdout**: k = {m['holdout']['k']}; {m['holdout']['rule']}.",
          f"* **Which points**: every finished run of each scheme (`status` done, finite `eval_ne`); for "
          f"{', '.join(m['envelope_schemes']['schemes'])}: {m['envelope_schemes']['rule']}. Runs used are listed "
          f"per scheme above; failed or unfinished runs are left out and listed at the top.",
          f"* **Resource per scheme**: {m['resource_axes']}.",
          "* **Counting**: " + "; ".join(f"`{k}`: {v}" for k, v in fits["counting"].items()) + ".",
          f"* **Flag thresholds**: {m['flags']}.",
          f"* **Software**: {m['software']}.",
          "", "Redo: `dlrm-scaling analyze " + fits["source"] + f" --out DIR --bootstrap {b['samples']} "
          f"--seed {b['seed']} --holdout {m['holdout']['k']} --huber-delta {m['huber_delta']:g}`", ""]
    return "\n".join(L)
