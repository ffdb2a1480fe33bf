"""Split conventions, checked against the reference algorithms line by line,
then end to end through criteo-prepare on generated files."""
import gzip

import numpy as np
import pytest

from dlrm_jax.data.criteo import format as cf
from dlrm_jax.data.criteo.prepare import PrepareOptions, prepare
from dlrm_jax.data.criteo.splits import parse_split
from dlrm_jax.errors import UserError


def reference_kaggle(total):
    """The reference DLRM (data_utils.py): divmod days, array_split last day."""
    per, extra = divmod(total, 7)
    days = [per + (1 if j < extra else 0) for j in range(7)]
    idx = np.arange(total)
    parts = np.array_split(idx, np.cumsum(days)[:-1])
    test, val = np.array_split(parts[-1], 2)
    out = np.empty(total, object)
    out[np.concatenate(parts[:-1])], out[test], out[val] = "train", "test", "val"
    return out


@pytest.mark.parametrize("total", [14, 100, 101, 7 * 13 + 6, 45_840_617])
def test_kaggle_dlrm_matches_reference(total):
    spec = parse_split("kaggle-dlrm")
    plan = spec.bind(["train.txt"], [total])
    if total > 10_000:
        # The real train.txt: the reference DLRM trains on 39,291,958 rows and
        # splits the last day 3,274,330 (test) / 3,274,329 (val).
        assert plan.describe()["line_ranges"] == {
            "train": [0, 39_291_958], "test": [39_291_958, 42_566_288],
            "val": [42_566_288, 45_840_617]}
        lines = np.array([0, 39_291_957, 39_291_958, 42_566_287, 42_566_288, total - 1])
        got = np.array(plan.names)[plan.assign(0, lines)].tolist()
        assert got == ["train", "train", "test", "test", "val", "val"]
        return
    got = np.array(plan.names)[plan.assign(0, np.arange(total))]
    np.testing.assert_array_equal(got, reference_kaggle(total))


def test_kaggle_dlrm_over_two_sources_is_one_stream():
    plan = parse_split("kaggle-dlrm").bind(["a", "b"], [60, 40])
    whole = parse_split("kaggle-dlrm").bind(["all"], [100])
    both = np.concatenate([plan.assign(0, np.arange(60)), plan.assign(1, np.arange(40))])
    np.testing.assert_array_equal(both, whole.assign(0, np.arange(100)))


def test_terabyte_conventions():
    spec = parse_split("terabyte")
    names = [f"/d/day_{d}.gz" if d % 2 else f"/d/day_{d}" for d in range(24)]
    ordered = spec.order_sources(sorted(names))          # shell glob order: day_0, day_1, day_10..
    assert [int(p.split("_")[1].split(".")[0]) for p in ordered] == list(range(24))
    assert spec.needs_counts(ordered) == [False] * 23 + [True]
    plan = spec.bind(ordered, [None] * 23 + [11])
    assert set(plan.assign(5, np.arange(50))) == {plan.names.index("train")}
    got = np.array(plan.names)[plan.assign(23, np.arange(11))].tolist()
    assert got == ["val"] * 6 + ["test"] * 5              # TorchRec / MLPerf: val first
    dlrm = parse_split("terabyte-dlrm").bind(ordered, [None] * 23 + [11])
    got = np.array(dlrm.names)[dlrm.assign(23, np.arange(11))].tolist()
    assert got == ["test"] * 6 + ["val"] * 5              # reference DLRM / NVIDIA: test first


@pytest.mark.parametrize("srcs,msg", [
    (["day_0", "day_1"], "day_23"), (["day_23", "train.txt"], "not named day_"),
    (["day_23", "x/day_23.gz"], "given twice"), (["day_24", "day_23"], "not named day_")])
def test_terabyte_source_errors(srcs, msg):
    with pytest.raises(UserError, match=msg):
        parse_split("terabyte").order_sources(srcs)


def test_random_split_is_a_pure_function_of_position():
    plan = parse_split("random:0.8,0.1,0.1:7").bind(["a", "b"], [None, None])
    lines = np.arange(200_000)
    codes = plan.assign(1, lines)
    np.testing.assert_array_equal(codes[1234:5678], plan.assign(1, lines[1234:5678]))
    frac = np.bincount(codes, minlength=3) / lines.size
    np.testing.assert_allclose(frac, [0.8, 0.1, 0.1], atol=0.005)
    assert (plan.assign(0, lines[:1000]) != codes[:1000]).any()            # per source
    other = parse_split("random:0.8,0.1,0.1:8").bind(["a", "b"], [None, None])
    assert (other.assign(1, lines[:1000]) != codes[:1000]).any()           # per seed
    two = parse_split("random:0.5,0.5:0")
    assert two.names == ("train", "val")


def test_head_and_none():
    plan = parse_split("head:3").bind(["a", "b"], [2, None])
    assert plan.assign(0, np.arange(2)).tolist() == [0, 0]
    assert plan.assign(1, np.arange(3)).tolist() == [0, 1, 1]
    none = parse_split("none").bind(["a"], [None])
    assert none.names == ("all",) and none.assign(0, np.arange(5)).tolist() == [0] * 5


@pytest.mark.parametrize("bad", ["kaggle", "random:0.5,0.6:1", "random:1:1", "head:0",
                                 "random:a,b:1", "head:-3"])
def test_bad_split_specs(bad):
    with pytest.raises(UserError, match="--split"):
        parse_split(bad)


def _prepare_and_read(tmp_path, srcs, split, name="out"):
    m = prepare(srcs, tmp_path / name, PrepareOptions(split=split, rows_per_shard=40,
                                                       hash_rows=(1000,) * 26))
    got = {}
    for s, info in m["splits"].items():
        parts = [np.load(tmp_path / name / s / f"{sh['name']}.labels.npy")
                 for sh in info["shards"]]
        dense = [np.load(tmp_path / name / s / f"{sh['name']}.dense.npy")
                 for sh in info["shards"]]
        got[s] = (np.concatenate(parts) if parts else np.zeros(0),
                  np.concatenate(dense) if dense else np.zeros((0, 13)))
    return m, got


def test_kaggle_dlrm_end_to_end(tmp_path):
    rows = cf.synthetic_rows(333, seed=2)
    rows.dense[:, 0] = np.arange(333)                 # I1 = line number, to track rows
    rows.dense_missing[:, 0] = False
    (tmp_path / "train.txt").write_bytes(cf.format_rows(rows))
    m, got = _prepare_and_read(tmp_path, [tmp_path / "train.txt"], "kaggle-dlrm")
    ref = reference_kaggle(333)
    for s in ("train", "val", "test"):
        want = np.flatnonzero(ref == s)
        np.testing.assert_allclose(np.expm1(got[s][1][:, 0].astype(np.float64)), want,
                                   rtol=1e-5, atol=1e-5)
        assert m["splits"][s]["rows"] == want.size
        assert got[s][0].tolist() == rows.labels[want].tolist()


def test_terabyte_end_to_end_with_gzip_days(tmp_path):
    srcs = []
    for d in range(24):
        rows = cf.synthetic_rows(5 + d, seed=d)
        rows.dense[:, 0] = 1000 * d + np.arange(5 + d)
        rows.dense_missing[:, 0] = False
        text = cf.format_rows(rows)
        p = tmp_path / (f"day_{d}.gz" if d % 3 == 0 else f"day_{d}")
        p.write_bytes(gzip.compress(text) if d % 3 == 0 else text)
        srcs.append(p)
    m, got = _prepare_and_read(tmp_path, sorted(srcs), "terabyte")
    def ident(s):
        return np.rint(np.expm1(got[s][1][:, 0].astype(np.float64))).astype(int)
    assert ident("train").tolist() == [1000 * d + i for d in range(23) for i in range(5 + d)]
    assert ident("val").tolist() == [23000 + i for i in range(14)]      # 28 rows: 14 + 14
    assert ident("test").tolist() == [23000 + i for i in range(14, 28)]
    assert [s["name"] for s in m["sources"]][:3] == ["day_0.gz", "day_1", "day_2"]
    assert m["split"]["line_ranges"]["val"] == ["day_23", 0, 14]
