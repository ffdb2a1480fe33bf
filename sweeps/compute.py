"""Compute scaling: a grid of model sizes x example counts (the iso-FLOP view).

Each FLOP budget is reached by several (model, data) allocations, so the lower
envelope of NE over training FLOPs is the compute-efficient frontier.  Points: top-MLP
widths x 1/2, 1, 2 of the base and examples base / 8 to base (doubling).
Run:  dlrm-scaling sweep compute --preset small --out runs/sweeps/compute
"""


def points(base):
    n = base.train.examples
    return [{"model.top_mlp": tuple(max(1, w * m // 2) for w in base.model.top_mlp), "train.examples": n >> k}
            for m in (1, 2, 4) for k in (3, 2, 1, 0)]
