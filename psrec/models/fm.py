"""Factorization machine (Rendle 2010): LR + sum_{i<j} <e_i, e_j>."""
from __future__ import annotations

import torch

from psrec.models.base import CTRModel, FeatureSpec, ModelInput, NoParams
from psrec.models.layers import Linear1, fm_second_order
from psrec.models.registry import register


@register("fm")
class FM(CTRModel):
    """logit = b + sum_f w_f + w_d^T dense + 1/2 sum_k [(sum_f e_fk)^2 - sum_f e_fk^2].

    Needs one embedding width D for all fields; emb (B, F, D) -> (B,).
    """

    Params = NoParams
    uses_linear = True

    def __init__(self, spec: FeatureSpec, params: NoParams | None = None) -> None:
        super().__init__(spec, params)
        _ = spec.embed_dim  # validates uniform width
        self.first = Linear1(spec.num_dense)

    def forward(self, x: ModelInput) -> torch.Tensor:
        return self.first(x.linear, x.dense) + fm_second_order(x.stacked())
