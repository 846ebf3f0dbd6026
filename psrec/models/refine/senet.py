"""SENET (Huang et al. 2019, FiBiNET, RecSys): squeeze-and-excitation field weights."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from psrec.models.base import FeatureSpec
from psrec.models.refine.base import Refiner, register_refiner


@dataclass(frozen=True)
class SENETParams:
    reduction_ratio: int = 3  # FiBiNET's setting; hidden width is max(1, F // ratio)
    squeeze: Literal["mean", "max"] = "mean"  # FiBiNET pools by mean; RefineCTR's code uses max

    def __post_init__(self) -> None:
        if self.reduction_ratio < 1:
            raise ValueError(f"reduction_ratio must be >= 1, got {self.reduction_ratio}")


@register_refiner("senet")
class SENET(Refiner):
    """z_f = squeeze_k e_fk (mean or max over D);  a = ReLU(W2 ReLU(W1 z));  e'_f = a_f e_f.

    W1 (F -> max(1, F // r)) and W2 (-> F) have no bias, as in the FiBiNET paper (and
    FuxiCTR). Shapes: E (B, F, D) -> z (B, F) -> a (B, F) -> E' (B, F, D).

    With few fields the bottleneck is narrow (F = 4, r = 3: one unit). If that unit's ReLU is
    off for a whole batch, a = 0 and E' = 0: nothing reaches the model or the embeddings until
    a batch turns it back on. That is the paper's design; lower `reduction_ratio` for small F.

    Example:
        >>> from psrec.models import FeatureSpec
        >>> SENET(FeatureSpec(3, (2, 2, 2)))(torch.ones(1, 3, 2)).shape
        torch.Size([1, 3, 2])
    """

    Params = SENETParams

    def __init__(self, spec: FeatureSpec, params: SENETParams | None = None) -> None:
        super().__init__(spec, params)
        reduced = max(1, self.num_fields // self.params.reduction_ratio)
        self.squeeze_to_hidden = nn.Linear(self.num_fields, reduced, bias=False)  # W1
        self.hidden_to_weight = nn.Linear(reduced, self.num_fields, bias=False)  # W2

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        if self.params.squeeze == "mean":
            z = emb.mean(dim=2)  # (B, F)
        else:
            z = emb.amax(dim=2)  # (B, F)
        a = torch.relu(self.hidden_to_weight(torch.relu(self.squeeze_to_hidden(z))))  # (B, F)
        return emb * a.unsqueeze(2)  # (B, F, D)
