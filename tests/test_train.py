"""End-to-end training on the tiny preset: the run directory contract and NE behaviour."""
import json

import pytest

from dlrm_jax import config as C
from dlrm_jax.errors import UserError
from dlrm_jax.train import train

SUMMARY_KEYS = {"status", "error", "eval_ne", "eval_logloss", "eval_auc", "eval_calibration", "eval_examples",
                "train_examples", "params_embedding", "params_dense", "flops_per_example", "train_flops",
                "examples_per_s", "wall_s", "bayes_ne", "seed", "devices", "jax_version"}
METRICS = ("eval_ne", "eval_logloss", "eval_auc", "eval_calibration")


def tiny(*overrides):
    """The tiny preset on one device (tests/conftest.py: sharding has its own tests)."""
    return C.load_config("tiny", ["mesh.data=1", *overrides])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tiny"
    cfg = tiny("train.eval_every_examples=8192")
    return cfg, out, train(cfg, out, progress=False, verbose=False)


def test_tiny_run_writes_the_run_directory(tiny_run):
    cfg, out, summary = tiny_run
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "config.json", "metrics.jsonl", "summary.json"]
    assert C.from_dict(json.loads((out / "config.json").read_text())) == cfg
    on_disk = json.loads((out / "summary.json").read_text())
    assert SUMMARY_KEYS <= set(on_disk) and on_disk["status"] == "done"
    assert on_disk["bayes_ne"] < on_disk["eval_ne"] < 1.0
    assert 0.5 < on_disk["eval_auc"] < 1.0 and 0.8 < on_disk["eval_calibration"] < 1.2
    assert on_disk["train_examples"] == cfg.train.examples
    assert on_disk["train_flops"] == on_disk["flops_per_example"] * cfg.train.examples
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert all({"examples_seen", "flops_seen", "step"} <= set(x) for x in lines)
    assert all(("train_loss" in x) != ("eval_ne" in x) for x in lines)
    evals = [x for x in lines if "eval_ne" in x]
    assert [x["examples_seen"] for x in evals] == [8192, 16384]
    assert evals[-1]["eval_ne"] == pytest.approx(on_disk["eval_ne"])
    steps = [x["step"] for x in lines if "train_loss" in x]
    assert steps == sorted(set(steps)) and steps[-1] == cfg.train.examples // cfg.train.batch_size


def test_same_seed_gives_identical_metrics(tiny_run, tmp_path):
    cfg, _, first = tiny_run
    again = train(cfg, tmp_path / "again", progress=False, verbose=False)
    assert {k: again[k] for k in METRICS} == {k: first[k] for k in METRICS}
    other = train(cfg.replace(seed=1), tmp_path / "seed1", progress=False, verbose=False)
    assert other["eval_ne"] != first["eval_ne"]


def test_eight_times_more_examples_lowers_ne(tiny_run, tmp_path):
    cfg, _, small = tiny_run
    big = train(cfg.replace(**{"train.examples": 8 * cfg.train.examples, "train.eval_every_examples": 0}),
                tmp_path / "big", progress=False, verbose=False)
    assert big["bayes_ne"] == small["bayes_ne"]  # the same eval set
    assert big["bayes_ne"] < big["eval_ne"] < small["eval_ne"] - 0.01


def test_finished_run_is_not_retrained_and_config_mismatch_is_refused(tiny_run):
    cfg, out, summary = tiny_run
    assert train(cfg, out, progress=False, verbose=False) == json.loads((out / "summary.json").read_text())
    with pytest.raises(UserError, match="different config \\(seed\\)"):
        train(cfg.replace(seed=9), out, progress=False, verbose=False)


def test_epochs_repeat_the_same_examples():
    from dlrm_jax.data import make_source
    from dlrm_jax.train import _train_batches, schedule_for
    cfg = tiny("train.examples=1024", "train.epochs=3")
    sched = schedule_for(cfg)
    batches = [b.sparse for b in _train_batches(make_source(cfg), cfg, sched, start_step=0)]
    per_epoch = 1024 // cfg.train.batch_size
    assert len(batches) == sched.total_steps == 3 * per_epoch
    for e in (1, 2):
        for i in range(per_epoch):
            assert (batches[e * per_epoch + i] == batches[i]).all()
    assert not (batches[1] == batches[0]).all()
    # resuming mid-way (step 5 of 12) yields exactly the remaining batches
    rest = [b.sparse for b in _train_batches(make_source(cfg), cfg, sched, start_step=5)]
    assert len(rest) == 7 and all((a == b).all() for a, b in zip(rest, batches[5:]))


def test_resumed_run_counts_the_time_of_the_processes_before_it(tmp_path, monkeypatch):
    """wall_s and examples_per_s of a resumed run include the time its checkpoint recorded."""
    import sys
    import time
    import types

    from dlrm_jax.run import checkpoint

    train_module = sys.modules[train.__module__]
    cfg = tiny("checkpoint.every_examples=8192", "train.eval_every_examples=8192")
    out = tmp_path / "r"
    clock = {"now": time.time()}

    def slow_clock():  # the first process sees 1000 s pass between any two readings
        clock["now"] += 1000.0
        return clock["now"]

    class Preempted(Exception):
        pass

    real_save = checkpoint.Checkpointer.save

    def save_then_die(self, *args, **kwargs):
        real_save(self, *args, **kwargs)
        raise Preempted

    with monkeypatch.context() as m:
        m.setattr(train_module, "time", types.SimpleNamespace(time=slow_clock))
        m.setattr(checkpoint.Checkpointer, "save", save_then_die)
        with pytest.raises(Preempted):
            train(cfg, out, progress=False, verbose=False)
    ckpt = checkpoint.Checkpointer(out / "checkpoints")
    step = ckpt.latest_step()
    saved = ckpt.saved_run_time(step)
    ckpt.close()
    b = cfg.train.batch_size
    assert step == 8192 // b and saved.timed_steps == step - 1  # the compiling first step is not timed
    assert saved.wall_s >= 2000 and saved.train_s >= 1000

    summary = train(cfg, out, progress=False, verbose=False)   # resumes with the real clock
    assert summary["status"] == "done"
    assert saved.wall_s < summary["wall_s"] < saved.wall_s + 300
    # Steps timed: all but each process's first; seconds: the slow first process's plus this one's.
    timed = cfg.train.examples // b - 2
    assert timed * b / (saved.train_s + 300) < summary["examples_per_s"] < timed * b / saved.train_s
    evals = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    walls = [x["wall_s"] for x in evals if "eval_ne" in x]
    assert len(walls) == 2 and saved.wall_s - 1000 <= walls[0] <= saved.wall_s < walls[1]
