"""Architecture comparison: each interaction (dot, cat, dcn, wukong) on its own compute grid.

Does another architecture scale better than DLRM's (Ardalani et al. 2022 found parameter
scaling "out of steam"; Wukong, Zhang et al. 2024, claims a law where DLRM and DCNv2
plateau)?  Each interaction gets the grid of `compute.py`: model sizes x example counts,
so its compute-efficient frontier (lower envelope of NE over training FLOPs) can be
fitted and the frontiers compared (analysis/architectures.py).  Model size q x the base
(q = 1/2, 1, 2) scales the over arch (top MLP) of every interaction and the
interaction's own width: the DCN rank (base `model.dcn_rank`, or (F+1) D / 8 when the
base is full rank, so the cross net has a width to scale) and Wukong's FMB MLP.
Examples: base / 8 to base (doubling), as `compute.py`: with fewer counts an
architecture's envelope can hold under the 4 points a 3-parameter fit needs.  48 runs.
Run:  dlrm-scaling sweep architecture --preset small --out runs/sweeps/architecture
      (the CPU run in README.md adds --set train.examples=2**16 --set eval.examples=2**15)
"""
from dlrm_jax.data.base import NUM_SPARSE

INTERACTIONS = ("dot", "cat", "dcn", "wukong")
SIZES = (1, 2, 4)          # q = SIZES / 2
EXAMPLE_SHIFTS = (3, 2, 1, 0)  # base >> k


def _scaled(widths, m):
    return tuple(max(1, w * m // 2) for w in widths)


def points(base):
    m, n = base.model, base.train.examples
    rank = m.dcn_rank or max(1, (NUM_SPARSE + 1) * m.embed_dim // 8)
    out = []
    for kind in INTERACTIONS:
        for q in SIZES:
            size = {"model.top_mlp": _scaled(m.top_mlp, q)}
            if kind == "dcn":
                size["model.dcn_rank"] = max(1, rank * q // 2)
            if kind == "wukong":
                size["model.wukong_mlp"] = _scaled(m.wukong_mlp, q)
            for k in EXAMPLE_SHIFTS:
                out.append({"model.interaction": kind, **size, "train.examples": n >> k})
    return out
