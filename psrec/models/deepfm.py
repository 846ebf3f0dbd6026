"""DeepFM (Guo et al. 2017): FM and an MLP sharing the same embeddings."""
from __future__ import annotations

import torch

from psrec.models.base import CTRModel, FeatureSpec, ModelInput
from psrec.models.dnn import MLPParams
from psrec.models.layers import MLP, Linear1, fm_second_order
from psrec.models.registry import register


@register("deepfm")
class DeepFM(CTRModel):
    """logit = LR + FM second order + MLP([flat(E) ; dense]); E (B, F, D) -> (B,)."""

    Params = MLPParams
    uses_linear = True

    def __init__(self, spec: FeatureSpec, params: MLPParams | None = None) -> None:
        super().__init__(spec, params)
        _ = spec.embed_dim  # validates uniform width
        p = self.params
        self.first = Linear1(spec.num_dense)
        self.mlp = MLP(spec.flat_dim + spec.num_dense, p.hidden, 1, p.dropout, p.batch_norm)

    def forward(self, x: ModelInput) -> torch.Tensor:
        deep = self.mlp(torch.cat([x.flat(), x.dense], dim=1)).squeeze(-1)
        return self.first(x.linear, x.dense) + fm_second_order(x.stacked()) + deep
