"""Planted architecture gap: dot, cat, dcn and wukong at 3 example counts, 2 seeds each.

Points: each interaction (DCN at rank 32, the others at the base's settings) at the
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
DCN_RANK = 32


def points(base):
    out = []
    for kind in INTERACTIONS:
        extra = {"model.dcn_rank": DCN_RANK} if kind == "dcn" else {}
        for k in EXAMPLE_SHIFTS:
            for s in SEEDS:
                out.append({"model.interaction": kind, **extra, "train.examples": base.train.examples >> k,
                            "seed": s})
    return out
