"""Prepared Criteo shards on a bucket, against fake-gcs-server (tests/run/gcs_server.py).

`criteo-prepare --out gs://...` must write the bytes a local preparation writes, and
`criteo:gs://...` must give the local source's batches byte for byte, each host
reading only its own rows by ranged reads (no memory map).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from dlrm_jax.data.criteo.prepare import PrepareOptions, prepare
from dlrm_jax.data.criteo.source import CriteoSource
from dlrm_jax.errors import UserError
from dlrm_jax.run import storage
from tests.data.criteo.test_source import N_TRAIN, data_dir  # noqa: F401  (the local fixture)

OPTIONS = PrepareOptions(split=f"head:{N_TRAIN}", dense_transform="none", rows_per_shard=37,
                         hash_rows=tuple(range(100, 126)))


def _tree(root) -> dict[str, bytes]:
    """Every file under a local or gs:// directory, by relative path."""
    out = {}
    for name in storage.listdir(root):
        child = f"{os.fspath(root)}/{name}"
        if storage.is_dir(child):
            out.update({f"{name}/{k}": v for k, v in _tree(child).items()})
        else:
            out[name] = storage.read_bytes(child)
    return out


@pytest.fixture
def gs_data(data_dir, gcs_bucket, tmp_path):  # noqa: F811
    """The fixture's TSVs prepared straight into the bucket, as data_dir was locally."""
    src = [data_dir.parent / "a.tsv", data_dir.parent / "b.tsv"]
    units = []
    out = f"{gcs_bucket}/criteo"
    prepare(src, out, OPTIONS, staging=tmp_path / "staging", on_unit_done=units.append)
    assert len([u for u in units if u["pass"] == "write"]) == 20  # 400/37 and 300/37 units, each rounded up: 11 + 9
    assert not (tmp_path / "staging").exists()  # the staging directory goes once uploaded
    return out


def _batches(src, batch, start, stop, **kw):
    return list(src.train_batches(batch, start, stop, **kw))


def _same(a, b) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        for u, v in zip(x, y):
            assert u.dtype == v.dtype and u.shape == v.shape and u.tobytes() == v.tobytes()


def test_prepare_to_a_bucket_writes_the_local_bytes(data_dir, gs_data, tmp_path):  # noqa: F811
    assert _tree(gs_data) == _tree(data_dir)
    src, staging = [data_dir.parent / "a.tsv", data_dir.parent / "b.tsv"], tmp_path / "again"
    assert prepare(src, gs_data, OPTIONS, staging=staging)["status"] == "complete"  # a rerun finds it done
    with pytest.raises(UserError, match="prepared with other options"):
        prepare(src, gs_data, PrepareOptions(split=f"head:{N_TRAIN}", rows_per_shard=37,
                                             hash_rows=OPTIONS.hash_rows), staging=staging)
    assert not staging.exists() and _tree(gs_data) == _tree(data_dir)  # the refused rerun changed nothing


def test_a_killed_preparation_to_a_bucket_resumes_to_the_same_bytes(data_dir, gcs_bucket, tmp_path):  # noqa: F811
    src, out, staging = [data_dir.parent / "a.tsv", data_dir.parent / "b.tsv"], f"{gcs_bucket}/c", tmp_path / "s"

    def killed(rec):
        if rec["pass"] == "write" and rec["unit"] == 4:
            raise KeyboardInterrupt  # after its 5th unit was uploaded

    with pytest.raises(KeyboardInterrupt):
        prepare(src, out, OPTIONS, staging=staging, on_unit_done=killed)
    assert staging.exists() and not storage.exists(f"{out}/manifest.json")  # nothing committed
    with pytest.raises(UserError, match="no staged preparation to resume"):
        prepare(src, out, OPTIONS, staging=tmp_path / "elsewhere")
    resumed = []
    prepare(src, out, OPTIONS, staging=staging, on_unit_done=resumed.append)
    assert len(resumed) == 20 - 5 and _tree(out) == _tree(data_dir)


@pytest.mark.parametrize("window", [0, 64, 10_000])
def test_gs_batches_equal_the_local_ones_byte_for_byte(data_dir, gs_data, window):  # noqa: F811
    kw = dict(shuffle_window=window, seed=3, eval_split="val")
    local, remote = CriteoSource(data_dir, **kw), CriteoSource(gs_data, **kw)
    assert remote.table_sizes == local.table_sizes and remote.num_train == local.num_train == N_TRAIN
    for batch, start, stop in [(64, 0, 3 * N_TRAIN), (50, 130, 1200)]:  # across shards and epochs
        _same(_batches(remote, batch, start, stop), _batches(local, batch, start, stop))
    if window == 0:
        for host in (0, 1):
            _same(_batches(remote, 64, 0, 1024, host_index=host, host_count=2),
                  _batches(local, 64, 0, 1024, host_index=host, host_count=2))
    _same([remote.eval_batch(150)], [local.eval_batch(150)])


def test_each_host_reads_only_its_rows(gs_data, monkeypatch):
    """Host 1 of 2: the ranged reads cover exactly its half of each batch, plus the headers."""
    reads = []
    real = storage.read_ranges

    def record(paths, starts, ends):
        reads.extend(zip(paths, starts, ends))
        return real(paths, starts, ends)

    monkeypatch.setattr(storage, "read_ranges", record)
    src = CriteoSource(gs_data, eval_split="val", prefetch=0)
    batches = _batches(src, 64, 0, 448, host_index=1, host_count=2)
    assert sum(len(b.labels) for b in batches) == 224
    label_bytes = sum(e - s for p, s, e in reads if p.endswith(".labels.npy") and s > 0)
    sparse_bytes = sum(e - s for p, s, e in reads if p.endswith(".sparse.npy") and s > 0)
    assert label_bytes == 224 and sparse_bytes == 224 * 26 * 4  # uint8 labels, int32 ids: its rows only
    assert all(s > 0 or e == 4096 for _, s, e in reads)  # the rest are header reads, once per file
    with pytest.raises(UserError, match="each host would read every whole window"):
        CriteoSource(gs_data, eval_split="val", shuffle_window=64).train_batches(64, 0, 128, 1, 2)


def test_train_on_gs_data_equals_local(data_dir, gs_data, tmp_path):  # noqa: F811
    from dlrm_jax.config import load_config
    from dlrm_jax.train import train
    sets = ["train.examples=448", "train.batch_size=64", "eval.examples=150", "data.eval_split=val",
            "data.shuffle_window=128", "checkpoint.every_examples=0"]
    a = train(load_config("tiny", [*sets, f"data.source=criteo:{data_dir}"]), tmp_path / "a", progress=False,
              verbose=False)
    b = train(load_config("tiny", [*sets, f"data.source=criteo:{gs_data}"]), tmp_path / "b", progress=False,
              verbose=False)
    assert (a["eval_ne"], a["eval_auc"]) == (b["eval_ne"], b["eval_auc"]) and np.isfinite(a["eval_ne"])


def test_bad_buckets_on_the_data_commands_exit_2_with_one_line(gcs_server, data_dir, tmp_path):  # noqa: F811
    bad = "gs://no-such-bucket-data"
    cases = [(["data", "criteo-prepare", "--src", str(data_dir.parent / "a.tsv"), "--out", f"{bad}/d",
               "--staging", str(tmp_path / "staging")], ""),
             (["train", "--preset", "tiny", "--set", f"data.source=criteo:{bad}/d", "--out", str(tmp_path / "r")],
              "dlrm-scaling train: error: ")]
    for argv, prefix in cases:
        start = time.monotonic()
        out = subprocess.run([sys.executable, "-m", "dlrm_jax", *argv], capture_output=True, text=True,
                             timeout=120, cwd=tmp_path)
        assert out.returncode == 2 and time.monotonic() - start < 60, (argv, out.stderr[-2000:])
        assert out.stderr.strip().splitlines() == [f"{prefix}{bad}: no such bucket (create it, or fix the path)"]
        assert os.listdir(tmp_path) == [], argv  # no staging directory, no run directory, no ./gs:
