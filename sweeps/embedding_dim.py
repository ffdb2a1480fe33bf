"""Embedding scaling (width): NE against parameters as the embedding dimension grows.

The paper's "embedding scaling" found this saturates early.  Points: D = base / 4 to
base x 4 (doubling), everything else fixed, at the base's example count.  The bottom
MLP's output follows D (it must match the tables).
Run:  dlrm-scaling sweep embedding_dim --preset small --out runs/sweeps/embedding_dim
"""


def points(base):
    d = base.model.embed_dim
    return [{"model.embed_dim": max(1, d * m // 4)} for m in (1, 2, 4, 8, 16)]
