"""IsoFLOP profiles: K training-FLOP budgets x M model sizes, each run sized to spend its budget.

For each budget C and model size N, `train.examples` is set so that the run's training
FLOPs (flops_per_example from dlrm_jax/accounting.py x examples) equal C, rounded to
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

Run:  dlrm-scaling sweep isoflop --preset small --out runs/sweeps/isoflop
      dlrm-scaling analyze runs/sweeps/isoflop --out runs/sweeps/isoflop/report
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from dlrm_jax.accounting import account
from dlrm_jax.data.base import NUM_SPARSE
from dlrm_jax.errors import UserError

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


def points(base):
    return isoflop_points(base)
