"""`dlrm-scaling planted NAME --out DIR`: a study in a world whose answer is known in advance.

The planted worlds (dlrm_jax/data/planted_worlds.py) fix what a scaling study must find;
analysis/planted.py computes it from the world file.  A planted study runs the ordinary
sweep in that world (DIR/<world>/: results.csv and run directories, so `analyze` works on
them), fits it with the analysis the other studies use, and writes

    DIR/planted.json   per planted answer: predicted, fitted, 95% interval, tolerance, pass
    DIR/planted.md     the same as a report section, beside the plot
    DIR/planted.png    predicted curves against what was recovered

Two tiers of learner see each world.  The trained model (the sweep) is what the study is
about; the count-based learner (`analysis.planted.count_learner_curve`: the Gaussian-
posterior estimate of each id's effect, in numpy, on the generator's own ids and labels)
is the training-free control: its curve goes through the same fits, so when it recovers
the planted answer and the trained model does not, the difference is the trained
learner's (optimiser, one pass), not the analysis's or the grid's.

`planted-zipf`: the data exponent.  Two worlds differ only in their Zipf exponent s
(1.6 over 2^14 ids, 1.4 over 2^16); the planted exponent is the study's own law fitted to
the exact finite-K excess curve on the study's grid (about 1 - 1/s).  The recovered one
is the law fitted to the eval NE's excess over the world's exact Bayes NE, with no
constant: a free asymptote would absorb the trained learner's own floor (one pass,
Adagrad; reported as `learner_floor`), which is not part of the world's answer.

`planted-triple`: the architecture gap.  A rank-2 trilinear term on C1-C3, whose latents
their pair terms with a hub feature C4 also carry, and no pair term between C1-C3: `dot`
is blind to it (its top MLP gets no pairwise signal to multiply), DCN's cross layers
represent it.  The planted answer is the blind gap computed from the world; the recovered
one is (dot - dcn) with the term minus the same in the control, at 2^20 examples, on the
mean of 2 seeds.  The settings (`TRIPLE_OVERRIDES`, sweeps/planted_triple.py) are those of
the learnability probe (docs/planted_learnability.md) at which both models learn the pairs.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from dlrm_jax.errors import UserError
from dlrm_jax.run.files import write_atomic
from dlrm_jax.run.rundir import write_json_atomic

STUDIES = ("planted-zipf", "planted-triple")
ZIPF_WORLDS = ("planted-zipf-1.6", "planted-zipf-1.4")
# The trained study: the small preset with the `cat` interaction (per-id effects reach the
# top MLP directly; `dot` reaches them only through products with the bottom MLP's output,
# which starts slower), 2^18 eval examples (eval NE standard error ~0.85 / sqrt(N) = 1.7e-3
# per point), 2^14 to 2^20 training examples.
ZIPF_OVERRIDES = ("model.interaction=cat", "eval.examples=2**18")
PRESET = "small"
EXPONENT_TOLERANCE = 0.06   # |fitted - predicted| <= max(this, the interval's half-width)
DIFFERENCE_MARGIN = 0.04    # the two worlds' fitted exponents differ by more, in the predicted direction
BOOTSTRAP = 1000


@dataclass
class Answer:
    """One planted answer: what the world says, what the study found, and whether they agree."""
    study: str
    name: str
    predicted: float
    fitted: float
    interval: tuple[float, float]
    tolerance: float
    passed: bool
    how: str

    def to_dict(self) -> dict:
        return {"study": self.study, "name": self.name, "predicted": self.predicted, "fitted": self.fitted,
                "interval": list(self.interval), "tolerance": self.tolerance, "pass": self.passed,
                "how": self.how}


def _within(study: str, name: str, predicted: float, fit, how: str) -> Answer:
    lo, hi = fit.ci["beta"]
    tol = max(EXPONENT_TOLERANCE, (hi - lo) / 2)
    return Answer(study, name, float(predicted), float(fit.beta), (float(lo), float(hi)), tol,
                  bool(abs(fit.beta - predicted) <= tol), how)


def _world_config(world: str, overrides: tuple[str, ...]):
    from dlrm_jax.config import load_config
    return load_config(PRESET, [f"synthetic.world={world}", *overrides])


def _swept(study: str, sweep: str, out: Path, world: str, overrides: tuple[str, ...], workers: int, log):
    """Run (or resume) the study's sweep in `world` into out/world; its results as a DataFrame."""
    from analysis.results import load_results
    from sweeps.runner import run_sweep
    rows = run_sweep(sweep, out / world, PRESET, [f"synthetic.world={world}", *overrides],
                     workers=workers, log=log)
    failed = [r["run"] for r in rows if r["status"] != "done"]
    if failed:
        raise UserError(f"{study}: {world}: runs {', '.join(failed)} did not finish; see their "
                        f"train.log under {out / world}")
    return load_results(out / world)


def zipf_study(out: Path, *, workers: int = 1, log: Callable[[str], None] = print) -> dict:
    """Both Zipf worlds: the sweep, the training-free tier, the fits, the answers."""
    from analysis.fitting import NO_CONSTANT
    from analysis.laws import fit_power_law
    from analysis.planted import count_learner_curve, predict_for_source
    from dlrm_jax.data import make_source

    worlds, answers = {}, []
    for world in ZIPF_WORLDS:
        df = _swept("planted-zipf", "planted_zipf", out, world, ZIPF_OVERRIDES, workers, log)
        cfg = _world_config(world, ZIPF_OVERRIDES)
        source = make_source(cfg)
        n = np.sort(df["train_examples"].unique()).astype(float)
        bayes = float(df["bayes_ne"].iloc[0])
        mean_ne = df.groupby("train_examples")["eval_ne"].mean().reindex(n).to_numpy()
        spread = df.groupby("train_examples")["eval_ne"].agg(lambda v: float(v.max() - v.min())).reindex(n)
        if np.any(mean_ne <= bayes):
            raise UserError(f"planted-zipf: {world}: an eval NE at or below the Bayes NE ({bayes:.4f}); "
                            f"raise eval.examples")
        log(f"planted-zipf: {world}: predicting and running the count-based learner "
            f"({len(n)} counts, {cfg.eval.examples} eval examples)")
        pred = predict_for_source(source, n, eval_examples=cfg.eval.examples)
        excess_fit = fit_power_law(n, mean_ne - bayes, bootstrap=BOOTSTRAP, options=NO_CONSTANT)
        free_fit = fit_power_law(n, mean_ne, bootstrap=BOOTSTRAP)
        counts = count_learner_curve(source, n.astype(np.int64), eval_examples=cfg.eval.examples)
        count_excess_fit, count_free_fit = counts.fits(bootstrap=BOOTSTRAP)
        s = float(source.world.features[0].s)
        answers.append(_within("planted-zipf", f"data exponent, s = {s:g}", pred.beta_excess, excess_fit,
                               "trained model: eval NE - Bayes NE = alpha n^-beta (no constant)"))
        answers.append(_within("planted-zipf", f"data exponent, s = {s:g}, training-free",
                               pred.beta_excess, count_excess_fit,
                               "count-based learner: eval NE - Bayes NE = alpha n^-beta (no constant)"))
        worlds[world] = {
            "s": s, "cardinality": int(source.world.features[0].cardinality),
            "bayes_ne": bayes, "n": n.tolist(), "eval_ne": mean_ne.tolist(),
            "seed_spread": spread.tolist(),
            "predicted": pred.to_dict(),
            "trained": {"excess_fit": excess_fit.to_dict(), "free_fit": free_fit.to_dict(),
                        # What a free asymptote takes up above the Bayes NE: the trained
                        # learner's own floor (one pass, Adagrad), not the world's.
                        "learner_floor": float(free_fit.gamma - bayes)},
            "training_free": {"ne": counts.ne.tolist(), "kl_ne": counts.kl_ne.tolist(),
                              "bayes_ne": counts.bayes_ne, "excess_fit": count_excess_fit.to_dict(),
                              "free_fit": count_free_fit.to_dict()},
        }
    a, b = (worlds[w] for w in ZIPF_WORLDS)
    steeper = a["s"] > b["s"]  # 1 - 1/s grows with s: the steeper law has the larger exponent
    pred_diff = a["predicted"]["beta_excess"] - b["predicted"]["beta_excess"]
    fit_a, fit_b = (w["trained"]["excess_fit"] for w in (a, b))
    diff = fit_a["params"]["beta"] - fit_b["params"]["beta"]
    lo = fit_a["ci"]["beta"][0] - fit_b["ci"]["beta"][1]
    hi = fit_a["ci"]["beta"][1] - fit_b["ci"]["beta"][0]
    answers.append(Answer("planted-zipf", f"exponent difference, s = {a['s']:g} minus s = {b['s']:g}",
                          pred_diff, diff, (lo, hi), DIFFERENCE_MARGIN,
                          bool((diff > DIFFERENCE_MARGIN) if steeper else (diff < -DIFFERENCE_MARGIN)),
                          f"trained model; must exceed {DIFFERENCE_MARGIN} in the predicted direction "
                          f"(interval: the two intervals' extremes)"))
    return {"worlds": worlds, "answers": [x.to_dict() for x in answers],
            "preset": PRESET, "overrides": list(ZIPF_OVERRIDES)}


TRIPLE_WORLDS = ("planted-triple", "planted-triple-control")
# Every architecture at embedding dimension 8 and embedding learning rate 0.2 (the
# learnability probe, docs/planted_learnability.md): at the small preset's 16 and 0.05,
# `dot` leaves the saddle of small embeddings around 2^20 examples, so its NE there swings
# by 0.03 between seeds and worlds, more than the gap to be measured; at 8 and 0.2 its two
# seeds agree to 0.001 in the control.
TRIPLE_OVERRIDES = ("eval.examples=2**18", "model.embed_dim=8", "embedding.learning_rate=0.2")
WIN_SHARE = 0.9   # dcn must be the winner at the largest budget in at least this share of refits


def _seed_means(df):
    """Mean eval NE over seeds per (interaction, examples), with the seed spread (max - min)."""
    keys = ["model.interaction", "train_examples"]
    g = df.groupby(keys)
    out = g.agg(eval_ne=("eval_ne", "mean"), train_flops=("train_flops", "first"),
                bayes_ne=("bayes_ne", "first"), seeds=("eval_ne", "size")).reset_index()
    out["seed_spread"] = g["eval_ne"].agg(lambda v: float(v.max() - v.min())).to_numpy()
    return out


def triple_study(out: Path, *, workers: int = 1, log: Callable[[str], None] = print) -> dict:
    """The trilinear world and its control: the sweep, the gaps, the architecture comparison."""
    from analysis.architectures import compare_architectures
    from analysis.planted_terms import blind_gap_exact
    from dlrm_jax.data import make_source
    from dlrm_jax.data.synthetic import EVAL_STREAM

    worlds = {}
    for world in TRIPLE_WORLDS:
        means = _seed_means(_swept("planted-triple", "planted_triple", out, world, TRIPLE_OVERRIDES,
                                   workers, log))
        top = int(means["train_examples"].max())
        at_top = means[means["train_examples"] == top].set_index("model.interaction")
        try:
            cmp = compare_architectures(means, extrapolate=1.0, bootstrap=BOOTSTRAP)
        except ValueError as err:
            raise UserError(f"planted-triple: {world}: {err}") from None
        worlds[world] = {
            "bayes_ne": float(means["bayes_ne"].iloc[0]), "examples": top,
            "ne_at_top": {a: float(v) for a, v in at_top["eval_ne"].items()},
            "seed_spread_at_top": {a: float(v) for a, v in at_top["seed_spread"].items()},
            "gap_dot_minus_dcn": float(at_top.loc["dot", "eval_ne"] - at_top.loc["dcn", "eval_ne"]),
            "winner_at_top": cmp.winners[-1], "win_share_at_top": cmp.win_share[-1],
            "comparison": cmp.to_dict(),
        }
    source = make_source(_world_config(TRIPLE_WORLDS[0], TRIPLE_OVERRIDES))
    # 4,096 eval examples of the rest of the logit: the blind gap's sampling error is then
    # ~1e-3 of itself, and its exact integral over T stays seconds.
    idx = np.arange(1 << 12)
    _, ids, logit = source._raw(EVAL_STREAM, idx)
    term = source.triple_term(ids)
    triple = source.world.triple
    blind = blind_gap_exact(triple.effect, base_ctr=float(source.base_ctr), rest_logits=logit - term,
                            rank=triple.rank)
    w, c = (worlds[x] for x in TRIPLE_WORLDS)
    diff = w["gap_dot_minus_dcn"] - c["gap_dot_minus_dcn"]
    spread = max(max(w["seed_spread_at_top"].values()), max(c["seed_spread_at_top"].values()))
    answers = [
        Answer("planted-triple", f"(dot - dcn) with the term minus without, at {w['examples']:,} examples",
               blind, diff, (diff - spread, diff + spread), blind / 2, bool(diff >= blind / 2),
               "must be >= half the blind gap; interval: +- the largest seed spread of eval NE"),
        Answer("planted-triple", "dcn wins at the largest budget (share of refits)", WIN_SHARE,
               float(w["win_share_at_top"] or 0.0) if w["winner_at_top"] == "dcn" else 0.0, (0.0, 1.0),
               0.0, bool(w["winner_at_top"] == "dcn" and (w["win_share_at_top"] or 0.0) >= WIN_SHARE),
               f"winner: {w['winner_at_top']}; cat and wukong reported, not asserted"),
    ]
    return {"worlds": worlds, "blind_gap": blind, "answers": [a.to_dict() for a in answers],
            "preset": PRESET, "overrides": list(TRIPLE_OVERRIDES)}


def _plot_zipf(study: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dlrm_jax.run.files import atomic_write
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for (world, w), color in zip(study["worlds"].items(), ("C0", "C3")):
        n = np.asarray(w["n"])
        ax.loglog(n, w["predicted"]["excess_ne"], "-", color=color,
                  label=f"s = {w['s']:g}: predicted (beta {w['predicted']['beta_excess']:.3f})")
        ax.loglog(n, np.asarray(w["eval_ne"]) - w["bayes_ne"], "o", color=color,
                  label=f"trained (beta {w['trained']['excess_fit']['params']['beta']:.3f})")
        ax.loglog(n, np.asarray(w["training_free"]["ne"]) - w["training_free"]["bayes_ne"], "x", color=color,
                  label=f"count learner (beta {w['training_free']['excess_fit']['params']['beta']:.3f})")
    ax.set_xlabel("training examples")
    ax.set_ylabel("eval NE - Bayes NE")
    ax.set_title("planted-zipf: data exponent, predicted and recovered")
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)


def report_markdown(results: dict) -> str:
    lines = ["# Planted truths: predicted beside recovered", "",
             "| study | answer | predicted | recovered [95% interval] | tolerance | pass | how |",
             "|---|---|---|---|---|---|---|"]
    for study in results["studies"].values():
        for a in study["answers"]:
            lines.append(f"| {a['study']} | {a['name']} | {a['predicted']:.3f} | {a['fitted']:.3f} "
                         f"[{a['interval'][0]:.3f}, {a['interval'][1]:.3f}] | {a['tolerance']:.3f} | "
                         f"{'yes' if a['pass'] else 'NO'} | {a['how']} |")
    zipf = results["studies"].get("planted-zipf")
    if zipf:
        lines += ["", "## planted-zipf", "", "![planted-zipf](planted.png)", "",
                  "| world | Bayes NE | free fit: beta, gamma - Bayes (the learner's floor) | seed spread of eval NE |",
                  "|---|---|---|---|"]
        for world, w in zipf["worlds"].items():
            ff = w["trained"]["free_fit"]["params"]
            lines.append(f"| {world} | {w['bayes_ne']:.4f} | {ff['beta']:.3f}, {w['trained']['learner_floor']:+.4f} "
                         f"| {max(w['seed_spread']):.4f} (largest) |")
        lines += ["", "A failed recovery by the trained model with a passing count-based learner is the "
                      "trained learner's (optimiser, one pass); one where both fail is the fit's or the grid's."]
    triple = results["studies"].get("planted-triple")
    if triple:
        lines += ["", "## planted-triple", "",
                  f"Blind gap computed from the world: {triple['blind_gap']:.4f} NE.", "",
                  "| world | Bayes NE | " + " | ".join(f"{a} NE (seed spread)" for a in
                                                     ("dot", "cat", "dcn", "wukong")) + " | winner (share) |",
                  "|---|---|---|---|---|---|---|"]
        for world, w in triple["worlds"].items():
            cells = [f"{w['ne_at_top'].get(a, float('nan')):.4f} ({w['seed_spread_at_top'].get(a, float('nan')):.4f})"
                     for a in ("dot", "cat", "dcn", "wukong")]
            share = w["win_share_at_top"]
            lines.append(f"| {world} | {w['bayes_ne']:.4f} | " + " | ".join(cells)
                         + f" | {w['winner_at_top']} ({'n/a' if share is None else f'{share:.0%}'}) |")
    return "\n".join(lines) + "\n"


def run_planted(names: list[str] | None, out: str | Path, *, workers: int = 1,
                log: Callable[[str], None] = print) -> dict:
    """Run the named planted studies (all when none), write planted.json/.md/.png; return the results."""
    names = list(names or STUDIES)
    unknown = [n for n in names if n not in STUDIES]
    if unknown:
        raise UserError(f"unknown planted study {', '.join(unknown)}; choose from {', '.join(STUDIES)}")
    if workers < 1:
        raise UserError(f"--workers must be >= 1, got {workers}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create --out {out}: {err.strerror or err}")
    previous = out / "planted.json"
    results = {"studies": {}}
    if previous.exists():  # studies run before into this directory stay in the report
        try:
            results = json.loads(previous.read_text())
        except ValueError:
            results = {"studies": {}}
    for name in names:
        if name == "planted-zipf":
            results["studies"][name] = zipf_study(out, workers=workers, log=log)
            _plot_zipf(results["studies"][name], out / "planted.png")
        elif name == "planted-triple":
            results["studies"][name] = triple_study(out, workers=workers, log=log)
    results["pass"] = all(a["pass"] for s in results["studies"].values() for a in s["answers"])
    write_json_atomic(out / "planted.json", results)  # NaN as null, numpy scalars as numbers
    write_atomic(out / "planted.md", report_markdown(results))
    return results

