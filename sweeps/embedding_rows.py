"""Embedding scaling (hash size): NE against parameters as tables get more rows.

Ids beyond a table's rows are hashed (mod) into it, so fewer rows means more
collisions.  Points: a row cap per table from 1/64 to 1x of the largest cardinality.
Run:  dlrm-scaling sweep embedding_rows --preset small --out runs/sweeps/embedding_rows
"""


def points(base):
    c = base.synthetic.cardinalities
    largest = max(c) if isinstance(c, tuple) else c
    if base.data.source != "synthetic":
        largest = base.model.table_rows if isinstance(base.model.table_rows, int) and base.model.table_rows else 1 << 22
    return [{"model.table_rows": max(2, largest >> k)} for k in (6, 4, 2, 0)]
