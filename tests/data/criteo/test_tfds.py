"""The TFDS builder: its examples equal criteo-prepare's shard rows; the module
imports without tensorflow_datasets; a real ArrayRecord build runs (and must
not import TensorFlow) where the [tfds] extra is installed."""
import sys

import numpy as np
import pytest

from dlrm_jax.data.criteo import format as cf, tfds as tfds_criteo
from dlrm_jax.data.criteo.prepare import PrepareOptions, prepare
from dlrm_jax.errors import UserError


@pytest.fixture
def kaggle_dir(tmp_path):
    d = tmp_path / "manual"
    d.mkdir()
    (d / "train.txt").write_bytes(cf.format_rows(cf.synthetic_rows(140, seed=9)))
    return d


def test_examples_equal_prepared_shards(kaggle_dir, tmp_path):
    src = tfds_criteo.find_sources(kaggle_dir, "kaggle")
    m = prepare(src, tmp_path / "out", PrepareOptions(split="kaggle-dlrm", hash_rows=(5000,) * 26))
    for split in ("train", "val", "test"):
        ex = list(tfds_criteo.examples(src, "kaggle-dlrm", split, hash_rows=5000))
        sh = m["splits"][split]["shards"][0]["name"]
        base = tmp_path / "out" / split / sh
        dense = np.load(f"{base}.dense.npy")
        assert len(ex) == m["splits"][split]["rows"] == dense.shape[0]
        np.testing.assert_array_equal(np.stack([e["dense"] for _, e in ex]), dense)
        np.testing.assert_array_equal(np.stack([e["sparse"] for _, e in ex]),
                                      np.load(f"{base}.sparse.npy"))
        assert [e["label"] for _, e in ex] == np.load(f"{base}.labels.npy").tolist()
    assert ex[0][0] == "train.txt:120"     # key = file:line; test = day 6 = lines 120..129


def test_bad_row_and_missing_files(tmp_path, kaggle_dir):
    with open(kaggle_dir / "train.txt", "ab") as f:
        f.write(b"1\t2\n")
    with pytest.raises(UserError, match=r"train.txt:141: expected 40"):
        list(tfds_criteo.examples([kaggle_dir / "train.txt"], "kaggle-dlrm", "val"))
    with pytest.raises(UserError, match="no Criteo terabyte files"):
        tfds_criteo.find_sources(tmp_path, "terabyte")


def test_builder_needs_the_extra_only_when_used():
    if "tensorflow_datasets" in sys.modules or _has_tfds():
        pytest.skip("tensorflow_datasets is installed here")
    with pytest.raises(UserError, match=r"pip install 'dlrm-scaling\[tfds\]'"):
        tfds_criteo.CriteoClickLogs


def _has_tfds():
    try:
        import tensorflow_datasets  # noqa: F401
        return True
    except ImportError:
        return False


def test_real_array_record_build(kaggle_dir, tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    builder = tfds_criteo.CriteoClickLogs(config="kaggle", data_dir=str(tmp_path / "tfds"))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=str(kaggle_dir)))
    assert "tensorflow" not in sys.modules
    assert list((tmp_path / "tfds").rglob("*.array_record*"))
    ds = builder.as_data_source("val")
    want = list(tfds_criteo.examples([kaggle_dir / "train.txt"], "kaggle-dlrm", "val"))
    assert len(ds) == len(want) == 10
    for got, (_, w) in zip(ds, want):
        assert got["label"] == w["label"]
        np.testing.assert_array_equal(got["dense"], w["dense"])
        np.testing.assert_array_equal(got["sparse"], w["sparse"])
