"""Criteo line parsing: the fast block parser against exact values and the
reference line parser, every field kind, every bad-row reason."""
import numpy as np
import pytest

from dlrm_jax.data.criteo import format as cf


def line(label="1", dense=None, cats=None) -> bytes:
    dense = dense if dense is not None else [""] * 13
    cats = cats if cats is not None else [""] * 26
    return "\t".join([label] + dense + cats).encode()


EDGE_DENSE = ["", "0", "7", "-1", "-12", "007", "12345678", "-1234567", "123456789",
              "-99999999", "123456789012345678", "-123456789012345678", "1"]
EDGE_CATS = ["", "00000000", "ffffffff", "FFFFFFFF", "68fd1e64", "A", "0", "1f", "abc",
             "1234", "12345", "123456", "1234567", "DeadBeef", "7", "", "", "fffffff0",
             "0000000a", "", "c5c50484", "e8b83407", "9727dd16", "1", "2", "3"]


def test_reference_parser_exact_values():
    label, dense, cats = cf.parse_line(line("0", EDGE_DENSE, EDGE_CATS))
    assert label == 0
    assert dense == [None, 0, 7, -1, -12, 7, 12345678, -1234567, 123456789, -99999999,
                     123456789012345678, -123456789012345678, 1]
    assert cats[:6] == [None, 0, 0xFFFFFFFF, 0xFFFFFFFF, 0x68FD1E64, 0xA]
    assert cats[13] == 0xDEADBEEF and cats[15] is None and cats[17] == 0xFFFFFFF0


def test_block_parser_exact_values_every_field_kind():
    lines = [line("0", EDGE_DENSE, EDGE_CATS), line("1", EDGE_DENSE[::-1], EDGE_CATS[::-1])]
    pb = cf.parse_block(b"\n".join(lines) + b"\n")
    assert pb.good.tolist() == [True, True]
    assert pb.line_ends.tolist() == [len(lines[0]) + 1, len(lines[0]) + len(lines[1]) + 2]
    for i, text in enumerate(lines):
        label, dense, cats = cf.parse_line(text)
        assert pb.rows.labels[i] == label
        assert pb.rows.dense_missing[i].tolist() == [d is None for d in dense]
        assert pb.rows.dense[i].tolist() == [0 if d is None else d for d in dense]
        assert pb.rows.cat_missing[i].tolist() == [c is None for c in cats]
        assert pb.rows.cats[i].tolist() == [0 if c is None else c for c in cats]
    assert pb.rows.dense.dtype == np.int64 and pb.rows.cats.dtype == np.uint32


def test_block_parser_agrees_with_reference_on_random_rows():
    rows = cf.synthetic_rows(3000, seed=5)
    text = cf.format_rows(rows)
    pb = cf.parse_block(text)
    assert pb.good.all()
    for got, want in zip(pb.rows, rows):
        np.testing.assert_array_equal(got, want)
    for i, ln in enumerate(text.split(b"\n")[:-1:97]):
        label, dense, cats = cf.parse_line(ln)
        j = i * 97
        assert [0 if d is None else d for d in dense] == rows.dense[j].tolist()
        assert [0 if c is None else c for c in cats] == rows.cats[j].tolist()


BAD = [
    (b"1\t2\t3", "wrong_field_count"),
    (b"", "wrong_field_count"),
    (line() + b"\t", "wrong_field_count"),
    (line() + b"\r", "control_character"),           # CRLF line ending
    (line()[:-1] + b"\r", "wrong_field_count"),      # a control byte is no separator
    (line("1", None, ["\x00"] + [""] * 25), "control_character"),
    (line("2"), "bad_label"),
    (line(""), "bad_label"),
    (line("01"), "bad_label"),
    (line("1", ["1.5"] + [""] * 12), "bad_dense"),
    (line("1", [""] * 5 + ["abc"] + [""] * 7), "bad_dense"),
    (line("1", ["-"] + [""] * 12), "bad_dense"),
    (line("1", ["--1"] + [""] * 12), "bad_dense"),
    (line("1", ["+1"] + [""] * 12), "bad_dense"),
    (line("1", [""] * 12 + ["1" * 19]), "bad_dense"),
    (line("1", [""] * 12 + ["1234567890x"]), "bad_dense"),
    (line("1", None, ["zz"] + [""] * 25), "bad_categorical"),
    (line("1", None, [""] * 25 + ["123456789"]), "bad_categorical"),
    (line("1", None, [""] * 7 + ["g0000000"] + [""] * 18), "bad_categorical"),
    (line("1", None, [""] * 3 + ["12 4"] + [""] * 22), "bad_categorical"),
]


@pytest.mark.parametrize("text,reason", BAD)
def test_bad_rows_same_reason_in_both_parsers(text, reason):
    good = line("1", ["5"] * 13, ["0a0b0c0d"] * 26)
    pb = cf.parse_block(b"\n".join([good, text, good]) + b"\n")
    assert pb.good.tolist() == [True, False, True]
    assert cf.REASONS[pb.reasons[1]] == reason
    assert pb.rows.labels.size == 2 and pb.rows.dense[1, 0] == 5
    with pytest.raises(cf.BadRow) as e:
        cf.parse_line(text)
    assert e.value.reason == reason


def test_every_byte_in_a_hex_field():
    for b in range(32, 256):
        for width in (1, 8):
            field = bytes([b]) * width
            text = line("1", None, [""] * 20 + [field.decode("latin-1")] + [""] * 5)
            text = text.replace(field.decode("latin-1").encode(), field)
            pb = cf.parse_block(text + b"\n")
            valid = chr(b) in "0123456789abcdefABCDEF"
            assert bool(pb.good[0]) == valid, (b, width)
            if valid:
                assert pb.rows.cats[0, 20] == int(field, 16)


def test_every_byte_in_a_dense_field():
    for b in range(32, 256):
        field = bytes([b, b])
        text = b"\t".join([b"1"] + [b""] * 4 + [field] + [b""] * 34)
        pb = cf.parse_block(text + b"\n")
        assert bool(pb.good[0]) == (chr(b) in "0123456789"), b


def test_transforms():
    raw = np.array([[0, 1, -5, 1000, 7] + [0] * 8], np.int64)
    miss = np.zeros_like(raw, bool)
    miss[0, 4] = True
    out = cf.transform_dense(raw, miss, "log1p")
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out[0, :5], np.float32([0, np.log(2), 0, np.log(1001), 0]))
    s = cf.transform_dense(raw, miss, "signed-log1p", np.float16)
    assert s.dtype == np.float16 and s[0, 2] == np.float16(-np.log(6))
    np.testing.assert_array_equal(cf.transform_dense(raw, miss, "none")[0, :5], [0, 1, -5, 1000, 0])


def test_hash_rule():
    cats = np.array([[0, 9, 0xFFFFFFFF] + [5] * 23], np.uint32)
    miss = np.zeros_like(cats, bool)
    miss[0, 3] = True
    rows = np.array([10] * 26)
    ids = cf.hash_ids(cats, miss, rows)
    assert ids.dtype == np.int32
    assert ids[0, :4].tolist() == [1, 1, 1 + 0xFFFFFFFF % 9, 0]   # missing owns id 0
    assert ids.max() < 10


def test_format_rows_roundtrip_and_missing_last_newline():
    rows = cf.synthetic_rows(50, seed=1)
    text = cf.format_rows(rows)
    assert text.count(b"\n") == 50 and text.split(b"\n")[0].count(b"\t") == 39
    pb = cf.parse_block(text[:-1] + b"\n")
    assert pb.good.all() and pb.rows.labels.tolist() == rows.labels.tolist()


def test_every_line_as_the_first_of_a_block():
    """Fields that end within a block's first 8 bytes are read differently."""
    rows = cf.synthetic_rows(60, seed=11)
    rows.dense[::3, :4] = rows.dense[::3, :4] % 10        # short leading fields
    rows.dense_missing[::4, :3] = True
    lines = cf.format_rows(rows).split(b"\n")[:-1]
    lines += [line("1", EDGE_DENSE, EDGE_CATS), line("0", ["-1"] * 13, ["7"] * 26),
              b"", b"1", b"0\t\t", line("1", ["9"] * 13, ["a"] * 26)]
    for k in range(len(lines)):
        window = lines[k:k + 3]
        pb = cf.parse_block(b"\n".join(window) + b"\n")
        good = 0
        for i, ln in enumerate(window):
            try:
                label, dense, cats = cf.parse_line(ln)
            except cf.BadRow as e:
                assert cf.REASONS[pb.reasons[i]] == e.reason
                continue
            assert pb.good[i]
            assert pb.rows.labels[good] == label
            assert pb.rows.dense[good].tolist() == [0 if d is None else d for d in dense]
            assert pb.rows.cats[good].tolist() == [0 if c is None else c for c in cats]
            good += 1
        assert good == pb.rows.labels.size
