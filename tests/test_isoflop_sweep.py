"""The isoflop sweep: budgets from the base preset, each run's examples spend its budget."""

import numpy as np
import pytest

from dlrm_jax.accounting import account
from dlrm_jax.config import load_config
from dlrm_jax.errors import UserError
from sweeps import load_sweep
from sweeps.isoflop import PATHS, isoflop_points
from sweeps.runner import plan, run_sweep


def fpe(cfg):
    return account(cfg.model, [1] * 26, cfg.embedding.optimizer).flops_per_example


def test_default_points_spend_each_budget(tmp_path):
    points = plan(load_sweep("isoflop"), tmp_path, "small", [])
    base = load_config("small")
    budgets = sorted({p.config.train.flop_budget for p in points})
    assert len(points) == 20 and len(budgets) == 4
    assert budgets[-1] == fpe(base) * base.train.examples          # the base run's own budget
    assert np.allclose(np.diff(np.log(budgets)), np.log(4), atol=1e-9)
    for p in points:
        cfg = p.config
        assert cfg.train.examples % cfg.train.batch_size == 0
        spent = fpe(cfg) * cfg.train.examples
        # Whole batches: within half a batch's FLOPs of the budget.
        assert abs(spent - cfg.train.flop_budget) <= fpe(cfg) * cfg.train.batch_size / 2
    dims = sorted({p.config.model.embed_dim for p in points})
    assert dims == [4, 8, 16, 32, 64]                                # width_and_dim: x 1/4 .. x 4
    big = [p.config for p in points if p.config.model.embed_dim == 64][0]
    assert big.model.top_mlp == (256, 128) and big.model.bottom_mlp == (256, 128)
    assert len({p.name for p in points}) == 20 and all(p.name.startswith("flop_budget-") for p in points)


def test_dry_run_prints_commands_with_the_budget(tmp_path):
    lines = []
    run_sweep("isoflop", tmp_path / "s", "tiny", [], dry_run=True, log=lines.append)
    assert len(lines) >= 12 and all("--set train.flop_budget=" in ln and "--set train.examples=" in ln
                                    for ln in lines)
    assert not (tmp_path / "s").exists()


def test_other_paths_and_bad_options():
    base = load_config("small")
    pts = isoflop_points(base, path="top_mlp", sizes=(0.5, 1, 2), n_budgets=3)
    assert len(pts) == 9 and all(set(p) == {"train.flop_budget", "model.top_mlp", "train.examples"} for p in pts)
    assert set(PATHS) >= {"width_and_dim", "dense", "top_mlp", "bottom_mlp"}
    with pytest.raises(UserError, match="unknown scaling path 'depth'"):
        isoflop_points(base, path="depth")
    with pytest.raises(UserError, match="budgets must be positive"):
        isoflop_points(base, budget_list=[0, 1e9])
    # A size whose one batch costs more than the budget is left out of that budget.
    tiny = isoflop_points(base, budget_list=[fpe(base) * base.train.batch_size * 1.2, 1e12])
    assert len([p for p in tiny if p["train.flop_budget"] < 1e12]) < 5
