"""Bad numbers, files and flags are refused before any work: exit 2, one line naming them.

Every test here calls a CLI entry in process and stops at argument or config time:
no training, no jit compile, no fit.
"""
import pytest

from dlrm_jax.cli import main

# A train whose bad number got through would run (2**100 examples: forever); with a data
# source that does not exist it stops at once with another message instead.  The checks
# under test come first, so with them in place the data source is never reached.
FAIL_FAST = ["--set", "data.source=criteo:/nonexistent"]


def refused(argv, capsys, *fragments) -> str:
    """Run the CLI; assert exit 2 with one stderr line containing every fragment."""
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    for f in fragments:
        assert f in err, (f, err)
    return err


# -- 1. config numbers: finite floats, ints below 2**53 ------------------------------

@pytest.mark.parametrize("setting, key, message", [
    ("train.examples=2**100", "train.examples", "below 2**53"),
    ("train.examples=10**400", "train.examples", "too large"),   # refused uncomputed
    ("train.learning_rate=inf", "train.learning_rate", "finite"),
    ("embedding.exchange_headroom=1e400", "embedding.exchange_headroom", "finite"),
    ("synthetic.zipf=inf", "synthetic.zipf", "finite"),
    ("synthetic.pair_effect=nan", "synthetic.pair_effect", "finite"),
    ("synthetic.dense_effect=-inf", "synthetic.dense_effect", "finite"),
    ("model.top_mlp=64,2**60", "model.top_mlp[1]", "below 2**53"),
    ("model.table_rows=9007199254740993", "model.table_rows", "below 2**53"),
])
def test_config_numbers_must_be_finite_and_in_range(setting, key, message, tmp_path, capsys):
    out = tmp_path / "r"
    refused(["train", "--preset", "tiny", *FAIL_FAST, "--set", setting, "--out", str(out)], capsys,
            "dlrm-scaling train: error:", key, message)
    assert not out.exists()


def test_a_flop_budget_may_pass_2_to_the_53():
    # A paper-scale IsoFLOP budget (1e18 FLOPs) is a label, not a count the run loops over.
    from dlrm_jax.config import load_config
    assert load_config("tiny", ["train.flop_budget=10**18"]).train.flop_budget == 10 ** 18


# -- 2. a world JSON with NaN or Infinity --------------------------------------------

def _world_with(tmp_path, path: str, value: float):
    """The shipped criteo-like world with one number replaced (json.dumps writes NaN/Infinity)."""
    import json

    from dlrm_jax.data.world import resolve
    d = json.loads(resolve("criteo-like").read_text())
    *parents, last = path.replace("[", ".").replace("]", "").split(".")
    node = d
    for k in parents:
        node = node[int(k)] if isinstance(node, list) else node[k]
    node[int(last) if isinstance(node, list) else last] = value
    f = tmp_path / "world.json"
    f.write_text(json.dumps(d))
    return f


@pytest.mark.parametrize("path, value", [
    ("categorical.C4.s", float("nan")),           # trained to a "done" run on main
    ("categorical.C2.head[0]", float("nan")),
    ("teacher.pair_effect", float("inf")),
    ("dense.I3.quantiles[68]", float("inf")),     # ended in a scipy traceback on main
    ("categorical.C7.q", float("nan")),
])
def test_world_json_numbers_must_be_finite(path, value, tmp_path, capsys):
    world = _world_with(tmp_path, path, value)
    out = tmp_path / "r"
    refused(["train", "--preset", "tiny", *FAIL_FAST, "--set", f"synthetic.world={world}",
             "--out", str(out)], capsys, str(world), f"{path} must be a finite number")
    assert not out.exists()


# -- 3. analyze: --target and --axis -------------------------------------------------

@pytest.fixture
def sweep_csv(tmp_path):
    from tests.analysis.test_report import sweep_rows, write_csv
    return write_csv(tmp_path / "sweep" / "results.csv", sweep_rows())


@pytest.mark.parametrize("flags, fragments", [
    (["--target", "nan"], ["--target", "nan"]),
    (["--target", "-1"], ["--target", "-1"]),
    (["--target", "0.6", "--target", "inf"], ["--target", "inf"]),
    # compute is a grid scheme: its envelope fit raised KeyError: 'NOSUCHCOLUMN'
    (["--axis", "compute=NOSUCHCOLUMN"], ["--axis compute=NOSUCHCOLUMN", "no column 'NOSUCHCOLUMN'",
                                          "can be an axis: ", "train_flops", "params_dense"]),
    # data: skipped on main; nosuch: ignored on main
    (["--axis", "data=NOSUCHCOLUMN"], ["--axis data=NOSUCHCOLUMN", "train_examples"]),
    (["--axis", "nosuch=train_flops"], ["--axis nosuch=train_flops", "no scheme 'nosuch'",
                                        "compute, data, embedding_dim"]),
])
def test_analyze_refuses_bad_targets_and_axes(flags, fragments, sweep_csv, tmp_path, capsys):
    out = tmp_path / "report"
    refused(["analyze", str(sweep_csv), "--out", str(out), "--bootstrap", "0", *flags], capsys,
            "dlrm-scaling analyze: error:", *fragments)
    assert not out.exists()


# -- 4. plan: a target the study's smallest budget already reaches ------------------

@pytest.fixture
def isoflop_study(tmp_path):
    from tests.analysis.test_planner import write_study
    return write_study(tmp_path)


@pytest.mark.parametrize("target", ["5", "50"])
def test_plan_refuses_a_target_below_the_budgets_measured(target, isoflop_study, capsys):
    # On main NE 50 was "planned" at the search grid's floor, 1e+07 FLOPs, with 256 examples
    # against an interval of [268, 268]: a point estimate outside its own interval.
    refused(["plan", str(isoflop_study), "--target-ne", target, "--bootstrap", "0"], capsys,
            "dlrm-scaling plan: error:", f"target NE {target} is at or above NE",
            "smallest budget already reaches (run c1e+13_")


def test_plan_still_answers_a_target_within_the_budgets_measured(isoflop_study, capsys):
    assert main(["plan", str(isoflop_study), "--target-ne", "1.5", "--bootstrap", "0"]) == 0
    assert "least training FLOPs to reach NE 1.5" in capsys.readouterr().out


# -- 5. TPU slices: one check for compile and plan -----------------------------------

@pytest.mark.parametrize("flags, fragments", [
    (["--topology", ","], ["--topology ','", "empty name"]),      # compiled for the CPU on main
    (["--topology", "v5e-4,"], ["--topology 'v5e-4,'", "empty name"]),
    # libtpu aborts the process (C++ CHECK, SIGABRT) at 512 slices or more
    (["--topology", "v5e-4", "--slices", "1000"], ["--slices must be 1 to 511", "libtpu"]),
    (["--topology", "v5e-4", "--slices", "512"], ["--slices must be 1 to 511", "libtpu"]),
])
def test_compile_refuses_bad_topologies_and_slices(flags, fragments, tmp_path, capsys):
    hlo = tmp_path / "step.hlo"
    refused(["compile", "--preset", "tiny", *flags, "--hlo-out", str(hlo)], capsys,
            "dlrm-scaling compile: error:", *fragments)
    assert not hlo.exists()


@pytest.mark.parametrize("name", ["v5p:3x3x3", "v5e:2x2x2", "v6e-12"])
def test_plan_refuses_the_slices_compile_refuses(name, isoflop_study, capsys):
    refused(["plan", str(isoflop_study), "--flops", "2e14", "--bootstrap", "0", "--topology", name],
            capsys, f"--topology {name!r}: unknown TPU topology")


def test_plan_and_compile_accept_the_same_slices():
    from analysis.planner import PlanError, topology_memory
    from dlrm_jax.compile import topologies as tpu_topologies
    from dlrm_jax.errors import UserError
    names = tpu_topologies.accepted_names() + ["v5p:4x4x4", "v5litepod-16", "tpu7x:2x2x1",
                                               "v5p:3x3x3", "v4-6", "v9-8", "v5e"]
    for name in names:
        try:
            s = tpu_topologies.parse(name)
        except UserError:
            with pytest.raises(PlanError):
                topology_memory(name)
            continue
        assert topology_memory(name)[0] == s.chips * s.hbm_bytes_per_chip * 0.75, name
    assert topology_memory("tpu7x-8")[0] == 4 * 192 * 2 ** 30 * 0.75   # main's plan refused it


# -- 6. outputs checked writable before the work -------------------------------------

@pytest.fixture
def a_file(tmp_path):
    f = tmp_path / "a_file"
    f.write_text("x")
    return f


def test_compile_checks_hlo_out_before_compiling(tmp_path, a_file, capsys):
    # On main both compiled the step first, then raised IsADirectoryError / NotADirectoryError.
    refused(["compile", "--preset", "tiny", "--hlo-out", str(tmp_path)], capsys,
            f"--hlo-out {tmp_path}: is a directory")
    refused(["compile", "--preset", "tiny", "--hlo-out", str(a_file / "step.hlo")], capsys,
            f"--hlo-out {a_file / 'step.hlo'}: {a_file} is a file, not a directory")


def test_calibrate_checks_out_and_teacher_before_fitting(tmp_path, a_file, capsys):
    # --src does not exist: the --out check comes before the source is read at all (on main
    # a directory --out was found after the whole fit: 11.6 s on 4,000 rows, ~110 s on more).
    src = str(tmp_path / "no_such_prepared_dir")
    refused(["data", "calibrate", "--src", src, "--out", str(tmp_path)], capsys,
            f"--out {tmp_path}: is a directory")
    refused(["data", "calibrate", "--src", src, "--out", str(a_file / "w.json")], capsys,
            f"{a_file} is a file, not a directory")
    refused(["data", "calibrate", "--src", src, "--out", str(tmp_path / "w.json"),
             "--teacher", "nan,1,1"], capsys, "--teacher", "finite")
    assert not (tmp_path / "w.json").exists()


def test_analyze_checks_out_before_fitting(sweep_csv, a_file, capsys):
    refused(["analyze", str(sweep_csv), "--out", str(a_file), "--bootstrap", "0"], capsys,
            f"--out {a_file}: {a_file} is a file, not a directory")


# -- 7. criteo-multihot: --out and bag sizes checked before writing ------------------

@pytest.fixture
def one_hot(tmp_path):
    from dlrm_jax.data.criteo import format as cf
    from dlrm_jax.data.criteo.prepare import PrepareOptions, prepare
    (tmp_path / "a.tsv").write_bytes(cf.format_rows(cf.synthetic_rows(300, seed=0)))
    prepare([tmp_path / "a.tsv"], tmp_path / "one",
            PrepareOptions(hash_rows=tuple(range(100, 126))), log=None)
    return tmp_path / "one"


def _sizes(first: int) -> str:
    return ",".join([str(first)] + ["1"] * 25)


def test_multihot_refuses_a_file_as_out(one_hot, a_file, capsys):
    # NotADirectoryError on main
    refused(["data", "criteo-multihot", "--src", str(one_hot), "--out", str(a_file)], capsys,
            f"--out {a_file}: {a_file} is a file, not a directory")


def test_multihot_refuses_bags_too_large_for_memory_and_leaves_nothing(one_hot, tmp_path, capsys):
    out = tmp_path / "hot"
    # 100 rows x 10**12 ids: a MemoryError on main, after creating OUT/tables
    refused(["data", "criteo-multihot", "--src", str(one_hot), "--out", str(out),
             "--multi-hot", _sizes(10 ** 12)], capsys, "--multi-hot: table C1", "GiB of memory")
    assert not out.exists()


def test_multihot_refuses_bags_too_large_for_the_disk(one_hot, tmp_path, capsys, monkeypatch):
    import shutil
    from collections import namedtuple
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10 ** 6, 10 ** 6 - 1000, 1000))
    out = tmp_path / "hot"
    refused(["data", "criteo-multihot", "--src", str(one_hot), "--out", str(out),
             "--multi-hot", _sizes(2)], capsys,
            f"--out {out}: the multi-hot tables and shards need", "GiB free")
    assert not out.exists()


# -- 8. plan on a directory of sweeps: the table size of the compute runs ------------

def _demo_dir(tmp_path, with_configs: bool):
    """DEMO/compute (widths x examples, no model.embed_dim column) beside DEMO/embedding_dim
    (which has one): load_results joins them, so the compute runs' column is empty."""
    import json

    import pandas as pd

    from tests.analysis.test_planner import ROWS, law
    demo = tmp_path / "demo"
    rows = [{"run": f"w{w}_d{int(d)}", "sweep": "compute", "status": "done",
             "model.top_mlp": f"{64 * w:g},{32 * w:g}", "train_examples": d,
             "params_dense": 4e5 * w,
             "params_embedding": ROWS * 16, "flops_per_example": 2.4e6 * w + 1e5,
             "train_flops": (2.4e6 * w + 1e5) * d, "eval_ne": law(4e5 * w, d)}
            for w in (0.5, 1, 2) for d in (1e7, 2e7, 4e7, 8e7)]
    emb = [{"run": f"dim{d}", "sweep": "embedding_dim", "status": "done", "model.embed_dim": d,
            "train_examples": 1e7, "params_dense": 4e5, "params_embedding": ROWS * d,
            "flops_per_example": 2.5e6, "train_flops": 2.5e13, "eval_ne": 0.9 - 0.01 * d}
           for d in (4, 8, 16)]
    for sweep, table in (("compute", rows), ("embedding_dim", emb)):
        (demo / sweep).mkdir(parents=True)
        pd.DataFrame(table).to_csv(demo / sweep / "results.csv", index=False)
    if with_configs:
        for r in rows:
            (demo / "compute" / r["run"]).mkdir()
            config = json.dumps({"model": {"embed_dim": 16}})
            (demo / "compute" / r["run"] / "config.json").write_text(config)
    return demo


def test_plan_on_a_directory_of_sweeps_reads_the_table_size_from_config(tmp_path, capsys):
    demo = _demo_dir(tmp_path, with_configs=True)
    assert main(["plan", str(demo), "--flops", "1e15", "--bootstrap", "0"]) == 0
    out = capsys.readouterr().out
    gib = 50_000 * (16 + 1) * 4 / 2 ** 30               # ROWS x (D weights + 1 Adagrad) x float32
    assert f"embedding tables: {gib:.3g} GiB" in out and "nan" not in out   # "nan GiB" on main


def test_plan_says_which_run_lacks_the_table_size(tmp_path, capsys):
    demo = _demo_dir(tmp_path, with_configs=False)
    assert main(["plan", str(demo), "--flops", "1e15", "--bootstrap", "0"]) == 0
    out = capsys.readouterr().out
    assert "nan" not in out and "embedding tables: size unknown (run w1_d" in out


# -- 9. compile --help lists every preset ---------------------------------------------

def test_compile_help_lists_every_preset(capsys):
    from dlrm_jax.config import PRESETS
    with pytest.raises(SystemExit) as e:
        main(["compile", "--help"])
    assert e.value.code == 0
    text = "".join(capsys.readouterr().out.split())      # argparse wraps the help, also at "-"
    assert f"namedpreset:{','.join(PRESETS)}" in text       # criteo-mlperf-dcnv2 was missing


# -- 10. the README's demo run count -------------------------------------------------

def test_readme_counts_the_demos_runs():
    import re
    from pathlib import Path

    from dlrm_jax.config import load_config
    from dlrm_jax.demo import PRESET, SWEEPS
    from sweeps import load_sweep
    runs = sum(len(load_sweep(name).points(load_config(PRESET, overrides)))
               for name, overrides in SWEEPS.items())
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    said = re.search(r"(\d+) training runs and the analysis", " ".join(readme.split()))
    assert said and int(said.group(1)) == runs == 28          # the README said 27


# -- more flags: counts and seeds of analyze, plan and compile -----------------------

@pytest.mark.parametrize("flags, fragment", [
    (["--bootstrap", str(10 ** 11)], "--bootstrap must be 0 to 100,000"),   # a MemoryError on main
    (["--seed", "-1"], "--seed must be >= 0"),                    # "no scheme could be fitted"
    (["--huber-delta", "inf"], "--huber-delta must be a positive finite number"),
])
def test_analyze_refuses_bad_fit_flags(flags, fragment, sweep_csv, tmp_path, capsys):
    refused(["analyze", str(sweep_csv), "--out", str(tmp_path / "r"), *flags], capsys, fragment)


@pytest.mark.parametrize("flags, fragment", [
    (["--bootstrap", str(10 ** 11)], "--bootstrap must be 0 to 100,000"),   # a MemoryError on main
    (["--seed", "-1"], "--seed must be >= 0"),                    # "cannot fit the joint law"
])
def test_plan_refuses_bad_fit_flags(flags, fragment, isoflop_study, capsys):
    refused(["plan", str(isoflop_study), "--flops", "2e14", *flags], capsys, fragment)


def test_compile_refuses_more_fake_devices_than_any_slice(capsys, monkeypatch):
    from dlrm_jax.compile import report as compile_report

    def no_child(*a, **k):      # on main: a child JAX with 10**8 CPU devices, which never starts
        raise AssertionError("re-ran compile in a child process")
    monkeypatch.setattr(compile_report.subprocess, "run", no_child)
    refused(["compile", "--preset", "tiny", "--devices", str(10 ** 8)], capsys,
            "--devices must be 1 to 8192")
