"""criteo-prepare on generated Criteo files: exact shard contents, hashing and
thresholding, gzip, workers, a killed-then-resumed run, and bad input."""
import gzip
import json
import os
import signal
import subprocess
import sys
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from dlrm_jax.data.criteo import format as cf
from dlrm_jax.data.criteo.prepare import PrepareOptions, main, prepare
from dlrm_jax.errors import UserError

REPO = Path(__file__).resolve().parents[3]
EDGE = "\t".join(["1", "", "-3", "0", "123456789012", "007"] + ["5"] * 8
                 + ["", "ffffffff", "0", "ABCDEF12", "1f"] + ["68fd1e64"] * 21)


def write_source(path: Path, n: int, seed: int, gz: bool = False, extra=()) -> list[bytes]:
    text = cf.format_rows(cf.synthetic_rows(n, seed))
    lines = text.split(b"\n")[:-1]
    for i, ln in extra:
        lines.insert(i, ln.encode() if isinstance(ln, str) else ln)
    data = b"\n".join(lines) + b"\n"
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return lines


def tree(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def read_split(out: Path, manifest: dict, split: str):
    cols = {}
    for c in ("dense", "sparse", "labels"):
        arrs = [np.load(out / split / f"{s['name']}.{c}.npy", mmap_mode="r")
                for s in manifest["splits"][split]["shards"]]
        cols[c] = np.concatenate(arrs)
    return cols


def test_exact_shards_hash_mode(tmp_path):
    lines = write_source(tmp_path / "a.tsv", 300, 1, extra=[(0, EDGE), (150, EDGE)])
    rows = list(range(2, 28))
    rc = main(["--src", str(tmp_path / "a.tsv"), "--out", str(tmp_path / "o"), "--quiet",
               "--hash-rows", ",".join(map(str, rows)), "--rows-per-shard", "64"])
    assert rc == 0
    m = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert m["table_sizes"] == rows and m["rows"] == 302 and list(m["splits"]) == ["all"]
    assert [s["rows"] for s in m["splits"]["all"]["shards"]] == [64] * 4 + [46]
    got = read_split(tmp_path / "o", m, "all")
    assert got["dense"].dtype == np.float32 and got["sparse"].dtype == np.int32
    assert got["labels"].dtype == np.uint8
    for i, ln in enumerate(lines):
        label, dense, cats = cf.parse_line(ln)
        want_dense = [np.float32(np.log1p(max(d, 0))) if d is not None else 0.0 for d in dense]
        want_ids = [0 if c is None else 1 + c % (r - 1) for c, r in zip(cats, rows)]
        assert got["labels"][i] == label
        assert got["dense"][i].tolist() == np.float32(want_dense).tolist()
        assert got["sparse"][i].tolist() == want_ids
    # Manifest: sources, stats from a direct parse.
    src = m["sources"][0]
    assert src["lines"] == 302 and src["size"] == (tmp_path / "a.tsv").stat().st_size
    import hashlib
    assert src["sha256"] == hashlib.sha256((tmp_path / "a.tsv").read_bytes()).hexdigest()
    parsed = [cf.parse_line(ln) for ln in lines]
    st = m["stats"]
    assert st["positives"] == sum(p[0] for p in parsed)
    for j, name in enumerate(cf.DENSE_NAMES):
        vals = [p[1][j] for p in parsed]
        assert st["dense"][name]["missing"] == vals.count(None)
        present = [v for v in vals if v is not None]
        assert st["dense"][name]["min"] == min(present)
        assert st["dense"][name]["negative"] == sum(v < 0 for v in present)
    assert st["dense"]["I4"]["max"] == 123456789012
    for j, name in enumerate(cf.CAT_NAMES):
        assert st["categorical"][name]["missing"] == sum(p[2][j] is None for p in parsed)


def test_float16_and_raw_transform(tmp_path):
    write_source(tmp_path / "a.tsv", 50, 2, extra=[(3, EDGE)])
    m = prepare([tmp_path / "a.tsv"], tmp_path / "o", PrepareOptions(
        dense_transform="none", dense_dtype="float16", hash_rows=(100,) * 26))
    got = read_split(tmp_path / "o", m, "all")
    assert got["dense"].dtype == np.float16
    assert got["dense"][3, :3].tolist() == [0.0, -3.0, 0.0]


def test_min_count_vocabulary(tmp_path):
    lines = write_source(tmp_path / "a.tsv", 600, 3)
    m = prepare([tmp_path / "a.tsv"], tmp_path / "o", PrepareOptions(
        split="random:0.7,0.3:1", min_count=3, rows_per_shard=100))
    parsed = [cf.parse_line(ln) for ln in lines]
    from dlrm_jax.data.criteo.splits import parse_split
    codes = parse_split("random:0.7,0.3:1").bind(["a"], [None]).assign(0, np.arange(600))
    train = [p for p, c in zip(parsed, codes) if c == 0]
    for j in range(26):
        counts = Counter(p[2][j] for p in train if p[2][j] is not None)
        frequent = sorted((v for v, k in counts.items() if k >= 3),
                          key=lambda v: (-counts[v], v))
        ids = {v: 2 + i for i, v in enumerate(frequent)}
        assert m["table_sizes"][j] == 2 + len(frequent)
        values = np.load(tmp_path / "o" / "vocab" / f"C{j + 1}.values.npy")
        assert values.tolist() == frequent
        for split, code in (("train", 0), ("val", 1)):
            want = [0 if p[2][j] is None else ids.get(p[2][j], 1)
                    for p, c in zip(parsed, codes) if c == code]
            assert read_split(tmp_path / "o", m, split)["sparse"][:, j].tolist() == want
    assert m["categorical"]["mode"] == "vocab" and m["categorical"]["counted_split"] == "train"
    assert not (tmp_path / "o" / ".progress").exists()


def test_gzip_input_gives_identical_shards(tmp_path):
    write_source(tmp_path / "a.tsv", 500, 4)
    (tmp_path / "a.tsv.gz").write_bytes(gzip.compress((tmp_path / "a.tsv").read_bytes()))
    opts = PrepareOptions(split="kaggle-dlrm", rows_per_shard=128, hash_rows=(999,) * 26)
    m1 = prepare([tmp_path / "a.tsv"], tmp_path / "plain", opts)
    m2 = prepare([tmp_path / "a.tsv.gz"], tmp_path / "gz", opts)
    t1, t2 = tree(tmp_path / "plain"), tree(tmp_path / "gz")
    assert t1.keys() == t2.keys()
    assert all(t1[k] == t2[k] for k in t1 if k != "manifest.json")
    assert m2["sources"][0]["compression"] == "gzip" and m1["splits"] == m2["splits"]


def test_multi_member_and_corrupt_gzip(tmp_path, capsys):
    text = (tmp_path / "a.tsv")
    write_source(text, 300, 14)
    data = text.read_bytes()
    cut = data.index(b"\n", len(data) // 2) + 1         # two members, split at a line end
    (tmp_path / "m.gz").write_bytes(gzip.compress(data[:cut]) + gzip.compress(data[cut:])
                                    + b"\0" * 64)       # plus the zero padding gzip allows
    opts = PrepareOptions(rows_per_shard=100, hash_rows=(321,) * 26)
    prepare([text], tmp_path / "plain", opts)
    prepare([tmp_path / "m.gz"], tmp_path / "multi", opts)
    t1, t2 = tree(tmp_path / "plain"), tree(tmp_path / "multi")
    assert {k: v for k, v in t1.items() if k != "manifest.json"} == \
        {k: v for k, v in t2.items() if k != "manifest.json"}
    bad = bytearray(gzip.compress(data, mtime=0))
    bad[len(bad) // 2] ^= 0xFF                            # flip bits mid-stream
    (tmp_path / "c.gz").write_bytes(bytes(bad))
    rc, err = run_cli(capsys, "--src", tmp_path / "c.gz", "--out", tmp_path / "o")
    assert rc == 2 and err.count("\n") == 1 and "gzip stream is corrupt" in err
    assert err.startswith(f"{tmp_path / 'c.gz'}:")
    assert not (tmp_path / "o").exists()


def test_workers_and_threads_do_not_change_bytes(tmp_path):
    srcs = [tmp_path / "x.tsv", tmp_path / "y.tsv.gz", tmp_path / "z.tsv"]
    for i, s in enumerate(srcs):
        write_source(s, 200 + 50 * i, 10 + i, gz=s.suffix == ".gz")
    opts = PrepareOptions(split="random:0.8,0.1,0.1:3", rows_per_shard=70, hash_rows=(77,) * 26)
    prepare(srcs, tmp_path / "one", opts, workers=1, threads=1)
    seen = []
    prepare(srcs, tmp_path / "two", opts, workers=2, threads=2, on_unit_done=seen.append)
    assert tree(tmp_path / "one") == tree(tmp_path / "two")
    assert len(seen) == 3 + 4 + 5        # ceil(lines / 70) units per source


KILL_SCRIPT = """
import json, os, signal, sys
from dlrm_jax.data.criteo.prepare import PrepareOptions, prepare
done = []
def cb(rec):
    done.append(rec)
    if len(done) == 3:
        os.kill(os.getpid(), signal.SIGKILL)     # a real, uncatchable kill
prepare(sys.argv[1:3], sys.argv[3], PrepareOptions(**json.loads(sys.argv[4])), on_unit_done=cb)
"""


@pytest.mark.parametrize("categorical", [{"hash_rows": (1000,) * 26}, {"min_count": 2}])
def test_killed_then_resumed_is_byte_identical(tmp_path, categorical):
    a, b = tmp_path / "a.tsv.gz", tmp_path / "b.tsv"
    write_source(a, 330, 21, gz=True)
    write_source(b, 170, 22)
    kw = dict(split="random:0.6,0.2,0.2:5", rows_per_shard=50, **categorical)
    opts = PrepareOptions(**kw)
    prepare([a, b], tmp_path / "ref", opts)

    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(a), str(b),
                           str(tmp_path / "out"), json.dumps(kw)], env=env, capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    state = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert state["status"] == "in_progress"
    mode = "count" if "min_count" in categorical else "write"
    assert len(list((tmp_path / "out" / ".progress").glob(f"{mode}-000-*.json"))) == 3
    # A write interrupted half-way leaves a temp file: it must not survive.
    (tmp_path / "out" / "train").mkdir(exist_ok=True)
    (tmp_path / "out" / "train" / "shard-000-00003.dense.tmp.npy").write_bytes(b"junk")

    resumed = []
    prepare([a, b], tmp_path / "out", opts, on_unit_done=resumed.append)
    units = [(0, 3), (0, 4), (0, 5), (0, 6), (1, 0), (1, 1), (1, 2), (1, 3)]
    everything = [(0, u) for u in range(7)] + [(1, u) for u in range(4)]
    if "min_count" in categorical:        # killed in the vocabulary-counting pass
        want = [("count", *u) for u in units] + [("write", *u) for u in everything]
    else:
        want = [("write", *u) for u in units]
    assert [(r["pass"], r["source"], r["unit"]) for r in resumed] == want
    assert tree(tmp_path / "out") == tree(tmp_path / "ref")      # manifest included

    # Finished: a rerun is a no-op; other options are refused.
    before = tree(tmp_path / "out")
    assert prepare([a, b], tmp_path / "out", opts)["status"] == "complete"
    assert tree(tmp_path / "out") == before
    with pytest.raises(UserError, match="other options .*rows_per_shard"):
        prepare([a, b], tmp_path / "out", PrepareOptions(**dict(kw, rows_per_shard=60)))


def run_cli(capsys, *args):
    rc = main([*map(str, args), "--quiet"])
    err = capsys.readouterr().err
    return rc, err


@pytest.mark.parametrize("line_no,text,what", [
    (7, "1\t2\t3", "expected 40 tab-separated fields"),
    (300, EDGE.replace("ABCDEF12", "ABCDEFG2"), "C4 must be 1 to 8 hex digits"),
    (1, EDGE.replace("\t007\t", "\t0.7\t"), "I5 must be an integer"),
    (12, "x" + EDGE[1:], "label must be 0 or 1"),
])
def test_bad_row_stops_with_file_line(tmp_path, capsys, line_no, text, what):
    src = tmp_path / "bad.tsv"
    write_source(src, 400, 5, extra=[(line_no - 1, text)])
    rc, err = run_cli(capsys, "--src", src, "--out", tmp_path / "o", "--rows-per-shard", 100)
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith(f"{src}:{line_no}: {what}")
    assert not (tmp_path / "o").exists()                    # nothing half-written


@pytest.mark.parametrize("split", ["none", "kaggle-dlrm"])   # kaggle-dlrm counts lines first
def test_empty_file_and_truncated_gzip(tmp_path, capsys, split):
    (tmp_path / "empty.tsv").write_bytes(b"")
    rc, err = run_cli(capsys, "--src", tmp_path / "empty.tsv", "--out", tmp_path / "o",
                      "--on-bad-row", "skip", "--split", split)
    assert rc == 2 and err == f"{tmp_path / 'empty.tsv'}:1: file is empty (no rows)\n"
    assert not (tmp_path / "o").exists()

    data = cf.format_rows(cf.synthetic_rows(6000, 6))
    packed = gzip.compress(data, mtime=0)
    cut = packed[:len(packed) * 2 // 3]
    (tmp_path / "t.gz").write_bytes(cut)
    prefix = zlib.decompressobj(wbits=31).decompress(cut)
    rc, err = run_cli(capsys, "--src", tmp_path / "t.gz", "--out", tmp_path / "o",
                      "--on-bad-row", "skip", "--rows-per-shard", 1000, "--split", split)
    line_no = prefix.count(b"\n") + 1           # the line the data ends in
    assert rc == 2 and err.count("\n") == 1
    assert err.startswith(f"{tmp_path / 't.gz'}:{line_no}: gzip stream is truncated")
    assert not (tmp_path / "o").exists()


def test_skip_counts_bad_rows_per_reason(tmp_path):
    bad = [(3, "1\t2"), (10, ""), (40, "2" + EDGE[1:]), (41, EDGE.replace("007", "7e3")),
           (90, EDGE.replace("68fd1e64", "68fd1e6z", 1)), (91, EDGE + "\r")]
    lines = write_source(tmp_path / "a.tsv", 200, 7, extra=bad)
    m = prepare([tmp_path / "a.tsv"], tmp_path / "o", PrepareOptions(
        on_bad_row="skip", rows_per_shard=32, hash_rows=(50,) * 26))
    assert m["bad_rows"]["by_reason"] == {"bad_categorical": 1, "bad_dense": 1, "bad_label": 1,
                                          "control_character": 1, "wrong_field_count": 2}
    assert m["bad_rows"]["total"] == 6 and m["rows"] == 200 and m["lines"] == 206
    assert m["bad_rows"]["examples"][0] == f"{tmp_path / 'a.tsv'}:4: expected 40 " \
        "tab-separated fields (label, I1-I13, C1-C26), found 2"
    good = [ln for ln in lines if ln not in {b.encode() for _, b in bad}]
    got = read_split(tmp_path / "o", m, "all")
    assert got["labels"].tolist() == [cf.parse_line(ln)[0] for ln in good]


def test_output_dir_and_cli_errors(tmp_path, capsys):
    write_source(tmp_path / "a.tsv", 20, 8)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    for args, msg in [
        (["--src", tmp_path / "a.tsv", "--out", tmp_path / "busy"], "holds no manifest.json"),
        (["--src", tmp_path / "nope.tsv", "--out", tmp_path / "o"], "no such file"),
        (["--src", tmp_path / "a.tsv", "--out", tmp_path / "o", "--hash-rows", "1"], "[2, 2^31-1]"),
        (["--src", tmp_path / "a.tsv", "--out", tmp_path / "o", "--split", "weekly"], "--split"),
        (["--src", tmp_path / "a.tsv", "--out", tmp_path / "o", "--bogus"], "unrecognized"),
        (["--src", tmp_path / "a.tsv", "--out", tmp_path / "o", "--min-count", "2",
          "--hash-rows", "9"], "not allowed with"),
    ]:
        rc, err = run_cli(capsys, *args)
        assert rc == 2 and err.count("\n") == 1 and msg in err, err
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o500)
    if not os.access(tmp_path / "ro", os.W_OK):           # (root may write anyway)
        rc, err = run_cli(capsys, "--src", tmp_path / "a.tsv", "--out", tmp_path / "ro" / "o")
        assert rc == 2 and err.count("\n") == 1 and "Permission denied" in err
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"
    assert not (tmp_path / "o").exists()
    assert main(["--help"]) == 0


def test_project_cli_dispatches_to_prepare(tmp_path, capsys):
    from dlrm_jax.cli import main as cli_main
    write_source(tmp_path / "a.tsv", 30, 31)
    assert cli_main(["data", "criteo-prepare", "--src", str(tmp_path / "a.tsv"),
                     "--out", str(tmp_path / "o"), "--split", "head:20", "--quiet"]) == 0
    assert json.loads((tmp_path / "o" / "manifest.json").read_text())["rows"] == 30
    assert cli_main(["data", "criteo-prepare", "--src", str(tmp_path / "nope"),
                     "--out", str(tmp_path / "p")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
