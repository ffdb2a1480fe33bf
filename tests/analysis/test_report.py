"""Loading results, the analyze command, its report files, and the no-JAX import rule."""

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib import image

from analysis import ResultsWarning, load_results, summary_text, write_report
from analysis.cli import main

REPO = Path(__file__).resolve().parents[2]
SUMMARY = ["eval_ne", "eval_logloss", "eval_auc", "eval_calibration", "eval_examples", "train_examples",
           "params_embedding", "params_dense", "flops_per_example", "train_flops", "examples_per_s", "wall_s",
           "bayes_ne", "seed", "devices", "jax_version"]


def summary(ne, examples, p_emb, p_dense, fpe, bayes=0.52, status="done"):
    return {"status": status, "eval_ne": ne, "eval_logloss": 0.45 * ne, "eval_auc": 0.75,
            "eval_calibration": 1.0, "eval_examples": 65536, "train_examples": examples,
            "params_embedding": p_emb, "params_dense": p_dense, "flops_per_example": fpe,
            "train_flops": fpe * examples, "examples_per_s": 1e5, "wall_s": 10.0, "bayes_ne": bayes,
            "seed": 0, "devices": 1, "jax_version": "0.10.2"}


def sweep_rows(bayes=0.52, noise=1e-3, seed=0):
    """Rows like the sweep runner's results.csv: data, embedding_dim and compute schemes."""
    rng = np.random.default_rng(seed)
    def jitter():
        return 1 + noise * rng.standard_normal()
    rows = []
    for i, n in enumerate(2 ** np.arange(16, 24)):
        ne = (4.0 * n ** -0.25 + 0.53) * jitter()
        rows.append({"run": f"train.examples={n}", "sweep": "data", "train.examples": int(n),
                     **summary(ne, int(n), 2e6, 1e5, 3e5, bayes)})
    for i, dim in enumerate([4, 8, 16, 32, 64, 128]):
        pe, pd_ = 26 * 20000 * dim, 1e5 * (1 + dim / 16)
        ne = (30.0 * (pe + pd_) ** -0.3 + 0.6) * jitter()
        rows.append({"run": f"model.embed_dim={dim}", "sweep": "embedding_dim", "model.embed_dim": dim,
                     **summary(ne, 2 ** 21, pe, pd_, 6 * (pd_ + 26 * dim), bayes)})
    rows.append({"run": "model.embed_dim=256", "sweep": "embedding_dim", "model.embed_dim": 256,
                 "status": "failed", "error": "RESOURCE_EXHAUSTED: out of memory"})
    # Compute: a grid of model sizes x examples, like sweeps/compute.py; NE follows a
    # two-term law, so at a given FLOP budget one allocation is best.
    for w in (64, 128, 256, 512):
        for n in 2 ** np.arange(15, 21):
            p_dense = 200.0 * w
            ne = (0.54 + 3.0 * p_dense ** -0.3 + 8.0 * n ** -0.3) * jitter()
            rows.append({"run": f"top_mlp-{w}__examples-{n}", "sweep": "compute", "model.top_mlp": f"{w},{w // 2}",
                         **summary(ne, int(n), 2e6, p_dense, 6 * p_dense, bayes)})
    return rows


def write_csv(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def write_run(d: Path, config=None, summ=None):
    d.mkdir(parents=True)
    if config is not None:
        (d / "config.json").write_text(json.dumps(config))
    (d / "metrics.jsonl").write_text('{"examples_seen": 0, "flops_seen": 0, "step": 0, "train_loss": 0.7}\n')
    if summ is not None:
        (d / "summary.json").write_text(json.dumps(summ))


# -- load_results --------------------------------------------------------------------

def test_load_results_csv_drops_failed_runs_with_a_warning(tmp_path):
    csv = write_csv(tmp_path / "sw" / "results.csv", sweep_rows())
    with pytest.warns(ResultsWarning, match=r"left out 1 run\(s\).*embed_dim=256 \(failed: RESOURCE_EXHAUSTED"):
        df = load_results(csv)
    assert len(df) == 38 and set(df["sweep"]) == {"data", "embedding_dim", "compute"}
    assert (df["params_total"] == df["params_embedding"] + df["params_dense"]).all()
    assert df["eval_ne"].dtype == float
    with pytest.warns(ResultsWarning):
        assert len(load_results(tmp_path / "sw")) == 38          # the directory reads its results.csv


def test_load_results_rebuilds_rows_from_run_dirs(tmp_path):
    sw = tmp_path / "top_mlp"
    def cfg(top):
        return {"seed": 0, "train": {"examples": 1024}, "model": {"top_mlp": top, "embed_dim": 16}}
    write_run(sw / "a", cfg([64]), summary(0.8, 1024, 1e5, 1e4, 1e4))
    write_run(sw / "b", cfg([512, 256]), summary(0.7, 1024, 1e5, 2e5, 4e5))
    write_run(sw / "c", cfg([1024]), {"status": "failed", "error": "NaN loss"})
    write_run(sw / "d", cfg([2048]))                                # still running: no summary
    with pytest.warns(ResultsWarning) as rec:
        df = load_results(sw)
    msg = str(rec[0].message)
    assert "top_mlp/c (failed: NaN loss)" in msg and "top_mlp/d (unfinished" in msg and len(rec) == 1
    assert list(df["run"]) == ["a", "b"] and (df["sweep"] == "top_mlp").all()
    assert list(df["model.top_mlp"]) == ["64", "512,256"] and list(df["train.examples"]) == [1024, 1024]
    assert list(df["params_total"]) == [1.1e5, 3e5]


def test_load_results_concatenates_sweep_dirs(tmp_path):
    rows = [r for r in sweep_rows() if r["sweep"] == "data"]
    write_csv(tmp_path / "demo" / "data" / "results.csv", [{k: v for k, v in r.items() if k != "sweep"} for r in rows])
    write_run(tmp_path / "demo" / "data" / "train.examples=99", {"seed": 0})    # unfinished, not in csv
    write_run(tmp_path / "demo" / "compute" / "r1", {"seed": 0}, summary(0.9, 1e6, 1e6, 1e5, 1e5))
    (tmp_path / "demo" / "report").mkdir()                                       # not a sweep: ignored
    with pytest.warns(ResultsWarning, match=r"data/train.examples=99 \(unfinished"):
        df = load_results(tmp_path / "demo")
    assert list(df["sweep"].value_counts().sort_index().items()) == [("compute", 1), ("data", 8)]


def test_load_results_bad_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_results(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no results.csv"):
        load_results(tmp_path / "empty")
    csv = write_csv(tmp_path / "bad" / "results.csv", [{"run": "x", "sweep": "data", "status": "failed", "error": "e"}])
    with pytest.warns(ResultsWarning), pytest.raises(ValueError, match="no finished runs"):
        load_results(csv)


# -- the report ----------------------------------------------------------------------

def test_analyze_writes_report_fits_and_plots(tmp_path, capsys):
    csv = write_csv(tmp_path / "sweep" / "results.csv", sweep_rows())
    out = tmp_path / "report"
    with pytest.warns(ResultsWarning):
        rc = main([str(csv), "--out", str(out), "--bootstrap", "20", "--seed", "1", "--holdout", "1"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "Most NE per FLOP" in printed and "embedding_dim" in printed and "Bayes NE" in printed

    fits = json.loads((out / "fits.json").read_text())
    assert set(fits["schemes"]) == {"data", "embedding_dim", "compute"}
    data = fits["schemes"]["data"]
    assert data["axis"] == "train_examples" and data["n_runs"] == 8
    assert data["fit"]["params"]["beta"] == pytest.approx(0.25, rel=0.1)
    assert data["fit"]["ci"]["gamma"][0] <= data["fit"]["params"]["gamma"] <= data["fit"]["ci"]["gamma"][1]
    assert data["fit"]["holdout"]["k"] == 1 and data["bayes_ne"] == 0.52
    assert fits["schemes"]["embedding_dim"]["axis"] == "params_total"
    comp = fits["schemes"]["compute"]
    assert comp["axis"] == "train_flops" and comp["envelope"] and comp["n_scheme_runs"] == 24
    assert 4 <= comp["n_runs"] < 24                         # the grid's lower envelope only
    flops = [r["train_flops"] for r in sweep_rows() if r["sweep"] == "compute"]
    assert comp["x_range"] == [min(flops), max(flops)]
    assert fits["method"]["huber_delta"] == 1e-3 and fits["method"]["bootstrap"]["samples"] == 20
    assert fits["method"]["bootstrap"]["seed"] == 1
    assert any("RESOURCE_EXHAUSTED" in s for s in fits["runs"]["left_out"])
    assert {(r["scheme"], r["axis"]) for r in fits["comparison"]} >= {("embedding_dim", "params_dense")}
    assert fits["frontier"]["fit"]["n_points"] == len(fits["frontier"]["points"])

    md = (out / "report.md").read_text()
    for needle in ("Huber", "L-BFGS-B", "non-negative least squares", "Bootstrap", "Holdout",
                   "params_embedding + params_dense", "flops_per_example", "## Compute-efficient frontier",
                   "RESOURCE_EXHAUSTED", "--bootstrap 20 --seed 1 --holdout 1"):
        assert needle in md, needle
    names = fits["plots"].values()
    assert {"law_data.png", "residuals_data.png", "schemes.png", "frontier.png"} <= set(names)
    for name in names:
        assert f"({name})" in md
        img = image.imread(out / name)
        assert img.shape[0] > 200 and img.shape[1] > 300 and img[..., :3].std() > 0.05
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []   # no temp files left
    assert summary_text(fits) == printed.split("\nreport:")[0]


def test_report_flags_asymptote_below_bayes_ne(tmp_path):
    rows = [r for r in sweep_rows(bayes=0.58) if r["sweep"] == "data"]
    rows.append({"run": "late", "sweep": "data", "status": "failed", "error": "preempted"})
    fits = write_report(pd.DataFrame(rows), tmp_path / "r", bootstrap=20, holdout=0)   # a DataFrame works too
    assert fits["runs"] == {"used": 8, "left_out": ["data/late (failed: preempted)"]}
    codes = {(f["scope"], f["code"]) for f in fits["flags"]}
    assert ("data", "below_bayes") in codes
    assert "Bayes-optimal NE 0.58" in summary_text(fits)
    assert fits["schemes"]["data"]["fit"]["holdout"] is None
    assert json.loads((tmp_path / "r" / "fits.json").read_text()) == fits


def test_cli_bad_input_exits_2_with_one_line(tmp_path, capsys):
    few = write_csv(tmp_path / "few" / "results.csv", [r for r in sweep_rows() if r["sweep"] == "data"][:3])
    good = write_csv(tmp_path / "good" / "results.csv", sweep_rows()[:8])
    cases = [
        [str(tmp_path / "missing.csv"), "--out", str(tmp_path / "o")],
        [str(few), "--out", str(tmp_path / "o")],
        [str(good), "--out", str(tmp_path / "o"), "--bootstrap", "-1"],
        [str(good), "--out", str(tmp_path / "o"), "--huber-delta", "0"],
        [str(good), "--out", str(tmp_path / "o"), "--axis", "data"],
        [str(good), "--out", str(tmp_path / "o"), "--holdout", "-1"],
        [str(good), "--out", str(tmp_path / "o"), "--bootstrap", "many"],
        [str(good), "--out", str(tmp_path / "o"), "--frobnicate"],
        [str(good)],
    ]
    for argv in cases:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("dlrm-scaling analyze: error: ") and err.count("\n") == 1, (argv, err)
    assert not (tmp_path / "o" / "report.md").exists()


def test_import_does_not_pull_in_jax_and_module_entry_point(tmp_path):
    # The project modules analysis may use are plain Python: the atomic writer, the path layer
    # (gs:// sweeps; stdlib at import), and the TPU slice names the planner shares with
    # `compile --topology` (with their UserError).
    allowed = ("dlrm_jax", "dlrm_jax.run", "dlrm_jax.run.files", "dlrm_jax.run.storage", "dlrm_jax.compile",
               "dlrm_jax.compile.topologies", "dlrm_jax.errors")
    code = ("import sys, analysis, analysis.cli, analysis.report, analysis.plots, "
            "analysis.plan_cli; "
            "bad = [m for m in sys.modules if m == 'jax' "
            "or m.startswith(('jax.', 'jaxlib', 'flax', 'dlrm_jax')) "
            f"and m not in {allowed!r}]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
    r = subprocess.run([sys.executable, "-m", "analysis", "analyze", str(tmp_path / "nope"), "--out", str(tmp_path)],
                       cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 2 and "does not exist" in r.stderr
