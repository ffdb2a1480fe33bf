"""One check for the sharded-against-single-device tests: the same tables, optimizer state
and dense parameters after the same steps, to the tolerances float32 reordering leaves."""
from __future__ import annotations

import jax
import numpy as np

from dlrm_jax.embedding import placement as PL


def assert_same_state(placement, state, ref_state) -> None:
    """`state` (sharded by `placement`) equals the single-device `ref_state`."""
    table, accum = PL.to_canonical(placement, state.emb)
    np.testing.assert_allclose(table, np.asarray(ref_state.emb.table), atol=2e-6)
    np.testing.assert_allclose(accum, np.asarray(ref_state.emb.accum), rtol=1e-4, atol=1e-9)
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(ref_state.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-5)
