"""Parameters, FLOPs and embedding traffic, derived from the config in one place.

Conventions (what the scaling-law x axes mean; the analysis report repeats them):
* parameters: `embedding` = sum of table rows x D; `dense` = weights + biases of
  the bottom and top MLPs and of the interaction (dcn, wukong; dot and cat have
  none).  Optimizer state is not counted.
* FLOPs: multiply-adds count 2.  Forward FLOPs per example are the MLP matmuls
  (2 * fan_in * fan_out per layer) plus the interaction's, which each interaction
  counts itself (`counts` of its entry in dlrm_jax/model/interactions/): the `dot`
  interaction's batched matmul (2 * (F+1)^2 * D; XLA computes the full square, not
  only the triangle), or the dcn / wukong interaction's matmuls.
  Training FLOPs per example = 3 x forward (backward ~ 2 x forward), the
  convention of Kaplan et al. 2020 and the DLRM scaling paper.  Embedding
  lookups and updates are memory traffic, not FLOPs: counted in bytes.
"""
from __future__ import annotations

from dataclasses import dataclass

from dlrm_jax.data.base import NUM_DENSE, NUM_SPARSE
from dlrm_jax.model.interactions import REGISTRY
from dlrm_jax.model.layers import mlp_counts


@dataclass(frozen=True)
class Accounting:
    params_embedding: int
    params_dense: int
    flops_bottom: int          # forward, per example
    flops_interaction: int
    flops_top: int
    embedding_bytes_per_example: int   # lookup + gradient + optimizer read/write of touched rows

    @property
    def flops_forward(self) -> int:
        return self.flops_bottom + self.flops_interaction + self.flops_top

    @property
    def flops_per_example(self) -> int:
        """Training (forward + backward) FLOPs per example."""
        return 3 * self.flops_forward

    @property
    def params_total(self) -> int:
        return self.params_embedding + self.params_dense


_mlp = mlp_counts   # (params, forward flops per example) of consecutive dense layers (layers.py)


def interaction_counts(model_cfg, num_sparse: int = NUM_SPARSE) -> tuple[int, int]:
    """(params, forward flops per example) of the interaction: its entry in dlrm_jax/model/interactions/.

    Matmuls only, as for the MLPs: the elementwise products, bias adds and layer
    norms (a few flops per element of N or (n_F + n_L) D) are left out, as
    biases and ReLUs are in `mlp_counts`.
    """
    return REGISTRY[model_cfg.interaction].counts(model_cfg, num_sparse)


def account(model_cfg, table_rows, embedding_optimizer: str = "rowwise_adagrad") -> Accounting:
    d, f = model_cfg.embed_dim, NUM_SPARSE
    bottom_p, bottom_f = _mlp([NUM_DENSE, *model_cfg.bottom_mlp, d])
    top_p, top_f = _mlp([REGISTRY[model_cfg.interaction].width(model_cfg, f), *model_cfg.top_mlp, 1])
    inter_p, inter_f = interaction_counts(model_cfg, f)
    # Per example: read K rows (forward; K = F one-hot, the sum of bag sizes multi-hot), write
    # K rows (update), and the optimizer state of those rows read + written (adagrad: D floats,
    # row-wise: 1 float).
    acc = {"sgd": 0, "adagrad": d, "rowwise_adagrad": 1, "adagrad_torch": d,
           "rowwise_adagrad_torch": 1}[embedding_optimizer]
    hot = model_cfg.multi_hot
    lookups = sum(hot) if isinstance(hot, tuple) else f * hot
    emb_bytes = 4 * lookups * (2 * d + 2 * acc)
    return Accounting(params_embedding=int(sum(table_rows)) * d, params_dense=bottom_p + inter_p + top_p,
                      flops_bottom=bottom_f, flops_interaction=inter_f, flops_top=top_f,
                      embedding_bytes_per_example=emb_bytes)
