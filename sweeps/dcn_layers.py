"""DCN depth: NE against the number of stacked cross layers (1 to 6), rank as the base.

Points: model.dcn_layers = 1, 2, 3, 4, 6 with model.interaction = dcn.  Fitted against dense
parameters.
Run:  dlrm-scaling sweep dcn_layers --preset small --out runs/sweeps/dcn_layers
"""


def points(base):
    return [{"model.interaction": "dcn", "model.dcn_layers": n} for n in (1, 2, 3, 4, 6)]
