"""Logistic regression: logit = sum_f w(key_f) + w_d^T dense + b."""
from __future__ import annotations

import torch

from psrec.models.base import CTRModel, FeatureSpec, ModelInput, NoParams
from psrec.models.layers import Linear1
from psrec.models.registry import register


@register("lr")
class LR(CTRModel):
    """Per-key first-order weights only: the baseline every interaction model must beat.

    Example:
        >>> m = LR(FeatureSpec(2, (4, 4), 1))
        >>> m(ModelInput([torch.zeros(3, 4)] * 2, torch.zeros(3, 1), torch.zeros(3, 2))).shape
        torch.Size([3])
    """

    Params = NoParams
    uses_linear = True

    def __init__(self, spec: FeatureSpec, params: NoParams | None = None) -> None:
        super().__init__(spec, params)
        self.first = Linear1(spec.num_dense)

    def forward(self, x: ModelInput) -> torch.Tensor:
        return self.first(x.linear, x.dense)  # (B,)
