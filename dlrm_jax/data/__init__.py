"""Data sources: the synthetic generator (default) and prepared Criteo shards (`criteo/`)."""
from __future__ import annotations

from dlrm_jax.data.base import Batch as Batch, DataSource  # Batch: part of the package API
from dlrm_jax.data.hashing import HashedRows, table_rows_for
from dlrm_jax.errors import UserError


def make_source(cfg) -> DataSource:
    """The DataSource a Config names (`data.source`), with ids fitted to the model's table rows,
    and expanded to multi-hot bags when `model.multi_hot` asks for them (data/multihot.py)."""
    if cfg.data.source == "synthetic":   # bags are drawn by the generator itself, its teacher uses them
        from dlrm_jax.data import synthetic
        return synthetic.from_config(cfg)
    hot = cfg.model.multi_hot
    src = _one_hot_source(cfg)
    sizes = hot if isinstance(hot, tuple) else (hot,) * len(src.table_sizes)
    stored = getattr(src, "manifest", {}).get("multi_hot")     # materialised by `data criteo-multihot`
    if stored is not None:
        if tuple(stored["sizes"]) != tuple(sizes):
            raise UserError(f"data.source holds multi-hot bags of sizes {stored['sizes']}; set model.multi_hot "
                            f"to them (got {hot})")
        return src
    if max(sizes) > 1:
        from dlrm_jax.data.multihot import MultiHotSource
        return MultiHotSource(src, sizes)
    return src


def _one_hot_source(cfg) -> DataSource:
    if cfg.data.source == "synthetic":
        from dlrm_jax.data import synthetic
        return synthetic.from_config(cfg)
    if cfg.data.source.startswith("criteo:"):
        from dlrm_jax.data.criteo.source import CriteoSource
        src = CriteoSource(cfg.data.source.split(":", 1)[1], train_split=cfg.data.train_split,
                           eval_split=cfg.data.eval_split, shuffle_window=cfg.data.shuffle_window,
                           seed=cfg.seed)
        rows = table_rows_for(cfg.model.table_rows, src.table_sizes)
        if tuple(rows) == tuple(src.table_sizes):
            return src
        if "multi_hot" in src.manifest:    # bags are drawn for the data's rows: folding would change them
            raise UserError(f"{cfg.data.source} holds multi-hot bags for its table sizes; set model.table_rows=0")
        return HashedRows(src, rows)
    raise UserError(f"unknown data.source {cfg.data.source!r}")
