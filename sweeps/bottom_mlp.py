"""Dense-arch scaling: NE against parameters as the bottom MLP widens.

Points: every bottom-MLP hidden width x 1/4 to x 4 of the base (its output stays D).
Run:  dlrm-scaling sweep bottom_mlp --preset small --out runs/sweeps/bottom_mlp
"""


def points(base):
    return [{"model.bottom_mlp": tuple(max(1, w * m // 4) for w in base.model.bottom_mlp)} for m in (1, 2, 4, 8, 16)]
