"""Prepared Criteo shards as a `DataSource` for the train loop.

    source = CriteoSource("data/kaggle", train_split="train", eval_split="val",
                          shuffle_window=1 << 20, seed=0)
    # or, from config: data.source=criteo:DATA_DIR

The training split is an endless stream: position p is row p % N of epoch
p // N.  With `shuffle_window` W > 0 the split is cut into windows of W
consecutive rows; each epoch visits the windows in a permuted order and the
rows of each window in a permuted order, both drawn from (seed, epoch[,
window]) only, so every position maps to one row whatever the batch size,
host count or resume point.  Reads stay sequential on disk (one window at a
time).  W = 0 reads in stored order; W >= N shuffles the whole split.

Multi-host: each host reads only its contiguous slice of every global batch.
A background thread keeps `prefetch` batches ready.  Shapes: dense float32
[B, 13], sparse int32 [B, 26], labels float32 [B].  Batches may be read-only
views of the memory-mapped shards (copy before writing into them).

On a bucket (`criteo:gs://bucket/data`) nothing is memory-mapped: each `.npy`
header is read once, then every read is byte ranges of the rows asked for, all
columns and shards of one read in flight together (`storage.read_ranges`), so
a host reads only its own rows.  With `shuffle_window` > 0 every host would
read each whole window and keep its slice: on a bucket, with several hosts,
that is refused (host-count times the bytes); one host reads each window once.
"""
from __future__ import annotations

import io
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import numpy as np

from dlrm_jax.errors import UserError
from dlrm_jax.run import storage

from ..base import NUM_DENSE, NUM_SPARSE, Batch
from ..prefetch import prefetch
from . import manifest as manifest_io


class _RemoteNpy:
    """One `.npy` file on a bucket: its header read once, then rows by byte range."""

    HEAD = 4096  # np.save headers are ~128 bytes; a longer one is read again in full

    def __init__(self, path: str):
        head = storage.read_ranges([path], [0], [self.HEAD])[0]
        try:
            version = np.lib.format.read_magic(io.BytesIO(head))
            size = 2 if version == (1, 0) else 4  # the header length field
            self.offset = 8 + size + int.from_bytes(head[8:8 + size], "little")
            if self.offset > len(head):
                head = storage.read_ranges([path], [0], [self.offset])[0]
            f = io.BytesIO(head[:self.offset])
            np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, self.dtype = read(f)
        except ValueError as err:
            raise UserError(f"{path}: not a .npy file ({err})") from None
        if fortran:
            raise UserError(f"{path}: Fortran-ordered .npy; prepare the data again")
        self.path, self.shape = path, shape
        self.row_bytes = self.dtype.itemsize * math.prod(shape[1:])

    def span(self, a: int, b: int) -> tuple[int, int]:
        """The byte range of rows [a, b)."""
        return self.offset + a * self.row_bytes, self.offset + b * self.row_bytes

    def rows(self, data: bytes, a: int, b: int) -> np.ndarray:
        if len(data) != (b - a) * self.row_bytes:
            raise UserError(f"{self.path}: {len(data)} bytes where rows [{a}, {b}) should be; "
                            f"the shard is shorter than its header says")
        return np.frombuffer(data, self.dtype).reshape((b - a, *self.shape[1:]))


class _Split:
    """One split's shards, memory-mapped lazily (on a bucket: headers read lazily); rows
    in stored order."""

    def __init__(self, data_dir, name: str, manifest: dict):
        self.dir, self.name = data_dir, name
        self.remote = storage.is_remote(data_dir)
        self.shards = manifest["splits"][name]["shards"]
        self.starts = np.concatenate([[0], np.cumsum([s["rows"] for s in self.shards])])
        self.rows = int(self.starts[-1])
        self._maps: dict[int, dict] = {}
        self._lock = threading.Lock()

    def _shard(self, i: int) -> dict:
        with self._lock:
            if i not in self._maps:
                files = manifest_io.shard_files(self.dir, self.name, self.shards[i])
                self._maps[i] = ({c: _RemoteNpy(p) for c, p in files.items()} if self.remote
                                 else {c: np.load(p, mmap_mode="r") for c, p in files.items()})
            return self._maps[i]

    def _read_remote(self, segments: list[tuple[int, int, int]]) -> list[tuple]:
        """(dense, sparse, labels) of each (shard, a, b): one ranged read per column and shard."""
        cols = [(self._shard(i)[c], a, b) for i, a, b in segments for c in manifest_io.COLUMNS]
        spans = [col.span(a, b) for col, a, b in cols]
        data = storage.read_ranges([col.path for col, _, _ in cols], [s for s, _ in spans], [e for _, e in spans])
        arrays = [col.rows(d, a, b) for (col, a, b), d in zip(cols, data)]
        return [tuple(arrays[k:k + 3]) for k in range(0, len(arrays), 3)]

    def read(self, lo: int, hi: int) -> Batch:
        """Rows [lo, hi) in stored order, converted to the Batch dtypes."""
        if lo >= hi:
            return Batch(np.zeros((0, NUM_DENSE), np.float32),
                         np.zeros((0, NUM_SPARSE), np.int32), np.zeros(0, np.float32))
        segments = []
        i = int(np.searchsorted(self.starts, lo, side="right")) - 1
        while lo < hi:
            a, b = lo - self.starts[i], min(hi, self.starts[i + 1]) - self.starts[i]
            segments.append((i, int(a), int(b)))
            lo += b - a
            i += 1
        if self.remote:
            parts = self._read_remote(segments)
        else:
            parts = []
            for i, a, b in segments:
                s = self._shard(i)
                parts.append((s["dense"][a:b], s["sparse"][a:b], s["labels"][a:b]))
        if len(parts) == 1:     # within one shard: read-only views of the mapping, no copy
            d, s, y = parts[0]
            return Batch(np.asarray(d if d.dtype == np.float32 else d.astype(np.float32)),
                         np.asarray(s), y.astype(np.float32))
        return Batch(np.concatenate([p[0] for p in parts]).astype(np.float32, copy=False),
                     np.concatenate([p[1] for p in parts]),
                     np.concatenate([p[2] for p in parts]).astype(np.float32))


_GATHER = ThreadPoolExecutor(1, thread_name_prefix="criteo-gather")


def _take(b: Batch, idx) -> Batch:
    return Batch(b.dense[idx], b.sparse[idx], b.labels[idx])


def _concat(parts: list[Batch]) -> Batch:
    if len(parts) == 1:
        return parts[0]
    return Batch(*(np.concatenate(x) for x in zip(*parts)))


class CriteoSource:
    """The DataSource over DATA_DIR written by `criteo-prepare`."""

    def __init__(self, data_dir: str | os.PathLike, train_split: str = "train",
                 eval_split: str = "val", shuffle_window: int = 0, seed: int = 0,
                 prefetch: int = 2):
        m = manifest_io.load(data_dir)
        for role, name in (("train", train_split), ("eval", eval_split)):
            if name not in m["splits"]:
                raise UserError(f"data.{role}_split={name}: {data_dir} has splits "
                                f"{sorted(m['splits'])}")
        if shuffle_window < 0 or prefetch < 0:
            raise UserError("data.shuffle_window and prefetch must be >= 0")
        self.data_dir, self.manifest = data_dir, m
        self.table_sizes = list(m["table_sizes"])
        self._train = _Split(data_dir, train_split, m)
        self._eval = _Split(data_dir, eval_split, m)
        if self._train.rows == 0:
            raise UserError(f"data.train_split={train_split}: split of {data_dir} is empty")
        self.num_train = self._train.rows
        self.shuffle_window, self.seed, self.prefetch = shuffle_window, seed, prefetch
        self._eval_cache: Batch | None = None

    @classmethod
    def from_spec(cls, spec: str, **kwargs) -> "CriteoSource":
        """From the config value `criteo:DATA_DIR`."""
        if not spec.startswith("criteo:") or len(spec) == len("criteo:"):
            raise UserError(f"data.source={spec!r}: want criteo:DATA_DIR")
        return cls(spec[len("criteo:"):], **kwargs)

    # -- the stream -------------------------------------------------------------
    def _epoch_windows(self, epoch: int):
        """(window order, start position of each slot) of one epoch."""
        n, w = self.num_train, self.shuffle_window
        k = -(-n // w)
        order = np.random.default_rng([self.seed, epoch]).permutation(k)
        sizes = np.minimum(w, n - order * w)
        return order, np.concatenate([[0], np.cumsum(sizes)])

    def _window(self, epoch: int, k: int) -> Batch:
        """Rows of window k in epoch order: a permutation gathered per column
        on two threads (numpy's take releases the GIL)."""
        w = self.shuffle_window
        rows = self._train.read(k * w, min((k + 1) * w, self.num_train))
        perm = np.random.default_rng([self.seed, epoch, k]).permutation(rows.labels.size)
        sparse = _GATHER.submit(np.take, rows.sparse, perm, axis=0)
        return Batch(np.take(rows.dense, perm, axis=0), sparse.result(), rows.labels[perm])

    def _positions(self, p0: int, p1: int, cache: dict) -> Batch:
        """Stream positions [p0, p1) of the training split."""
        n, parts = self.num_train, []
        while p0 < p1:
            epoch, r0 = divmod(p0, n)
            r1 = min(n, r0 + (p1 - p0))
            if self.shuffle_window == 0:
                parts.append(self._train.read(r0, r1))
            else:
                if cache.get("epoch") != epoch:
                    cache.clear()
                    cache["epoch"] = epoch
                    cache["order"], cache["starts"] = self._epoch_windows(epoch)
                order, starts = cache["order"], cache["starts"]
                r = r0
                while r < r1:
                    slot = int(np.searchsorted(starts, r, side="right")) - 1
                    if cache.get("slot") != slot:
                        cache["slot"], cache["rows"] = slot, self._window(epoch, int(order[slot]))
                    a, b = r - starts[slot], min(r1, starts[slot + 1]) - starts[slot]
                    parts.append(_take(cache["rows"], slice(a, b)))
                    r += b - a
            p0 += r1 - r0
        return _concat(parts)

    def _batches(self, batch_size, start, stop, host_index, host_count) -> Iterator[Batch]:
        cache: dict = {}
        for b0 in range(start, stop, batch_size):
            size = min(batch_size, stop - b0)
            lo = b0 + host_index * size // host_count
            hi = b0 + (host_index + 1) * size // host_count
            yield self._positions(lo, hi, cache)

    def train_batches(self, batch_size: int, start: int, stop: int,
                      host_index: int = 0, host_count: int = 1) -> Iterator[Batch]:
        if batch_size < 1 or not 0 <= start <= stop:
            raise UserError(f"train_batches: bad batch_size={batch_size} or range "
                            f"[{start}, {stop})")
        if host_count < 1 or not 0 <= host_index < host_count or batch_size % host_count:
            raise UserError(f"train_batches: batch_size={batch_size} must split evenly over "
                            f"host_count={host_count} (host_index={host_index})")
        if self._train.remote and self.shuffle_window and host_count > 1:
            raise UserError(f"data.shuffle_window={self.shuffle_window} with data on a bucket "
                            f"({self.data_dir}) and {host_count} hosts: each host would read every "
                            f"whole window ({host_count}x the bytes); use data.shuffle_window=0, "
                            f"where each host reads only its rows")
        it = self._batches(batch_size, start, stop, host_index, host_count)
        return it if self.prefetch == 0 else prefetch(it, self.prefetch, name="criteo-prefetch")

    # -- evaluation ---------------------------------------------------------------
    def eval_batch(self, num_examples: int) -> Batch:
        """The first `num_examples` rows of the eval split (stored order)."""
        if not 0 < num_examples <= self._eval.rows:
            raise UserError(f"eval.examples={num_examples} but split '{self._eval.name}' of "
                            f"{self.data_dir} has {self._eval.rows} rows")
        if self._eval_cache is None or self._eval_cache.labels.size < num_examples:
            self._eval_cache = self._eval.read(0, num_examples)
        return _take(self._eval_cache, slice(0, num_examples))

    def eval_true_probs(self, num_examples: int) -> None:
        return None                      # real clicks: the true probabilities are unknown

