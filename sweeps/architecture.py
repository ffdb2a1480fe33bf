"""Architecture comparison: each interaction (dot, cat, dcn, wukong) on its own compute grid.

Does another architecture scale better than DLRM's (Ardalani et al. 2022 found parameter
scaling "out of steam"; Wukong, Zhang et al. 2024, claims a law where DLRM and DCNv2
plateau)?  Each interaction gets the grid of `compute.py`: model sizes x example counts,
so its compute-efficient frontier (lower envelope of NE over training FLOPs) can be
fitted and the frontiers compared (analysis/architectures.py).  Model size q x the base
(q = 1/2, 1, 2) scales the over arch (top MLP) of every interaction and the
interaction's own width, which its entry in dlrm_jax/model/interactions/ names (`scale`):
the DCN rank (base `model.dcn_rank`, or (F+1) D / 8 when the base is full rank, so the
cross net has a width to scale) and Wukong's FMB MLP; dot and cat have none.
Examples: base / 8 to base (doubling), as `compute.py`: with fewer counts an
architecture's envelope can hold under the 4 points a 3-parameter fit needs.  12 runs per
interaction in the registry: 48 for the four built in.
Run:  dlrm-scaling sweep architecture --preset small --out runs/sweeps/architecture
      (the CPU run in README.md adds --set train.examples=2**16 --set eval.examples=2**15)
"""
from fractions import Fraction

from dlrm_jax.data.base import NUM_SPARSE
from dlrm_jax.model import interactions

SIZES = (Fraction(1, 2), Fraction(1), Fraction(2))   # q
EXAMPLE_SHIFTS = (3, 2, 1, 0)  # base >> k


def points(base):
    m, n = base.model, base.train.examples
    out = []
    for kind in interactions.names():
        spec = interactions.get(kind)
        for q in SIZES:
            size = {"model.top_mlp": tuple(interactions.scaled(w, q) for w in m.top_mlp),
                    **spec.scale(m, q, NUM_SPARSE)}
            for k in EXAMPLE_SHIFTS:
                out.append({"model.interaction": kind, **size, "train.examples": n >> k})
    return out
