"""The real first 9,999 rows of the Criteo Kaggle train.txt (../shared/data;
research use only, never copied here): prepare them and check the manifest
against a direct parse; the hashed logistic-regression baseline on the
head:8000 split.  Skipped where the file is absent."""
import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from dlrm_jax.data.criteo import format as cf
from dlrm_jax.data.criteo.prepare import PrepareOptions, prepare
from dlrm_jax.data.criteo.source import CriteoSource


@pytest.fixture(scope="module")
def head(shared_data) -> Path:
    path = shared_data / "criteo_kaggle_train_head9999.tsv"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    return path


@pytest.fixture(scope="module")
def prepared(head, tmp_path_factory):
    out = tmp_path_factory.mktemp("head") / "data"
    m = prepare([head], out, PrepareOptions(split="head:8000", hash_rows=(65536,) * 26))
    parsed = [cf.parse_line(ln) for ln in head.read_bytes().split(b"\n") if ln]
    return out, m, parsed


def test_manifest_matches_a_direct_parse(head, prepared):
    out, m, parsed = prepared
    assert len(parsed) == 9999
    assert m["rows"] == m["lines"] == 9999 and m["bad_rows"]["total"] == 0
    assert (m["splits"]["train"]["rows"], m["splits"]["val"]["rows"]) == (8000, 1999)
    src = m["sources"][0]
    assert src["lines"] == 9999 and src["size"] == head.stat().st_size
    assert src["sha256"] == hashlib.sha256(head.read_bytes()).hexdigest()
    positives = sum(p[0] for p in parsed)
    st = m["stats"]
    assert st["positives"] == positives and st["label_rate"] == positives / 9999
    assert round(st["label_rate"], 3) == 0.218                      # 21.8% clicks
    for j, name in enumerate(cf.DENSE_NAMES):
        vals = [p[1][j] for p in parsed]
        present = [v for v in vals if v is not None]
        assert st["dense"][name]["missing_rate"] == vals.count(None) / 9999
        assert (st["dense"][name]["min"], st["dense"][name]["max"]) == (min(present), max(present))
        assert st["dense"][name]["negative"] == sum(v < 0 for v in present)
        mean = np.mean([np.float32(np.log1p(max(v, 0))) if v is not None else 0.0 for v in vals])
        assert st["dense"][name]["mean"] == pytest.approx(mean, rel=1e-6)
    for j, name in enumerate(cf.CAT_NAMES):
        assert st["categorical"][name]["missing"] == sum(p[2][j] is None for p in parsed)
    # A few well-known features of the Kaggle logs, as seen in these rows:
    assert st["dense"]["I2"]["negative"] > 0                       # I2 has negative counts
    assert st["dense"]["I12"]["missing_rate"] > 0.7                # I12 is mostly missing
    assert st["categorical"]["C1"]["missing"] == 0


def test_source_reads_the_rows_in_order(prepared):
    out, m, parsed = prepared
    src = CriteoSource(out, eval_split="val")
    ev = src.eval_batch(1999)
    assert ev.labels.tolist() == [float(p[0]) for p in parsed[8000:]]
    want = [0 if c is None else 1 + c % 65535 for c in parsed[8000][2]]
    assert ev.sparse[0].tolist() == want
    train = next(src.train_batches(8000, 0, 8000))
    assert train.labels.tolist() == [float(p[0]) for p in parsed[:8000]]


def test_hashed_logistic_regression_baseline(prepared):
    out, _, _ = prepared
    path = Path(__file__).resolve().parents[3] / "scripts" / "criteo_lr_baseline.py"
    spec = importlib.util.spec_from_file_location("criteo_lr_baseline", path)
    lr = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lr)
    r = lr.run(out)
    # Measured 0.7325 AUC / 0.885 NE with the script's defaults (seed 0).
    assert r["eval_examples"] == 1999 and 0.71 < r["eval_auc"] < 0.76
    assert r["eval_ne"] < 0.92
