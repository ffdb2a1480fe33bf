"""`dlrm-scaling plan`: answers from a study with a known joint law; bad input exits 2."""

import numpy as np
import pandas as pd
import pytest

from analysis import plan_cli
from analysis.planner import PlanError, load_study, parse_bytes, plan_for_flops, plan_for_target, topology_memory

LAW = dict(E=0.5, A=40.0, alpha=0.34, B=60.0, beta=0.28)
A_TRUE = LAW["beta"] / (LAW["alpha"] + LAW["beta"])
G_TRUE = (LAW["alpha"] * LAW["A"] / (LAW["beta"] * LAW["B"])) ** (1 / (LAW["alpha"] + LAW["beta"]))
N_PER_WIDTH = 1000.0      # params_dense = 1000 x the width factor; flops per example = 6 N
ROWS = 50_000             # table rows of the study (params_embedding = rows x D)


def law(n, d):
    return LAW["E"] + LAW["A"] * n ** -LAW["alpha"] + LAW["B"] * d ** -LAW["beta"]


def n_opt(c):
    return G_TRUE * (c / 6) ** A_TRUE


def write_study(tmp_path, noise=2e-3, seed=0):
    """An IsoFLOP results.csv: 4 budgets x 5 sizes along a path that scales D and widths."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in 1e13 * 4.0 ** np.arange(4):
        for j in range(-2, 3):
            n = n_opt(c) * 2.0 ** (j + rng.uniform(-0.3, 0.3))
            s = n / N_PER_WIDTH
            dim, widths = 4 * s, (16 * s, 8 * s)
            d = int(round(c / (6 * n) / 64)) * 64
            rows.append({"run": f"c{c:.0e}_j{j}", "sweep": "isoflop", "status": "done", "train.flop_budget": c,
                         "model.embed_dim": dim, "model.top_mlp": f"{widths[0]},{widths[1]}",
                         "train.batch_size": 64, "train_examples": d, "params_dense": n,
                         "params_embedding": ROWS * dim, "flops_per_example": 6 * n, "train_flops": 6 * n * d,
                         "eval_ne": law(n, d) * (1 + noise * rng.standard_normal())})
    out = tmp_path / "study"
    out.mkdir()
    pd.DataFrame(rows).to_csv(out / "results.csv", index=False)
    return out


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return load_study(write_study(tmp_path_factory.mktemp("plan")), bootstrap=30)


def test_flops_question_finds_the_known_optimum(study):
    c = 2e14
    p = plan_for_flops(study, c)
    assert p.n_dense[0] == pytest.approx(n_opt(c), rel=0.08)
    assert p.n_dense[1] <= n_opt(c) <= p.n_dense[2]
    best = law(n_opt(c), c / (6 * n_opt(c)))
    assert p.ne[0] == pytest.approx(best, rel=0.01)
    assert p.ne[1] <= best <= p.ne[2]
    # The config follows the path: D and widths are the same multiples of N / 1000.
    s = p.n_dense[0] / N_PER_WIDTH
    assert p.sets["model.embed_dim"] == round(4 * s)
    assert p.sets["model.top_mlp"] == f"{round(16 * s)},{round(8 * s)}"
    ex = p.sets["train.examples"]
    assert ex % 64 == 0 and ex * 6 * p.n_dense[0] == pytest.approx(c, rel=0.01)
    assert p.warnings == []


def test_target_question_inverts_the_best_ne(study):
    c_true = 3e14
    target = law(n_opt(c_true), c_true / (6 * n_opt(c_true)))
    p = plan_for_target(study, target)
    assert p.flops[0] == pytest.approx(c_true, rel=0.15)
    assert p.flops[1] <= c_true <= p.flops[2]
    assert p.n_dense[1] <= n_opt(c_true) <= p.n_dense[2]
    d_true = c_true / (6 * n_opt(c_true))
    assert p.examples[1] <= d_true <= p.examples[2]
    assert p.sets["train.examples"] * 6 * p.n_dense[0] == pytest.approx(p.flops[0], rel=0.01)


def test_unreachable_target_and_extrapolation_warning(study):
    with pytest.raises(PlanError, match="at or below the fitted asymptote E = 0.5"):
        plan_for_target(study, 0.45)
    p = plan_for_flops(study, 6.4e14 * 1000)
    assert any("1e+03x above the largest budget" in w for w in p.warnings)
    inside = plan_for_flops(study, 6.4e14 * 50)           # within 100x: a note, no warning
    assert inside.warnings == [] and any("within 100x" in n for n in inside.notes)


def test_bayes_ne_bounds_targets_and_flags_overshooting_predictions(study):
    import dataclasses
    s = dataclasses.replace(study, bayes_ne=0.7)
    with pytest.raises(PlanError, match="below the Bayes-optimal NE 0.7 .* unreachable by any model"):
        plan_for_target(s, 0.69)
    far = plan_for_flops(s, 6.4e14 * 1e4)          # the law keeps falling toward E = 0.5 < 0.7
    assert far.ne[0] < 0.7 and any("below the Bayes-optimal NE" in w for w in far.warnings)
    assert not any("Bayes" in w for w in plan_for_flops(s, 2e14).warnings)


def test_memory_bound_caps_table_rows(study):
    p = plan_for_flops(study, 2e14, memory=1e6)
    d = p.sets["model.embed_dim"]
    cap = p.sets["model.table_rows"]
    assert cap == int(1e6 // (4 * (d + 1)) // 26)
    assert p.table_bytes <= 1e6 and any("capped at" in w for w in p.warnings)
    roomy = plan_for_flops(study, 2e14, memory=1e12)
    assert "model.table_rows" not in roomy.sets
    assert roomy.table_bytes == pytest.approx(ROWS * 4 * (d + 1), rel=1e-9)   # weights + row-wise Adagrad


def test_sizes_and_topologies():
    assert parse_bytes("16GiB") == 16 * 2**30
    assert parse_bytes("40GB") == 40e9
    assert parse_bytes("1000") == 1000
    with pytest.raises(PlanError, match="--memory expects"):
        parse_bytes("lots")
    b, _ = topology_memory("v5p:4x4x4")                      # 64 chips x 95 GiB x 0.75
    assert b == 64 * 95 * 2**30 * 0.75
    assert topology_memory("v5p-128")[0] == b              # v5p-N counts TensorCores
    assert topology_memory("v6e-16")[0] == 16 * 32 * 2**30 * 0.75
    with pytest.raises(PlanError, match="--topology 'v9-8'"):
        topology_memory("v9-8")
    # The names compile accepts (dlrm_jax.compile.topologies): tpu7x-N counts TensorCores, two a chip.
    assert topology_memory("tpu7x-8")[0] == 4 * 192 * 2**30 * 0.75
    with pytest.raises(PlanError, match="--topology 'v5p:3x3x3': unknown TPU topology"):
        topology_memory("v5p:3x3x3")                       # no such slice: compile refuses it too


def test_cli_answers_and_bad_input_exit_2(tmp_path, capsys):
    d = write_study(tmp_path)
    assert plan_cli.main([str(d), "--flops", "2e14", "--bootstrap", "10"]) == 0
    out = capsys.readouterr().out
    assert "best predicted NE at 2e+14 training FLOPs" in out and "--set model.embed_dim=" in out
    assert plan_cli.main([str(d), "--target-ne", "0.3", "--bootstrap", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unreachable" in err
    assert plan_cli.main([str(tmp_path / "nope"), "--flops", "1e14"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert plan_cli.main([str(d), "--flops", "1e20", "--bootstrap", "0"]) == 0
    assert "warning:" in capsys.readouterr().err
    assert plan_cli.main([str(d)]) == 2                    # neither --flops nor --target-ne
    assert plan_cli.main([str(d), "--flops", "1e14", "--memory", "x"]) == 2


def test_study_without_size_and_data_grid_is_rejected(tmp_path):
    d = tmp_path / "data_only"
    d.mkdir()
    pd.DataFrame({"run": ["a", "b", "c"], "sweep": "data", "status": "done", "eval_ne": [0.9, 0.8, 0.7],
                  "train_examples": [1, 2, 4], "params_dense": 10, "train_flops": [6, 12, 24]}
                 ).to_csv(d / "results.csv", index=False)
    with pytest.raises(PlanError, match="no runs vary both model size and data"):
        load_study(d, bootstrap=0)


def test_package_cli_dispatches_plan(tmp_path, capsys):
    from dlrm_jax.cli import main
    assert main(["plan", str(tmp_path / "missing"), "--flops", "1e12"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dlrm-scaling plan: error:") and "does not exist" in err


def test_compute_grid_study_is_used_when_there_are_no_isoflop_runs(tmp_path):
    """The demo's layout: DIR/compute/results.csv (top-MLP widths x example counts) and run
    directories whose config.json holds the embedding dimension the results do not."""
    import json
    rng = np.random.default_rng(0)
    rows = []
    for w in (0.5, 1, 2):
        n = 4e5 * w
        for d in (1e7, 2e7, 4e7, 8e7):
            rows.append({"run": f"top_mlp-{w}__examples-{int(d)}", "sweep": "compute", "status": "done",
                         "model.top_mlp": f"{64 * w:g},{32 * w:g}", "train_examples": d, "params_dense": n,
                         "params_embedding": ROWS * 16, "flops_per_example": 6 * n + 1e5,
                         "train_flops": (6 * n + 1e5) * d, "bayes_ne": 0.3,
                         "eval_ne": law(n, d) * (1 + 1e-3 * rng.standard_normal())})
    demo = tmp_path / "demo"
    (demo / "compute").mkdir(parents=True)
    pd.DataFrame(rows).to_csv(demo / "compute" / "results.csv", index=False)
    ref = sorted(rows, key=lambda r: r["params_dense"])[len(rows) // 2]["run"]
    (demo / "compute" / ref).mkdir()
    (demo / "compute" / ref / "config.json").write_text(json.dumps({"model": {"embed_dim": 16}}))
    s = load_study(demo, bootstrap=0)
    assert s.which == "compute" and s.path.keys == ("model.top_mlp",)
    assert s.table_rows == ROWS and s.bayes_ne == 0.3
    assert s.path.flops_per_example(1e6) == pytest.approx(6e6 + 1e5)    # the fixed part is kept
    p = plan_for_flops(s, 1e15, memory=1e5)
    assert set(p.sets) == {"model.top_mlp", "train.examples", "model.table_rows"}
    assert p.sets["model.table_rows"] == int(1e5 // (4 * 17) // 26)
    # NE that does not depend on model size (the demo's top-MLP grid): the smallest model
    # in the search wins, reported as a bound 10x below the sizes measured.
    flat = pd.DataFrame(rows)
    flat["eval_ne"] = [0.4 + 60 * r["train_examples"] ** -0.28 for r in rows]
    flat.to_csv(demo / "compute" / "results.csv", index=False)
    q = plan_for_flops(load_study(demo, bootstrap=0), 1e15)
    assert q.n_dense[0] == pytest.approx(2e5 / 10, rel=0.02)
    assert any("a smaller model always wins" in w for w in q.warnings)


def test_plan_on_a_slice_gives_hours_and_chip_hours(tmp_path, capsys):
    import json
    import re
    d = write_study(tmp_path)
    assert plan_cli.main([str(d), "--flops", "2e14", "--bootstrap", "0", "--topology", "v5p-128"]) == 0
    out = capsys.readouterr().out
    # at the chip's peak: 2e14 FLOPs over 64 chips x 459 TFLOP/s
    hours = float(re.search(r"  ([0-9.e+-]+) hours, ([0-9.e+-]+) chip-hours", out).group(1))
    assert "ESTIMATE on v5p-128 (64 chips)" in out and "lower bound" in out
    assert hours == pytest.approx(2e14 / (64 * 459e12) / 3600, rel=1e-2)
    # at a compile report's estimated rate: per-chip model FLOPs of a step over the step's time
    report = {"target": "v5p-128", "fits": True, "flops_analytic": 1e12,
              "estimate": {"available": True, "step_s_high": 0.01, "step_s_low": 0.005}}
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"target": "v6e-8"}) + "\n" + json.dumps(report) + "\n")
    assert plan_cli.main([str(d), "--flops", "2e14", "--bootstrap", "0", "--topology", "v5p-128",
                          "--compile-report", str(f)]) == 0
    m = re.search(r"  ([0-9.e+-]+) hours \(best ([0-9.e+-]+)\), ([0-9.e+-]+) chip-hours", capsys.readouterr().out)
    assert float(m.group(1)) == pytest.approx(2e14 / (64 * 1e12 / 0.01) / 3600, rel=1e-2)
    assert float(m.group(2)) == pytest.approx(float(m.group(1)) / 2, rel=1e-2)
    assert float(m.group(3)) == pytest.approx(64 * float(m.group(1)), rel=1e-2)
    # a report of another slice, or one without --topology: one line, exit 2
    assert plan_cli.main([str(d), "--flops", "2e14", "--topology", "v6e-16", "--compile-report", str(f)]) == 2
    assert "no report for --topology v6e-16" in capsys.readouterr().err
    assert plan_cli.main([str(d), "--flops", "2e14", "--compile-report", str(f)]) == 2
    assert "needs --topology" in capsys.readouterr().err
