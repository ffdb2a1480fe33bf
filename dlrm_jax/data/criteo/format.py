"""The Criteo click-log text format: parsing, validation, transforms, hashing.

A line is `label \\t I1..I13 \\t C1..C26 \\n` (40 tab-separated fields):
label "0" or "1"; I1-I13 decimal integers (may be negative) or empty; C1-C26
1 to 8 hex digits (the logs always use 8) or empty.  Empty means missing.

Two parsers that must agree:
* `parse_block` (the fast one): numpy over a block of whole lines.  It finds
  every tab/newline at once, then reads each field as the 8-byte little-endian
  word that ends at the field's end and decodes all fields of a column in a
  handful of vector ops ("SWAR": SIMD within a register).  Fields longer than
  8 bytes (rare dense values) go through a slow path.
* `parse_line` (the reference): plain Python, one line; gives the exact
  `FILE:LINE` message for a bad row and is the oracle in the tests.

Transforms (recorded in the manifest by name):
* dense `log1p` (reference DLRM): missing -> 0, negative -> 0, then log(x + 1);
  `signed-log1p`: sign(x) log(1 + |x|); `none`: the raw value as a float.
* categorical `hash`: id = 0 if missing else 1 + (int(hex, 16) mod (rows - 1)),
  so each table has `rows` rows and missing owns row 0.  The raw values are
  already uniform 32-bit hashes in the logs, so plain modulo spreads them
  evenly (the reference DLRM's `--max-ind-range` uses the same modulo).
"""
from __future__ import annotations

import re
from typing import NamedTuple

import numpy as np

from ..base import NUM_DENSE, NUM_SPARSE

NUM_FIELDS = 1 + NUM_DENSE + NUM_SPARSE  # 40
DENSE_NAMES = tuple(f"I{i}" for i in range(1, NUM_DENSE + 1))
CAT_NAMES = tuple(f"C{i}" for i in range(1, NUM_SPARSE + 1))
FIELD_NAMES = ("label",) + DENSE_NAMES + CAT_NAMES

# Reasons a row is bad (index = code in ParsedBlock.reasons; 0 = good).
REASONS = ("ok", "wrong_field_count", "control_character", "bad_label",
           "bad_dense", "bad_categorical")
_FIELDS, _CTRL, _LABEL, _DENSE, _CAT = 1, 2, 3, 4, 5
MAX_DENSE_DIGITS = 18  # fits int64

DENSE_TRANSFORMS = ("log1p", "signed-log1p", "none")
HASH_RULE = "id = 0 if missing else 1 + (int(hex, 16) mod (rows - 1))"


class BadRow(ValueError):
    """One bad line: `reason` is a key of REASONS, the message says what."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class Rows(NamedTuple):
    """Parsed good rows, raw values (before transforms).  n rows."""
    labels: np.ndarray         # [n] uint8 in {0, 1}
    dense: np.ndarray          # [n, 13] int64, 0 where missing
    dense_missing: np.ndarray  # [n, 13] bool
    cats: np.ndarray           # [n, 26] uint32 (the hex value), 0 where missing
    cat_missing: np.ndarray    # [n, 26] bool


class ParsedBlock(NamedTuple):
    rows: Rows               # the good lines, in order
    good: np.ndarray         # [lines] bool: line parsed into rows
    reasons: np.ndarray      # [lines] uint8 code into REASONS (0 for good lines)
    line_ends: np.ndarray    # [lines] int64 offset just past each line's "\n"


# ---------------------------------------------------------------------------
# Reference parser (one line, pure Python)
# ---------------------------------------------------------------------------
_DENSE_RE = re.compile(rb"-?[0-9]{1,%d}" % MAX_DENSE_DIGITS)
_HEX_RE = re.compile(rb"[0-9a-fA-F]{1,8}")
_CTRL_RE = re.compile(rb"[\x00-\x08\x0a-\x1f]")


def _show(field: bytes) -> str:
    text = field.decode("utf-8", "replace")
    return repr(text if len(text) <= 40 else text[:37] + "...")


def parse_line(line: bytes) -> tuple[int, list, list]:
    """(label, dense values or None, categorical 32-bit values or None).

    `line` excludes the trailing newline.  Raises BadRow.
    """
    ctrl = _CTRL_RE.search(line)
    fields = line.split(b"\t")
    if len(fields) != NUM_FIELDS:
        raise BadRow("wrong_field_count",
                     f"expected {NUM_FIELDS} tab-separated fields (label, I1-I13, "
                     f"C1-C26), found {len(fields)}")
    if ctrl:
        hint = " (Windows line ending?)" if ctrl.group() == b"\r" else ""
        raise BadRow("control_character",
                     f"control character {ctrl.group()!r} in the line{hint}")
    if fields[0] not in (b"0", b"1"):
        raise BadRow("bad_label", f"label must be 0 or 1, found {_show(fields[0])}")
    dense = []
    for name, f in zip(DENSE_NAMES, fields[1:1 + NUM_DENSE]):
        if not f:
            dense.append(None)
        elif _DENSE_RE.fullmatch(f):
            dense.append(int(f))
        else:
            raise BadRow("bad_dense", f"{name} must be an integer of at most "
                         f"{MAX_DENSE_DIGITS} digits or empty, found {_show(f)}")
    cats = []
    for name, f in zip(CAT_NAMES, fields[1 + NUM_DENSE:]):
        if not f:
            cats.append(None)
        elif _HEX_RE.fullmatch(f):
            cats.append(int(f, 16))
        else:
            raise BadRow("bad_categorical",
                         f"{name} must be 1 to 8 hex digits or empty, found {_show(f)}")
    return int(fields[0]), dense, cats


# ---------------------------------------------------------------------------
# Fast block parser
# ---------------------------------------------------------------------------
_U = np.uint64
_M01, _M06 = _U(0x0101010101010101), _U(0x0606060606060606)
_M0F, _MF0 = _U(0x0F0F0F0F0F0F0F0F), _U(0xF0F0F0F0F0F0F0F0)
_M20, _M30 = _U(0x2020202020202020), _U(0x3030303030303030)
# For a field of L <= 8 bytes ending at the word's end, the field is the top L
# bytes of the little-endian word: KEEP[L] keeps them, PAD_ZEROS[L] fills the
# other bytes with ASCII '0' (a neutral left pad for decimal and hex alike).
_KEEP = np.array([0] + [((1 << (8 * n)) - 1) << (8 * (8 - n)) for n in range(1, 9)],
                 dtype=np.uint64)
_PAD_ZEROS = ~_KEEP & _M30
_FIRST_SHIFT = np.array([0] + [8 * (8 - n) for n in range(1, 9)], dtype=np.uint64)
_PAD = b"\t" * 8  # so every field has 8 bytes before its end


def _words(a: np.ndarray) -> np.ndarray:
    """Overlapping view: _words(a)[i] = the little-endian uint64 at a[i:i+8]."""
    return np.ndarray((a.size - 7,), dtype="<u8", buffer=a, offset=0, strides=(1,))


def _decode_hex8(w: np.ndarray):
    """8 ASCII hex chars per uint64 (first char in the low byte) -> (uint32, ok).

    In-place ops on two temporaries: this runs on every categorical field.
    """
    nib = w >> _U(6)                      # '0'-'9' -> low nibble; letters: +9
    nib &= _M01
    nib *= _U(9)
    t = w & _M0F
    nib += t
    # Valid iff re-encoding the nibbles gives the (lower-cased) input back.
    np.add(nib, _M06, out=t)
    t >>= _U(4)
    t &= _M01
    t *= _U(39)
    t += nib
    t += _M30
    ok = t == (w | _M20)
    np.bitwise_and(nib, _MF0, out=t)
    ok &= t == 0
    for shift, mask in ((4, 0x00FF00FF00FF00FF), (8, 0x0000FFFF0000FFFF),
                        (16, 0x00000000FFFFFFFF)):   # merge nibbles pairwise
        np.left_shift(nib, _U(shift), out=t)
        nib >>= _U(2 * shift)
        nib |= t
        nib &= _U(mask)
    return nib.astype(np.uint32), ok


def _decode_dec8(w: np.ndarray, n: np.ndarray):
    """Signed decimal of n <= 8 chars at the top of each word -> (int64, ok)."""
    w = w & _KEEP[n]
    w |= _PAD_ZEROS[n]
    shift = _FIRST_SHIFT[n]
    t = w >> shift
    t &= _U(0xFF)
    neg = (t == _U(0x2D)) & (n >= 2)                       # leading '-'
    np.left_shift(_U(3), shift, out=t)
    w += np.where(neg, t, _U(0))                           # '-' -> '0'
    np.bitwise_and(w, _MF0, out=t)
    ok = t == _M30                                         # all '0'-'9'
    np.add(w, _M06, out=t)
    t &= _MF0
    ok &= t == _M30
    w -= _M30
    for mul, shift, mask in ((10, 8, 0x00FF00FF00FF00FF), (100, 16, 0x0000FFFF0000FFFF),
                             (10000, 32, 0x00000000FFFFFFFF)):
        np.right_shift(w, _U(shift), out=t)
        w *= _U(mul)
        w += t
        w &= _U(mask)
    d = w.view(np.int64)
    np.negative(d, out=d, where=neg)
    return d, ok


def parse_block(buf: bytes) -> ParsedBlock:
    """Parse whole lines; `buf` must end with b"\\n" (or be empty)."""
    # Each field is read as the 8-byte word ending at its end.  Fields ending
    # before byte 8 (first line only) take it from a padded copy of the head.
    if len(buf) < 16:
        buf = _PAD + bytes(buf)
        off = 8
    else:
        off = 0
    a = np.frombuffer(buf, np.uint8)
    sep = np.flatnonzero(a < 32)           # tabs, newlines, other control bytes
    if off:
        sep = sep[sep >= off]
    kinds = a[sep]
    is_nl = kinds == 10
    nl = sep[is_nl]
    lines = nl.size
    line_start = np.empty(lines, np.int64)
    line_start[:1] = off
    line_start[1:] = nl[:-1] + 1
    reasons = np.zeros(lines, np.uint8)
    if (sep.size == NUM_FIELDS * lines and is_nl[NUM_FIELDS - 1::NUM_FIELDS].all()
            and np.count_nonzero(kinds == 9) == (NUM_FIELDS - 1) * lines):
        cand = None                          # every line has 40 fields
        ends = sep.reshape(lines, NUM_FIELDS)
    else:
        line_of = np.cumsum(is_nl) - is_nl    # the newline belongs to its line
        count = np.bincount(line_of[kinds == 9], minlength=lines) + 1   # fields
        ctrl = np.bincount(line_of[(kinds != 9) & ~is_nl], minlength=lines) > 0
        reasons[count != NUM_FIELDS] = _FIELDS
        reasons[(count == NUM_FIELDS) & ctrl] = _CTRL
        cand = np.flatnonzero(reasons == 0)
        ends = sep[(reasons == 0)[line_of]].reshape(cand.size, NUM_FIELDS)
        line_start = line_start[cand]
    w8 = _words(a)
    head = _words(np.frombuffer(_PAD + bytes(buf[:8]), np.uint8))   # head[e] ends at e < 8
    lens = ends[:, 1:] - ends[:, :-1] - 1                       # fields 1..39

    first = a[line_start]
    label_ok = (ends[:, 0] - line_start == 1) & ((first | 1) == 49)   # '0' or '1'

    dlen = lens[:, :NUM_DENSE]
    dend = ends[:, 1:1 + NUM_DENSE]
    words = w8[dend - 8]
    if dend.shape[0] and dend[0, 0] < 8:
        early = np.flatnonzero(dend[0] < 8)
        words[0, early] = head[dend[0, early]]
    dense, dok = _decode_dec8(words, np.minimum(dlen, 8))
    for i, j in zip(*np.nonzero(dlen > 8)):                    # rare long values
        e = ends[i, 1 + j]
        f = a[e - dlen[i, j]:e].tobytes()
        dok[i, j] = _DENSE_RE.fullmatch(f) is not None
        dense[i, j] = int(f) if dok[i, j] else 0

    clen = lens[:, NUM_DENSE:]
    cats, cok = _decode_hex8(w8[ends[:, 1 + NUM_DENSE:] - 8])   # the logs: 8 digits or empty
    cok |= clen == 0
    short = (clen > 0) & (clen < 8)
    if short.any():                                              # 1-7 digits: mask first
        i, j = np.nonzero(short)
        n = clen[i, j]
        cats[i, j], cok[i, j] = _decode_hex8(
            (w8[ends[i, 1 + NUM_DENSE + j] - 8] & _KEEP[n]) | _PAD_ZEROS[n])
    cok &= clen <= 8
    cats[clen == 0] = 0

    dense_ok, cat_ok = dok.all(axis=1), cok.all(axis=1)
    good_c = label_ok & dense_ok & cat_ok
    rows = Rows(first - 48, dense, dlen == 0, cats, clen == 0)
    if not good_c.all():
        code = np.where(~label_ok, _LABEL, np.where(~dense_ok, _DENSE, _CAT))
        if cand is None:
            reasons[~good_c] = code[~good_c]
        else:
            reasons[cand[~good_c]] = code[~good_c]
        rows = Rows(*(x[good_c] for x in rows))
    return ParsedBlock(rows, reasons == 0, reasons, nl + 1 - off)


# ---------------------------------------------------------------------------
# Transforms
# ---------------------------------------------------------------------------
def transform_dense(raw: np.ndarray, missing: np.ndarray, kind: str,
                    dtype=np.float32) -> np.ndarray:
    """Raw int64 [n, 13] -> float [n, 13] (missing is already 0 in `raw`)."""
    x = raw.astype(np.float64)
    if kind == "log1p":
        out = np.log1p(np.maximum(x, 0.0))
    elif kind == "signed-log1p":
        out = np.sign(x) * np.log1p(np.abs(x))
    elif kind == "none":
        out = x
    else:
        raise ValueError(f"unknown dense transform {kind!r}")
    out[missing] = 0.0
    with np.errstate(over="ignore"):      # float16 + "none": large counts become inf
        return out.astype(dtype)


def hash_ids(cats: np.ndarray, missing: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Raw uint32 [n, 26] -> int32 ids with HASH_RULE; rows: [26] table rows."""
    m = (np.asarray(rows, np.int64) - 1).astype(np.uint32)    # rows <= 2^31 - 1
    ids = np.remainder(cats, m, dtype=np.uint32)               # 32-bit division: 2x faster
    ids += np.uint32(1)
    ids[missing] = 0
    return ids.view(np.int32)


# ---------------------------------------------------------------------------
# Writing the format (for tests, benchmarks and examples)
# ---------------------------------------------------------------------------
def format_rows(rows: Rows) -> bytes:
    """Criteo TSV text of `rows` (hex written as 8 lower-case digits)."""
    n = rows.labels.shape[0]
    step = 1 << 16                      # bounded temporaries
    return b"".join(_format_chunk(Rows(*(x[i:i + step] for x in rows)))
                    for i in range(0, n, step))


_HEX_CHARS = np.frombuffer(b"0123456789abcdef", np.uint8)


def _format_chunk(rows: Rows) -> bytes:
    n = rows.labels.shape[0]
    dense = rows.dense.astype(np.int64)
    mag = np.abs(dense)
    ndig = np.ones_like(mag)
    for k in range(1, MAX_DENSE_DIGITS + 1):
        ndig += mag >= 10 ** k
    dlen = np.where(rows.dense_missing, 0, ndig + (dense < 0))
    clen = np.where(rows.cat_missing, 0, 8)
    flen = np.concatenate([np.ones((n, 1), np.int64), dlen, clen], axis=1) + 1
    fend = np.cumsum(flen.ravel()).reshape(n, NUM_FIELDS)     # one past separator
    fstart = fend - flen
    buf = np.full(int(fend[-1, -1]) + 1, 9, np.uint8)   # last byte: scratch
    scratch = buf.size - 1
    buf[fend[:, -1] - 1] = 10
    buf[fstart[:, 0]] = 48 + rows.labels.astype(np.uint8)
    ds = fstart[:, 1:1 + NUM_DENSE]
    present = ~rows.dense_missing
    buf[np.where(present & (dense < 0), ds, scratch)] = ord("-")
    last = ds + dlen - 1
    for k in range(int(ndig.max())):
        buf[np.where(present & (k < ndig), last - k, scratch)] = 48 + (mag // 10 ** k) % 10
    # 8 hex digits per present categorical: big-endian bytes -> two nibbles each
    be = rows.cats.astype(">u4").view(np.uint8).reshape(n, NUM_SPARSE, 4)
    chars = _HEX_CHARS[np.stack([be >> 4, be & 15], axis=-1).reshape(n, NUM_SPARSE, 8)]
    pos = fstart[:, 1 + NUM_DENSE:, None] + np.arange(8)
    pos[rows.cat_missing] = scratch
    buf[pos] = chars
    return buf[:-1].tobytes()


def synthetic_rows(n: int, seed: int = 0) -> Rows:
    """Criteo-like random rows: ~25% clicks, skewed counts with some negatives,
    per-column missing rates, heavy-tailed ids over random 32-bit values."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.25).astype(np.uint8)
    dense = np.floor(rng.lognormal(1.0, 2.0, (n, NUM_DENSE))).astype(np.int64)
    dense[:, 1] -= 3                                   # I2 has negatives in the logs
    dense = np.minimum(dense, 10 ** 9)
    dense_missing = rng.random((n, NUM_DENSE)) < np.linspace(0.0, 0.45, NUM_DENSE)
    dense[dense_missing] = 0
    cats = np.empty((n, NUM_SPARSE), np.uint32)
    for j in range(NUM_SPARSE):
        size = int(10 ** rng.uniform(0.5, 5.5)) + 1
        vocab = rng.integers(0, 2 ** 32, size, dtype=np.uint64).astype(np.uint32)
        # log-uniform ranks: a heavy head and a long tail, like the real logs
        cats[:, j] = vocab[(size ** rng.random(n)).astype(np.int64) - 1]
    cat_missing = rng.random((n, NUM_SPARSE)) < np.linspace(0.0, 0.4, NUM_SPARSE)
    cats[cat_missing] = 0
    return Rows(labels, dense, dense_missing, cats, cat_missing)
