"""Planted data exponent: NE against training examples in a planted Zipf world, 2 seeds.

Points: the base's `train.examples` and six halvings below it (7 counts, one pass each,
nested prefixes of one stream), each trained with model seeds 0 and 1.  Run in a
planted world (`synthetic.world=planted-zipf-1.6` or `planted-zipf-1.4`), whose data
exponent is known in advance (analysis/planted.py); `dlrm-scaling planted planted-zipf`
runs both worlds and compares.
Run:  dlrm-scaling sweep planted_zipf --preset small --set synthetic.world=planted-zipf-1.6 \\
          --set model.interaction=cat --set eval.examples=2**18 --out runs/planted/zipf-1.6
"""

SEEDS = (0, 1)


def points(base):
    return [{"train.examples": base.train.examples >> k, "seed": s} for k in range(6, -1, -1) for s in SEEDS]
