"""Over-arch scaling: NE against parameters as the top MLP widens (the paper's "top MLP scaling").

Points: every top-MLP layer's width x 1/4, 1/2, 1, 2, 4 of the base, depth fixed.
Run:  dlrm-scaling sweep top_mlp --preset small --out runs/sweeps/top_mlp
"""


def points(base):
    return [{"model.top_mlp": tuple(max(1, w * m // 4) for w in base.model.top_mlp)} for m in (1, 2, 4, 8, 16)]
