"""What decides a prepared dataset's bytes: the options of `data criteo-prepare`, recorded in its manifest.

Its own module so that the source pass (source_pass.py) and the driver (prepare.py)
both import it, and neither imports the other.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

from dlrm_jax.errors import UserError

from . import format as cf

DEFAULT_HASH_ROWS = 10_000_000    # the reference DLRM's --max-ind-range on the 1TB logs


@dataclass(frozen=True)
class PrepareOptions:
    """Everything that decides the output bytes (recorded in the manifest)."""
    split: str = "none"
    hash_rows: tuple[int, ...] = (DEFAULT_HASH_ROWS,) * cf.NUM_SPARSE
    min_count: int | None = None            # set: vocabulary mode instead of hashing
    vocab_split: str | None = None          # rows counted for the vocabulary (default train)
    dense_transform: str = "log1p"
    dense_dtype: str = "float32"
    rows_per_shard: int = 1_000_000
    on_bad_row: str = "error"

    def identity(self) -> dict:
        d = asdict(self)
        d["hash_rows"] = None if self.min_count else list(self.hash_rows)
        return d

    def check(self) -> None:
        if len(self.hash_rows) != cf.NUM_SPARSE or not all(
                2 <= r <= 2 ** 31 - 1 for r in self.hash_rows):
            raise UserError(f"--hash-rows: want 1 or {cf.NUM_SPARSE} values in [2, 2^31-1], "
                            f"got {list(self.hash_rows)}")
        if self.min_count is not None and self.min_count < 1:
            raise UserError(f"--min-count must be >= 1, got {self.min_count}")
        if self.rows_per_shard < 1:
            raise UserError(f"--rows-per-shard must be >= 1, got {self.rows_per_shard}")
        if self.dense_transform not in cf.DENSE_TRANSFORMS:
            raise UserError(f"--dense-transform must be one of {cf.DENSE_TRANSFORMS}")
        if self.dense_dtype not in ("float32", "float16"):
            raise UserError("--dense-dtype must be float32 or float16")
        if self.on_bad_row not in ("error", "skip"):
            raise UserError("--on-bad-row must be error or skip")

    def counted_split(self, names: Sequence[str]) -> str:
        split = self.vocab_split or ("train" if "train" in names else names[0])
        if split not in names:
            raise UserError(f"--vocab-split {split}: not one of this split's {list(names)}")
        return split
