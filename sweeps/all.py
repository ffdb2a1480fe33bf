"""Everything together: embedding dimension and both MLPs' widths scaled by one factor.

The paper's "MLP + embedding" scaling.  Points: factors 1/4, 1/2, 1, 2, 4 of the base.
Run:  dlrm-scaling sweep all --preset small --out runs/sweeps/all
"""


def points(base):
    m = base.model
    out = []
    for q in (1, 2, 4, 8, 16):  # factor q / 4
        out.append({"model.embed_dim": max(1, m.embed_dim * q // 4),
                    "model.bottom_mlp": tuple(max(1, w * q // 4) for w in m.bottom_mlp),
                    "model.top_mlp": tuple(max(1, w * q // 4) for w in m.top_mlp)})
    return out
