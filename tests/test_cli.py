"""The CLI contract: bad input exits 2 with one clear line; `python -m dlrm_jax` works the same."""
import json
import platform
import subprocess
import sys

import pytest

from dlrm_jax.cli import main


@pytest.mark.parametrize("args, message", [
    (["--set", "train.exampels=5"], "unknown config key 'train.exampels'"),
    (["--set", "train.examples=-5"], "train.examples must be positive, got -5"),
    (["--set", "train.examples=100", "--set", "train.batch_size=256"],
     "train.batch_size (256) is larger than the training examples (100)"),
    (["--preset", "huge"], "unknown preset 'huge'"),
])
def test_bad_input_exits_2_with_one_line(args, message, tmp_path, capsys):
    code = main(["train", "--preset", "tiny", *args, "--out", str(tmp_path / "r")]
                if "--preset" not in args else ["train", *args, "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and message in err and err.startswith("dlrm-scaling train: error:")
    assert not (tmp_path / "r").exists()  # nothing half-written


@pytest.mark.parametrize("setting, message", [
    ("data.source=criteo:/nonexistent/dir", "no manifest.json"),
    ("eval.examples=1", "eval examples are all of one class"),
    ("mesh.data=3", "mesh"),
])
def test_bad_data_or_mesh_exits_2_and_writes_nothing(setting, message, tmp_path, capsys):
    out = tmp_path / "r"
    code = main(["train", "--preset", "tiny", "--set", setting, "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err
    assert not (out / "config.json").exists()  # the corrected rerun is not blocked


def test_out_is_a_file(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["train", "--preset", "tiny", "--out", str(f)]) == 2
    assert "is not a directory" in capsys.readouterr().err


def test_nan_exits_2(tmp_path, capsys):
    code = main(["train", "--preset", "tiny", "--set", "train.examples=2048", "--set", "train.learning_rate=1e30",
                 "--set", "embedding.learning_rate=1e30", "--out", str(tmp_path / "r"), "--no-progress"])
    assert code == 2
    assert "train loss is" in capsys.readouterr().err
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["status"] == "failed"


def test_python_m_and_bench_json(tmp_path):
    # Enough timed work (20 steps of 1024 examples, ~tens of ms of CPU) that the kernel's
    # tick-based CPU accounting cannot round it to zero: 4 steps of 128 sometimes did.
    out = subprocess.run([sys.executable, "-m", "dlrm_jax", "bench", "--preset", "tiny", "--batch", "1024",
                          "--steps", "10", "--repeats", "2", "--json"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["examples_per_s"] > 0 and result["batch_size"] == 1024
    # The CLI turned on the allocator setting (glibc) and measured the host cost of the timed steps.
    assert result["malloc_keeps_freed_memory"] == (platform.libc_ver()[0] == "glibc")
    if sys.platform != "win32":
        assert set(result["host_per_step"]) == {"minor_page_faults", "user_s", "system_s"}
        assert result["host_per_step"]["user_s"] > 0
    bad = subprocess.run([sys.executable, "-m", "dlrm_jax", "train", "--preset", "nope", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.strip() == ("dlrm-scaling train: error: unknown preset 'nope'; "
                                                          "choose one of tiny, small, criteo-kaggle, criteo-mlperf, "
                                                          "criteo-mlperf-dcnv2")
