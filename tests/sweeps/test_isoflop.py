"""The isoflop sweep: budgets from the base preset, each run's examples spend its budget."""

import numpy as np
import pytest

from dlrm_jax.config import load_config
from dlrm_jax.errors import UserError
from dlrm_jax.model.accounting import account
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


def _rows(base, ne_by_factor, budget):
    from sweeps.isoflop import scaled_model
    rows = []
    for f, ne in ne_by_factor.items():
        m = scaled_model(base, "width_and_dim", f)
        rows.append({"train.flop_budget": budget, "eval_ne": ne,
                     **{k: ",".join(map(str, v)) if isinstance(v, tuple) else v for k, v in m.items()}})
    return rows


def test_a_budget_whose_best_size_is_at_an_edge_gets_the_next_size_beyond_it():
    from sweeps.isoflop import bracket_points, budgets
    base = load_config("small", [])
    c = budgets(base)[-1]
    said = []
    # valley inside: nothing to add
    assert bracket_points(base, _rows(base, {0.25: 0.9, 0.5: 0.8, 1: 0.7, 2: 0.75, 4: 0.8}, c), said.append) == []
    # best at the largest size: x8 is added for that budget, spending it
    added = bracket_points(base, _rows(base, {0.25: 0.9, 0.5: 0.8, 1: 0.7, 2: 0.65, 4: 0.6}, c), said.append)
    assert len(added) == 1 and added[0]["model.embed_dim"] == base.model.embed_dim * 8
    assert added[0]["train.flop_budget"] == c and "adding x8" in said[-1]
    # best at the smallest: x1/8
    added = bracket_points(base, _rows(base, {0.25: 0.6, 0.5: 0.8, 1: 0.9, 2: 0.95, 4: 0.99}, c), said.append)
    assert [p["model.embed_dim"] for p in added] == [max(1, round(base.model.embed_dim / 8))]
    # two sizes added on that side already: bounded, and said so
    rows = _rows(base, {0.25 / 4: 0.5, 0.25 / 2: 0.55, 0.25: 0.6, 0.5: 0.8, 1: 0.9}, c)
    assert bracket_points(base, rows, said.append) == [] and "its minimum is a bound" in said[-1]


EXTENDING_SWEEP = '''
"""Two tiny runs, then a third once both are done (as an IsoFLOP sweep brackets its valley)."""
def points(base):
    return [{"train.examples": 512}, {"train.examples": 1024}]

def extend(base, rows, log=print):
    done = {r["train.examples"] for r in rows}
    return [{"train.examples": 2048}] if {512, 1024} <= done else []
'''


def test_the_runner_runs_the_points_a_sweep_adds_and_a_rerun_adds_none(tmp_path):
    import csv
    sweep_file = tmp_path / "grow.py"
    sweep_file.write_text(EXTENDING_SWEEP)
    out, lines = tmp_path / "s", []
    rows = run_sweep(str(sweep_file), out, "tiny", ["eval.examples=1024"], log=lines.append)
    assert sorted(r["train_examples"] for r in rows) == [512, 1024, 2048]
    assert any("1 point(s) added beyond the grid, 1 to run" in x for x in lines)
    with open(out / "results.csv") as f:
        assert sorted(int(r["train.examples"]) for r in csv.DictReader(f)) == [512, 1024, 2048]
    again = []
    rows = run_sweep(str(sweep_file), out, "tiny", ["eval.examples=1024"], log=again.append)
    assert len(rows) == 3 and "2 already done, 0 to run" in again[0]
    assert any("1 point(s) added beyond the grid, 0 to run" in x for x in again)
