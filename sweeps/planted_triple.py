"""Planted architecture gap: dot, cat, dcn and wukong at 3 example counts, 2 seeds each.

Points: each interaction (DCN full rank with 2 cross layers, enough for a cubic term; the
others at the base's settings) at the
base's `train.examples` and three quarterings below it (2^14 to 2^20 on the `small`
preset), each with model seeds 0 and 1: 32 runs.  Run in `synthetic.world=planted-triple`
(a trilinear term that pairwise dot products carry none of and DCN's cross layers
represent) and in its control `planted-triple-control`; `dlrm-scaling planted
planted-triple` runs both and compares the dot - dcn gaps with the blind gap computed
from the world (analysis/planted.py).
Run:  dlrm-scaling sweep planted_triple --preset small --set synthetic.world=planted-triple \\
          --set eval.examples=2**18 --out runs/planted/triple
"""

INTERACTIONS = ("dot", "cat", "dcn", "wukong")
EXAMPLE_SHIFTS = (6, 4, 2, 0)  # 4 counts: the frontier fit has 3 parameters
SEEDS = (0, 1)
# Full rank, 2 layers: at rank 32 (3 layers) DCN learned the pair terms the trilinear term
# rides on too slowly to show the term at 2^20 examples (docs/planted_learnability.md);
# at embedding dimension 8 the full-rank cross net costs 3.3x dot's FLOPs per example.
DCN = {"model.dcn_rank": 0, "model.dcn_layers": 2}


def points(base):
    out = []
    for kind in INTERACTIONS:
        extra = DCN if kind == "dcn" else {}
        for k in EXAMPLE_SHIFTS:
            for s in SEEDS:
                out.append({"model.interaction": kind, **extra, "train.examples": base.train.examples >> k,
                            "seed": s})
    return out
