"""Data scaling: NE against training examples for one fixed model (Ardalani et al. section 4).

Points: the base's `train.examples` and five halvings below it (6 points, one pass
each).  Examples are nested prefixes of one stream, like the paper's subsets.
Run:  dlrm-scaling sweep data --preset small --out runs/sweeps/data
"""


def points(base):
    return [{"train.examples": base.train.examples >> k} for k in range(5, -1, -1)]
