"""A tensorflow-datasets builder for the Criteo logs (ArrayRecord, no TensorFlow).

For users who live in the TFDS ecosystem (grain, `tfds.data_sources`).  The
training loop never needs it: `criteo-prepare` shards are the native path.

    pip install 'dlrm-scaling[tfds]'        # tensorflow-datasets + array-record
    from dlrm_jax.data.criteo.tfds import CriteoClickLogs
    b = CriteoClickLogs(config="kaggle", data_dir="~/tensorflow_datasets")
    b.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir="~/criteo"))              # holds train.txt (or day_0 .. day_23[.gz])
    train = b.as_data_source("train")        # random access, ArrayRecord files

Configs: `kaggle` (train.txt, split `kaggle-dlrm`) and `terabyte` (day_0 ..
day_23, split `terabyte`); both hash categoricals with `format.HASH_RULE`
into `hash_rows` rows and apply log1p to dense features, exactly like
`criteo-prepare` with the same options, so the examples equal the shard rows.
Each example: label int64, dense float32[13], sparse int32[26].  Examples keep
the log order (shuffling is left to the reader).  Bad rows stop the build with
`FILE:LINE: what`.

This module imports tensorflow_datasets only when `CriteoClickLogs` is used.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from dlrm_jax.errors import UserError

from . import format as cf
from .io import BlockReader, StreamError, count_lines
from .options import DEFAULT_HASH_ROWS
from .splits import day_of, parse_split

CONFIGS = {"kaggle": ("kaggle-dlrm", ("train.txt", "train.txt.gz")),
           "terabyte": ("terabyte", tuple(f"day_{d}" for d in range(24)))}


def examples(paths: Sequence[str | os.PathLike], split: str, split_name: str,
             hash_rows: int = DEFAULT_HASH_ROWS,
             dense_transform: str = "log1p") -> Iterator[tuple[str, dict]]:
    """(key, example) for every line `split` assigns to `split_name`, in log order."""
    spec = parse_split(split)
    paths = spec.order_sources([str(p) for p in paths])
    counts = [count_lines(p) if need else None
              for p, need in zip(paths, spec.needs_counts(paths))]
    plan = spec.bind(paths, counts)
    if split_name not in plan.names:
        raise UserError(f"split {split!r} has no {split_name!r}; it has {list(plan.names)}")
    code = plan.names.index(split_name)
    rows = np.full(cf.NUM_SPARSE, hash_rows, np.int64)
    for i, path in enumerate(paths):
        if spec.kind.startswith("terabyte") and (day_of(path) == 23) != (split_name != "train"):
            continue                                   # this day holds none of the split
        reader = BlockReader(path)
        try:
            for block in reader.blocks():
                pb = cf.parse_block(block.data)
                for k in np.flatnonzero(~pb.good)[:1]:
                    start = int(pb.line_ends[k - 1]) if k else 0
                    try:
                        cf.parse_line(bytes(block.data[start:int(pb.line_ends[k]) - 1]))
                    except cf.BadRow as e:
                        raise UserError(f"{path}:{block.first_line + k + 1}: {e}") from None
                r = pb.rows
                lines = block.first_line + np.arange(block.lines)
                take = np.flatnonzero(plan.assign(i, lines) == code)
                if take.size == 0:
                    continue
                dense = cf.transform_dense(r.dense[take], r.dense_missing[take], dense_transform)
                ids = cf.hash_ids(r.cats[take], r.cat_missing[take], rows)
                name = Path(path).name
                for j, line in enumerate(lines[take]):
                    yield f"{name}:{line}", {"label": int(r.labels[take[j]]),
                                             "dense": dense[j], "sparse": ids[j]}
        except StreamError as e:
            raise UserError(f"{path}: {e}") from None
        finally:
            reader.close()


def find_sources(manual_dir: str | os.PathLike, config: str) -> list[str]:
    """The config's files in `manual_dir` (plain or .gz)."""
    d = Path(manual_dir).expanduser()
    found = []
    for name in CONFIGS[config][1]:
        hits = [p for p in (d / name, d / f"{name}.gz") if p.is_file()]
        if config == "kaggle" and hits:
            return [str(hits[0])]
        found += [str(h) for h in hits[:1]]
    if not found:
        raise UserError(f"{d}: no Criteo {config} files ({CONFIGS[config][1][0]} ...); "
                        "see scripts/criteo_download_info.py")
    return found


def _define():
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise UserError("the TFDS builder needs the [tfds] extra: "
                        "pip install 'dlrm-scaling[tfds]'") from None

    class CriteoConfig(tfds.core.BuilderConfig):
        def __init__(self, *, hash_rows: int = DEFAULT_HASH_ROWS, **kwargs):
            super().__init__(**kwargs)
            self.hash_rows = hash_rows

    class CriteoClickLogs(tfds.core.GeneratorBasedBuilder):
        """Criteo click logs: Kaggle Display Advertising Challenge or 1TB."""
        VERSION = tfds.core.Version("1.0.0")
        BUILDER_CONFIGS = [
            CriteoConfig(name="kaggle", description="train.txt, 45,840,617 rows; split "
                         "kaggle-dlrm (reference DLRM)"),
            CriteoConfig(name="terabyte", description="day_0 .. day_23, 4,373,472,329 rows; "
                         "split terabyte (TorchRec/MLPerf)")]
        MANUAL_DOWNLOAD_INSTRUCTIONS = (
            "Download the logs (run scripts/criteo_download_info.py for the addresses) and "
            "put train.txt (kaggle) or day_0 .. day_23 (terabyte, .gz allowed) in manual_dir.")

        def __init__(self, *, file_format: str = "array_record", **kwargs):
            super().__init__(file_format=file_format, **kwargs)

        def _info(self):
            return self.dataset_info_from_configs(
                features=tfds.features.FeaturesDict({
                    "label": tfds.features.Scalar(dtype=np.int64),
                    "dense": tfds.features.Tensor(shape=(cf.NUM_DENSE,), dtype=np.float32),
                    "sparse": tfds.features.Tensor(shape=(cf.NUM_SPARSE,), dtype=np.int32)}),
                homepage="https://ailab.criteo.com/ressources/",
                disable_shuffling=True)

        def _split_generators(self, dl_manager):
            cfg = self.builder_config
            files = find_sources(dl_manager.manual_dir, cfg.name)
            split = CONFIGS[cfg.name][0]
            return {name: self._generate_examples(files, split, name)
                    for name in parse_split(split).names}

        def _generate_examples(self, files, split, name):
            yield from examples(files, split, name, self.builder_config.hash_rows)

    return CriteoClickLogs


_BUILDER = None


def __getattr__(name: str):
    """`CriteoClickLogs` is defined (and TFDS imported) on first use."""
    global _BUILDER
    if name == "CriteoClickLogs":
        if _BUILDER is None:
            _BUILDER = _define()
        return _BUILDER
    raise AttributeError(name)
