"""DCN rank: NE against the cross network's rank r (W_l V_l, r x N and N x r), then full rank.

How much of the full-rank cross net (N = (F+1) D) does a low-rank one keep?  MLPerf
DLRMv2 uses r = 512 at N = 27 x 128 = 3456.  Points: r = N/32, N/16, N/8, N/4, N/2 and
0 (full rank), the base's other knobs kept.  Fitted against dense parameters.
Run:  dlrm-scaling sweep dcn_rank --preset small --out runs/sweeps/dcn_rank
"""
from dlrm_jax.data.base import NUM_SPARSE


def points(base):
    n = (NUM_SPARSE + 1) * base.model.embed_dim
    return [{"model.interaction": "dcn", "model.dcn_rank": r}
            for r in sorted({max(1, n // f) for f in (32, 16, 8, 4, 2)}) + [0]]
