"""Embedding scaling (hash size): NE against parameters as tables get more rows.

Ids beyond a table's rows are hashed (mod) into it, so fewer rows means more
collisions.  Points: a row cap per table from 1/64 to 1x of the largest cardinality.
Run:  dlrm-scaling sweep embedding_rows --preset small --out runs/sweeps/embedding_rows
"""


def points(base):
    c = base.synthetic.cardinalities
    largest = max(c) if isinstance(c, tuple) else c
    if base.data.source == "synthetic" and base.synthetic.world:
        # A world sets its own table sizes; a positive model.table_rows caps them.
        from dlrm_jax.data.world import load_world
        largest = max(load_world(base.synthetic.world).table_rows)
        if isinstance(base.model.table_rows, int) and base.model.table_rows:
            largest = min(largest, base.model.table_rows)
    if base.data.source != "synthetic":
        largest = base.model.table_rows if isinstance(base.model.table_rows, int) and base.model.table_rows else 1 << 22
    return [{"model.table_rows": max(2, largest >> k)} for k in (6, 4, 2, 0)]
