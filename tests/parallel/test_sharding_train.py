"""Whole runs on 8 fake CPU devices: sharded placements give the single-device eval NE,
and a checkpoint saved on a 1x8 mesh resumes on a 2x4 mesh to the same result."""
import dataclasses
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlrm_jax import config as C
from dlrm_jax.embedding import placement as PL
from dlrm_jax.errors import UserError
from dlrm_jax.run import checkpoint
from dlrm_jax.train import train

# The tiny preset with 16 steps and tables of two sizes (one init compile each);
# 13 * (39 + 400) = 5707 rows: padded to 5712 over 8 devices, 5708 over 4.
SMALL = ["train.examples=4096", "eval.examples=4096", "checkpoint.every_examples=2048",
         "synthetic.cardinalities=" + ",".join(["39", "400"] * 13)]
METRICS = ("eval_ne", "eval_logloss", "eval_auc")


def _train(out, *overrides):
    return train(C.load_config("tiny", SMALL + list(overrides)), out, progress=False, verbose=False)


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("single") / "run", "mesh.data=1", "mesh.model=1")


@pytest.fixture(scope="module")
def row_1x8(tmp_path_factory):
    out = tmp_path_factory.mktemp("row") / "run"
    return out, _train(out, "embedding.sharding=row", "mesh.data=1", "mesh.model=8")


def _assert_same_metrics(a, b):
    for k in METRICS:
        assert a[k] == pytest.approx(b[k], rel=1e-5), k


def test_row_and_table_placements_give_the_single_device_ne(single, row_1x8, tmp_path):
    assert single["devices"] == 1 and row_1x8[1]["devices"] == 8
    _assert_same_metrics(row_1x8[1], single)
    # The exchange's counters are logged with the train loss (one round: the default headroom sufficed).
    train_lines = [json.loads(x) for x in (row_1x8[0] / "metrics.jsonl").read_text().splitlines()
                   if "train_loss" in x]
    assert train_lines and all(x["exchange_rounds_max"] == 1 and x["exchange_overflow_ids"] == 0
                               for x in train_lines)
    table = _train(tmp_path / "table", "embedding.sharding=table", "mesh.data=2", "mesh.model=4")
    _assert_same_metrics(table, single)


def test_checkpoint_from_1x8_resumes_on_2x4(single, row_1x8, tmp_path):
    src, done = row_1x8
    out = tmp_path / "resumed"
    shutil.copytree(src, out)
    (out / "summary.json").unlink()
    shutil.rmtree(out / "checkpoints" / "16")  # as if killed after the step-8 checkpoint
    resumed = _train(out, "embedding.sharding=row", "mesh.data=2", "mesh.model=4")
    assert resumed["status"] == "done"
    _assert_same_metrics(resumed, done)
    _assert_same_metrics(resumed, single)
    saved = checkpoint.Checkpointer(out / "checkpoints")
    assert [g["rows"] for g in saved.saved_layout(8)["groups"]] == [5712]   # written on 1x8
    assert [g["rows"] for g in saved.saved_layout(16)["groups"]] == [5712]  # and on 2x4: over all 8 too
    saved.close()


def test_checkpoint_with_tables_elsewhere_is_laid_out_anew(tmp_path):
    # Table-wise blocks over 2 devices (as a checkpoint of a 2x4 mesh was laid out
    # before sharded groups spanned every device) restored into blocks over 4.
    rows = (3, 9, 4, 7)
    saved_as, read_as = PL.plan("table", rows, 2, 2), PL.plan("table", rows, 2, 4)
    assert saved_as.groups[0].offsets != read_as.groups[0].offsets
    ckpt = checkpoint.Checkpointer(tmp_path / "ckpt")
    state = PL.init_embedding(jax.random.PRNGKey(0), saved_as, "rowwise_adagrad", initial_accumulator=0.5)
    state = state.replace(accum=state.accum + jnp.arange(state.accum.shape[0]))  # rows tell apart
    ckpt.save(1, state, layout=saved_as.describe())
    like = PL.init_embedding(jax.random.PRNGKey(1), read_as, "rowwise_adagrad")
    back = ckpt.restore(1, like, layout=read_as.describe())
    for got, want in zip(PL.to_canonical(read_as, back), PL.to_canonical(saved_as, state)):
        np.testing.assert_array_equal(got, want)
    assert back.table.shape == like.table.shape
    # Row-sharded groups were contiguous blocks before they were interleaved (row r on device r % M).
    new = PL.plan("row", rows, 2, 4)
    old = PL.Placement("row", new.feature_rows, new.dim, (dataclasses.replace(new.groups[0], interleaved=False),))
    assert new.groups[0].interleaved and "row_map" not in old.describe()["groups"][0]
    ckpt.save(2, PL.init_embedding(jax.random.PRNGKey(2), old, "rowwise_adagrad").replace(
        accum=jnp.arange(new.groups[0].rows, dtype=jnp.float32)), layout=old.describe())
    back = ckpt.restore(2, PL.init_embedding(jax.random.PRNGKey(1), new, "rowwise_adagrad"), layout=new.describe())
    saved = PL.to_canonical(old, PL.init_embedding(jax.random.PRNGKey(2), old, "rowwise_adagrad"))[0]
    np.testing.assert_array_equal(PL.to_canonical(new, back)[0], saved)
    np.testing.assert_array_equal(PL.to_canonical(new, back)[1], np.arange(sum(rows)))
    other = PL.plan("table", (3, 9, 4, 8), 2, 4)  # other tables: refused
    with pytest.raises(UserError, match="laid out for embedding.sharding=table over 2 model shards, this "
                                        "run's for embedding.sharding=table over 4"):
        ckpt.restore(1, PL.init_embedding(jax.random.PRNGKey(0), other, "rowwise_adagrad"), layout=other.describe())
    ckpt.close()
