"""Wukong depth: NE against the number of stacked Wukong layers, the paper's main scaling knob.

Zhang et al. 2024 scale Wukong chiefly by stacking layers (and widening them).  Points:
model.wukong_layers = 1, 2, 3, 4, 6 with model.interaction = wukong, other knobs as the base.
Fitted against dense parameters.
Run:  dlrm-scaling sweep wukong_layers --preset small --out runs/sweeps/wukong_layers
"""


def points(base):
    return [{"model.interaction": "wukong", "model.wukong_layers": n} for n in (1, 2, 3, 4, 6)]
