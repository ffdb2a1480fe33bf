"""A damaged checkpoint costs one checkpoint interval, not the run.

A finished reference run (checkpoints at steps 24 and 32 kept) is copied, its
summary removed (a run killed after its last checkpoint), and the newest
checkpoint damaged the ways disks and copies damage files.  The rerun must
set the damaged checkpoint aside, resume from step 24, and end exactly where
the reference ended; with no readable checkpoint it must stop with one line
(or, when asked, start over).
"""
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from dlrm_jax import config as C
from dlrm_jax.cli import main
from dlrm_jax.errors import UserError
from dlrm_jax.run import checkpoint
from dlrm_jax.train import train

# 32 steps of 256; a checkpoint every 8 steps, the last two (24, 32) kept; evals at 16 and 32.
ARGS = ["train.examples=2**13", "checkpoint.every_examples=2048", "train.eval_every_examples=4096", "mesh.data=1"]
EVAL = ("eval_ne", "eval_logloss", "eval_auc", "eval_calibration")


def _cfg(*extra: str) -> C.Config:
    return C.load_config("tiny", [*ARGS, *extra])


def _cli(out: Path) -> list[str]:
    return ["train", "--preset", "tiny", *[x for a in ARGS for x in ("--set", a)], "--out", str(out), "--no-progress"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    ref = tmp_path_factory.mktemp("fallback") / "ref"
    train(_cfg(), ref, progress=False, verbose=False)
    assert sorted(p.name for p in (ref / "checkpoints").iterdir()) == ["24", "32"]
    return ref


def _interrupted_copy(reference: Path, dest: Path) -> Path:
    shutil.copytree(reference, dest)
    (dest / "summary.json").unlink()
    return dest


def _lines(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def _metrics(run: Path) -> list[dict]:
    """The train-loss and eval lines, without the (run-time dependent) wall_s."""
    return [{k: v for k, v in x.items() if k != "wall_s"} for x in _lines(run) if "event" not in x]


def _events(run: Path) -> list[dict]:
    return [x for x in _lines(run) if x.get("event") == checkpoint.UNREADABLE_EVENT]


def _truncate_to_half(f: Path) -> None:
    os.truncate(f, f.stat().st_size // 2)


def _largest_file(d: Path) -> Path:
    return max((p for p in d.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


# The ways a committed checkpoint `<step>/` gets damaged.  Orbax 0.12 writes
# `_CHECKPOINT_METADATA` (our layout and run time) beside the item `default/`:
# `_METADATA` and `_sharding` (the tree and its shardings), `manifest.ocdbt` and
# `d/` (the OCDBT index), `ocdbt.process_<i>/d/` (the arrays' bytes).
DAMAGE = {
    # The first case: FAILED_PRECONDITION ... "_sharding": Invalid JSON.
    "sharding_metadata": (lambda c: os.truncate(c / "default" / "_sharding", 100), "_sharding"),
    # Orbax logs a damaged step metadata file and reads it as empty: the run time would be lost silently.
    "step_metadata": (lambda c: os.truncate(c / "_CHECKPOINT_METADATA", 10), "_CHECKPOINT_METADATA"),
    # The second case: OUT_OF_RANGE: Error opening "zarr" driver (the index under default/d/).
    "index_file": (lambda c: [_truncate_to_half(p) for p in (c / "default" / "d").iterdir()], "OUT_OF_RANGE"),
    # The largest file holds array bytes (the embedding tables): half of it is gone.
    "array_file": (lambda c: _truncate_to_half(_largest_file(c / "default")), "OUT_OF_RANGE"),
    # A directory lost in a bad copy: the one that holds the arrays' bytes.  TensorStore
    # reads the missing files as empty ("Truncated Zstd-compressed stream"); the reason names the checkpoint.
    "missing_directory": (lambda c: shutil.rmtree(_largest_file(c / "default").parent.parent),
                          "checkpoints/32/default"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_newest_checkpoint_falls_back_to_the_one_before(reference, tmp_path, damage, capsys):
    run = _interrupted_copy(reference, tmp_path / "run")
    damage_fn, reason = DAMAGE[damage]
    damage_fn(run / "checkpoints" / "32")
    damaged = sorted(str(p.relative_to(run / "checkpoints" / "32")) for p in (run / "checkpoints" / "32").rglob("*"))

    summary = train(_cfg(), run, progress=False)

    err = capsys.readouterr().err
    said = [line for line in err.splitlines() if "is unreadable" in line]
    assert len(said) == 1 and said[0].startswith(f"checkpoint 32 in {run / 'checkpoints'} is unreadable (")
    assert reason in said[0] and said[0].endswith("moved to 32.unreadable, resuming from step 24")
    assert f"resuming from step 24 ({24 * 256} examples)" in err
    want = json.loads((reference / "summary.json").read_text())
    assert {k: summary[k] for k in EVAL} == {k: want[k] for k in EVAL}  # exactly, not approximately
    assert _metrics(run) == _metrics(reference)  # every line once, same values
    # The damaged checkpoint is kept, as it was; a new 32 was saved beside it.
    aside = run / "checkpoints" / "32.unreadable"
    assert sorted(str(p.relative_to(aside)) for p in aside.rglob("*")) == damaged
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["24", "32", "32.unreadable"]
    (event,) = _events(run)
    assert event["step"] == 24 and event["examples_seen"] == 24 * 256 and event["checkpoint"] == 32
    assert reason in event["reason"] and event["moved_to"] == "checkpoints/32.unreadable"
    assert event["flops_seen"] == want["flops_per_example"] * 24 * 256


def test_no_readable_checkpoint_exits_2_with_one_line_and_moves_nothing(reference, tmp_path):
    run = _interrupted_copy(reference, tmp_path / "run")
    os.truncate(run / "checkpoints" / "32" / "default" / "_sharding", 100)
    shutil.rmtree(_largest_file(run / "checkpoints" / "24" / "default").parent.parent)
    before = (run / "metrics.jsonl").read_text()
    done = subprocess.run([sys.executable, "-m", "dlrm_jax", *_cli(run)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()  # one line: no traceback, no Orbax noise at exit
    assert line.startswith(f"dlrm-scaling train: error: no readable checkpoint in {run / 'checkpoints'} (32: ")
    assert "; 24: " in line and "Invalid JSON" in line and "--restart-if-unreadable" in line
    # Nothing moved or rewritten: the same command says the same, and the opt-in still has them.
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["24", "32"]
    assert (run / "metrics.jsonl").read_text() == before and not (run / "summary.json").exists()


def test_restart_if_unreadable_sets_all_aside_and_starts_over(reference, tmp_path, capsys):
    run = _interrupted_copy(reference, tmp_path / "run")
    for step in ("32", "24"):
        os.truncate(run / "checkpoints" / step / "default" / "_METADATA", 100)
    # The flag is accepted on resume although config.json says false (it says how to resume, not what to train).
    assert main([*_cli(run), "--restart-if-unreadable"]) == 0
    err = capsys.readouterr().err
    assert [line.split(" is unreadable")[0] for line in err.splitlines() if "is unreadable" in line] == [
        f"checkpoint {s} in {run / 'checkpoints'}" for s in (32, 24)]
    assert "starting from step 0 (restart_if_unreadable)" in err
    want = json.loads((reference / "summary.json").read_text())
    got = json.loads((run / "summary.json").read_text())
    assert {k: got[k] for k in EVAL} == {k: want[k] for k in EVAL}
    assert _metrics(run) == _metrics(reference)
    assert [(e["step"], e["checkpoint"]) for e in _events(run)] == [(0, 32), (0, 24)]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["24", "24.unreadable", "32", "32.unreadable"]


def test_a_second_damage_of_the_same_step_is_kept_beside_the_first(tmp_path):
    (tmp_path / "7.unreadable").mkdir()
    assert checkpoint.unreadable_path(tmp_path, 7).name == "7.unreadable.1"
    (tmp_path / "7.unreadable.1").mkdir()
    assert checkpoint.unreadable_path(tmp_path, 7).name == "7.unreadable.2"
    assert checkpoint.unreadable_path(tmp_path, 8).name == "8.unreadable"


def test_keep_1_warns_that_damage_means_a_restart(tmp_path):
    with pytest.warns(UserWarning, match="checkpoint.keep=1: .* a damaged checkpoint means a restart from step 0"):
        checkpoint.Checkpointer(tmp_path / "one", keep=1).close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        checkpoint.Checkpointer(tmp_path / "two", keep=2).close()


def test_restart_if_unreadable_may_change_between_resumes_but_not_other_keys():
    assert C.diff(_cfg(), _cfg("checkpoint.restart_if_unreadable=true")) == []
    assert C.diff(_cfg(), _cfg("checkpoint.keep=3")) == ["checkpoint.keep"]
    assert C.load_config("tiny").checkpoint.restart_if_unreadable is False
    assert C.load_config("tiny").checkpoint.keep >= 2  # a fallback has somewhere to go by default


def test_unreadable_reason_is_one_line_from_the_innermost_cause():
    inner = ValueError('OUT_OF_RANGE: Error reading "a/0.0": Requested byte range [0, 9) is not valid '
                       "[tensorstore_spec='{\"driver\": \"zarr\"}']")
    try:
        try:
            raise inner
        except ValueError as e:
            raise Exception("Encountered error while reading array index: (slice(0, 3, 1),).\n"
                            "TensorStore({\n  'driver': 'zarr'\n})") from e
    except Exception as outer:
        got = checkpoint.unreadable_reason(outer)
    assert got == 'ValueError: OUT_OF_RANGE: Error reading "a/0.0": Requested byte range [0, 9) is not valid'
    assert len(checkpoint.unreadable_reason(ValueError("x" * 1000))) == 300


def test_sweep_records_a_point_that_fell_back_as_resumed_not_failed(reference, tmp_path):
    from sweeps.runner import run_sweep
    sweep_file = tmp_path / "one.py"
    sweep_file.write_text('def points(base):\n    return [{"train.examples": 8192}]\n')
    out = tmp_path / "sweep"
    # The point's run dir: the reference run (same config), killed after its last checkpoint, which is damaged.
    run = _interrupted_copy(reference, out / "examples-8192")
    os.truncate(_largest_file(run / "checkpoints" / "32" / "default"), 1000)
    lines = []
    (row,) = run_sweep(str(sweep_file), out, "tiny", ARGS, log=lines.append)
    assert row["status"] == "done" and not row["error"]
    want = json.loads((reference / "summary.json").read_text())
    # The point trains in a subprocess with one CPU device, the reference in this
    # 8-device process: XLA compiles them apart (seen: 1e-9 relative), so approx here.
    assert {k: row[k] for k in EVAL} == pytest.approx({k: want[k] for k in EVAL}, rel=1e-6)
    assert lines[-1].startswith("[1/1] examples-8192: done, eval NE ")
    assert "(resumed from step 24; unreadable checkpoints set aside: checkpoints/32.unreadable)" in lines[-1]
    assert "checkpoint 32" in (run / "train.log").read_text()  # the run's own line, kept for post-mortems
    assert (out / "results.csv").read_text().count("examples-8192,one,done") == 1


# ---------------------------------------------------------------- agreement between processes, played here
# The real two-process run is tests/run/test_checkpoint_fallback_distributed.py; there
# both processes fail to read.  Here one process reads a checkpoint that the other
# cannot: both must still fall back together, and only process 0 moves it.

@pytest.fixture(scope="module")
def state_and_layout():
    from dlrm_jax import embedding as emb_lib, step as step_lib
    from dlrm_jax.data import make_source
    from dlrm_jax.model import dlrm as model_lib
    from dlrm_jax.parallel import steps as parallel
    cfg = _cfg()
    source = make_source(cfg)
    layout = emb_lib.layout_for(source.table_sizes, cfg.model.embed_dim)
    par = parallel.parallelize(cfg, model_lib.from_config(cfg.model), step_lib.dense_optimizer(cfg.train), layout)
    return par.init(cfg.seed), par.layout


def _play_two_processes(monkeypatch, me: int, other_fails: set[int], other_steps=None):
    """This process is `me` of 2; the other one sees `other_steps` and cannot read the steps in `other_fails`."""
    def allgather(x):
        theirs = x.copy()
        if getattr(allgather, "first", True):  # _agreed_steps: [count, newest]
            allgather.first = False
            if other_steps is not None:
                theirs = np.array([len(other_steps), max(other_steps, default=-1)], np.int32)
        else:  # _agree: [step, outcome]
            theirs[1] = 1 if int(x[0]) in other_fails else 0
        return np.stack([x, theirs] if me == 0 else [theirs, x])
    monkeypatch.setattr(checkpoint, "_process_count", lambda: 2)
    monkeypatch.setattr(checkpoint, "_process_index", lambda: me)
    monkeypatch.setattr(checkpoint, "_allgather", allgather)
    monkeypatch.setattr(checkpoint, "_sync", lambda name: None)



@pytest.mark.parametrize("me", [0, 1])
def test_a_checkpoint_one_process_cannot_read_is_given_up_by_all(reference, tmp_path, monkeypatch, me,
                                                                  state_and_layout):
    run = _interrupted_copy(reference, tmp_path / "run")
    state, layout = state_and_layout
    _play_two_processes(monkeypatch, me, other_fails={32})
    ckpt = checkpoint.Checkpointer(run / "checkpoints")
    said = []
    restored = ckpt.restore_newest_readable(state, layout, log=said.append)
    ckpt.close()
    assert restored.step == 24  # this process read 32, but the other could not: both resume from 24
    assert restored.set_aside == (checkpoint.SetAside(32, f"unreadable on process(es) {1 - me}", "32.unreadable"),)
    assert said == [f"checkpoint 32 in {run / 'checkpoints'} is unreadable (unreadable on process(es) {1 - me}); "
                    f"moved to 32.unreadable, resuming from step 24"]
    # Process 0 alone moves it (the other process's copy of this code leaves the shared directory alone).
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == (["24", "32.unreadable"] if me == 0
                                                                      else ["24", "32"])
    plain = checkpoint.Checkpointer(reference / "checkpoints")
    want = plain.restore(24, state, layout)
    plain.close()
    assert np.array_equal(np.asarray(restored.state.emb.table), np.asarray(want.emb.table))


def test_processes_that_see_different_checkpoints_stop(reference, tmp_path, monkeypatch, state_and_layout):
    run = _interrupted_copy(reference, tmp_path / "run")
    _play_two_processes(monkeypatch, 0, other_fails=set(), other_steps=[24])
    ckpt = checkpoint.Checkpointer(run / "checkpoints")
    with pytest.raises(UserError, match="the processes see different checkpoints .* one shared directory"):
        ckpt.restore_newest_readable(*state_and_layout, log=lambda line: None)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["24", "32"]


def _edit_layout(step_dir: Path, **changes) -> None:
    """Rewrite the embedding layout recorded in a checkpoint's step metadata (still valid JSON)."""
    path = step_dir / checkpoint.STEP_METADATA_FILE
    meta = json.loads(path.read_text())
    group = meta["custom_metadata"][checkpoint.LAYOUT_KEY]["groups"][0]
    group["feature_rows"][0] += 1  # one digit off: these tables are not this run's
    meta["custom_metadata"][checkpoint.LAYOUT_KEY].update(changes)
    path.write_text(json.dumps(meta))


def test_a_newest_checkpoint_whose_layout_does_not_match_is_set_aside(reference, tmp_path, state_and_layout):
    run = _interrupted_copy(reference, tmp_path / "run")
    _edit_layout(run / "checkpoints" / "32")
    ckpt = checkpoint.Checkpointer(run / "checkpoints")
    restored = ckpt.restore_newest_readable(*state_and_layout, log=lambda line: None)
    ckpt.close()
    assert restored.step == 24 and [a.step for a in restored.set_aside] == [32]
    assert "the checkpoint's tables are laid out for" in restored.set_aside[0].reason
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["24", "32.unreadable"]


@pytest.mark.parametrize("restart", [False, True])
def test_checkpoints_all_of_another_placement_are_refused_not_set_aside(reference, tmp_path, state_and_layout,
                                                                        restart):
    """Every checkpoint laid out for another mesh is the user's setting, not damage, even with the opt-in."""
    run = _interrupted_copy(reference, tmp_path / "run")
    for step in ("32", "24"):
        _edit_layout(run / "checkpoints" / step, kind="table")
    ckpt = checkpoint.Checkpointer(run / "checkpoints")
    with pytest.raises(UserError, match="^checkpoint 32 in .* laid out for embedding.sharding=table over 1 model "
                                        "shards, this run's for embedding.sharding=replicated .* resume with"):
        ckpt.restore_newest_readable(*state_and_layout, restart_if_unreadable=restart, log=lambda line: None)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["24", "32"]
