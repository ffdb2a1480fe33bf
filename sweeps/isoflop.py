"""IsoFLOP profiles: K training-FLOP budgets x M model sizes, each run sized to spend its budget.

For each budget C and model size N, `train.examples` is set so that the run's training
FLOPs (flops_per_example from dlrm_jax/model/accounting.py x examples) equal C, rounded to
whole batches (the train loop runs full batches only).  Each point records its budget
as `train.flop_budget`, so results.csv groups runs by budget.  Per budget, NE against
model size is a valley; its bottom is the compute-optimal size (Hoffmann et al. 2022,
approach 2), and `analysis.compute_optimal` fits how it moves with C.

Defaults: 4 budgets a factor 4 apart, the largest the base preset's own budget (its
model on its `train.examples`), so the sweep runs small on a CPU and large on a pod;
5 model sizes along the `width_and_dim` path (embedding dimension and every MLP width
scaled together) by x 1/4 to x 4.  Other paths and grids: a sweep file of your own,

    from sweeps.isoflop import isoflop_points
    def points(base):
        return isoflop_points(base, path="top_mlp", sizes=(0.5, 1, 2, 4, 8), n_budgets=5)

Bracketing: a budget whose best run (lowest eval NE) is at the smallest or largest size
tried has no valley inside the grid, and its minimum is a bound, not an estimate.  The
sweep then adds the next size beyond that edge (x 1/2 or x 2) for that budget, runs it,
and looks again, at most `MAX_EXTENSIONS` sizes on each side (`extend`, run by the sweep
runner); a budget still at the edge after that, or whose next size cannot train within
it (one batch costs more than the budget), is said so in the log, and the analysis
flags it (`at_edge`).

Run:  dlrm-scaling sweep isoflop --preset small --out runs/sweeps/isoflop
      dlrm-scaling analyze runs/sweeps/isoflop --out runs/sweeps/isoflop/report
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from dlrm_jax.data.base import NUM_SPARSE
from dlrm_jax.errors import UserError
from dlrm_jax.model.accounting import account

N_BUDGETS = 4
BUDGET_FACTOR = 4.0
SIZES = (0.25, 0.5, 1.0, 2.0, 4.0)
# Scaling paths: which config keys a size factor multiplies.  N in the analysis is the
# dense (FLOP-bearing) parameter count; embedding dimension changes FLOPs (interaction,
# top-MLP input) and table memory, so `width_and_dim` moves both resources at once,
# as the paper's "MLP + embedding" scheme does.
PATHS = {
    "width_and_dim": ("model.embed_dim", "model.bottom_mlp", "model.top_mlp"),
    "dense": ("model.bottom_mlp", "model.top_mlp"),
    "top_mlp": ("model.top_mlp",),
    "bottom_mlp": ("model.bottom_mlp",),
}


def flops_per_example(model_cfg, optimizer: str = "rowwise_adagrad") -> int:
    """Training FLOPs per example; table rows do not enter (lookups are not FLOPs)."""
    return account(model_cfg, [1] * NUM_SPARSE, optimizer).flops_per_example


def scaled_model(base, path: str, factor: float) -> dict[str, Any]:
    """The overrides of one size along `path`: every scaled width x factor, at least 1."""
    if path not in PATHS:
        raise UserError(f"isoflop: unknown scaling path {path!r}; choose one of {', '.join(PATHS)}")
    m = base.model
    out: dict[str, Any] = {}
    for key in PATHS[path]:
        v = getattr(m, key.split(".", 1)[1])
        out[key] = (tuple(max(1, round(w * factor)) for w in v) if isinstance(v, tuple)
                    else max(1, round(v * factor)))
    return out


def budgets(base, n_budgets: int = N_BUDGETS, factor: float = BUDGET_FACTOR) -> list[int]:
    """n_budgets FLOP budgets a `factor` apart, the largest the base run's training FLOPs."""
    if n_budgets < 1 or not factor > 1:
        raise UserError(f"isoflop: need n_budgets >= 1 and factor > 1, got {n_budgets}, {factor}")
    top = flops_per_example(base.model, base.embedding.optimizer) * base.train.examples
    return [int(round(top / factor ** k)) for k in range(n_budgets - 1, -1, -1)]


def isoflop_points(base, *, budget_list: Sequence[float] | None = None, n_budgets: int = N_BUDGETS,
                   budget_factor: float = BUDGET_FACTOR, sizes: Sequence[float] = SIZES,
                   path: str = "width_and_dim") -> list[dict[str, Any]]:
    """Budgets x sizes; `train.examples` spends the budget, in whole batches (>= 1 batch).

    A size whose one batch already costs more than the budget is left out of that
    budget (it cannot train at all within it).
    """
    cs = [int(c) for c in budget_list] if budget_list is not None else budgets(base, n_budgets, budget_factor)
    if any(c <= 0 for c in cs):
        raise UserError(f"isoflop: budgets must be positive, got {cs}")
    b = base.train.batch_size
    out = []
    for c in cs:
        seen = set()
        for s in sizes:
            model = scaled_model(base, path, s)
            key = tuple(sorted((k, str(v)) for k, v in model.items()))
            if key in seen:        # a width that rounds to the same model twice
                continue
            seen.add(key)
            fpe = flops_per_example(dataclasses.replace(base.model, **{
                k.split(".", 1)[1]: v for k, v in model.items()}), base.embedding.optimizer)
            batches = round(c / (fpe * b))
            if batches < 1:
                continue
            out.append({"train.flop_budget": c, **model, "train.examples": batches * b})
    return out


MAX_EXTENSIONS = 2  # sizes added beyond each edge of a budget's grid, at most


def _canonical(v: Any) -> str:
    return ",".join(map(str, v)) if isinstance(v, (tuple, list)) else str(v)


def bracket_points(base, rows: Sequence[dict], log=print, *, path: str = "width_and_dim",
                   sizes: Sequence[float] = SIZES, max_extensions: int = MAX_EXTENSIONS) -> list[dict[str, Any]]:
    """Points one size beyond the edge for every budget whose best finished run is at an edge.

    rows: finished runs (results rows: `train.flop_budget`, the path's keys, `eval_ne`).
    The sizes a budget tried are read back from the rows' model keys, on the ladder of the
    grid's sizes and their halvings and doublings up to `max_extensions` beyond it."""
    low, high = min(sizes), max(sizes)
    ladder = sorted({*sizes, *(low / 2 ** k for k in range(1, max_extensions + 1)),
                     *(high * 2 ** k for k in range(1, max_extensions + 1))})
    keys = PATHS[path]
    by_values = {}
    for f in ladder:
        model = scaled_model(base, path, f)
        by_values.setdefault(tuple(_canonical(model[k]) for k in keys), f)
    tried: dict[float, list[tuple[float, float]]] = {}
    for r in rows:
        if r.get("eval_ne") is None or r.get("train.flop_budget") in (None, ""):
            continue
        f = by_values.get(tuple(_canonical(r.get(k)) for k in keys))
        if f is not None:
            tried.setdefault(float(r["train.flop_budget"]), []).append((f, float(r["eval_ne"])))
    out = []
    for c, runs in sorted(tried.items()):
        best = min(runs, key=lambda x: x[1])[0]
        have = sorted({f for f, _ in runs})
        if len(have) < 2 or have[0] < best < have[-1]:
            continue  # a valley inside the sizes tried (or too few sizes to tell)
        side = "smallest" if best == have[0] else "largest"
        nxt = [f for f in ladder if (f < have[0] if side == "smallest" else f > have[-1])]
        if not nxt:
            log(f"isoflop: budget {c:.3g}: the best size is still the {side} tried (x{best:g}) after "
                f"{max_extensions} added sizes; its minimum is a bound (at_edge in the analysis)")
            continue
        f = nxt[-1] if side == "smallest" else nxt[0]
        added = isoflop_points(base, budget_list=[c], sizes=[f], path=path)
        if not added:
            log(f"isoflop: budget {c:.3g}: the best size is the {side} tried (x{best:g}), and the next one "
                f"(x{f:g}) cannot train within the budget (one batch costs more); its minimum is a bound")
            continue
        log(f"isoflop: budget {c:.3g}: the best size is the {side} tried (x{best:g}); adding x{f:g}")
        out += added
    return out


def points(base):
    return isoflop_points(base)


def extend(base, rows, log=print):
    return bracket_points(base, rows, log)
