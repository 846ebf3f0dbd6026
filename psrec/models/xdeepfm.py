"""xDeepFM (Lian et al. 2018, "xDeepFM: Combining Explicit and Implicit Feature Interactions
for Recommender Systems")."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from psrec.models.base import CTRModel, FeatureSpec, ModelInput
from psrec.models.dnn import MLPParams
from psrec.models.interactions import CIN
from psrec.models.layers import MLP, Linear1
from psrec.models.registry import register


@dataclass(frozen=True)
class XDeepFMParams(MLPParams):
    """MLP tower plus the CIN feature-map counts H_1..H_L."""

    cin_layers: tuple[int, ...] = (16, 16, 16)  # MODELS.md / FuxiCTR default

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.cin_layers or any(h <= 0 for h in self.cin_layers):
            raise ValueError(f"cin_layers must be non-empty positive widths, got {self.cin_layers}")


@register("xdeepfm")
class XDeepFM(CTRModel):
    """logit = LR + w^T [p^1 ; ... ; p^L] + b + MLP([flat(E) ; dense]).

    CIN (see `interactions.CIN`) reads E (B, F, D) and gives p (B, sum H_k); LR is the
    first-order term with the dense features. -> (B,).

    Example:
        >>> m = XDeepFM(FeatureSpec(3, (4, 4, 4), 1), XDeepFMParams(cin_layers=(2,)))
        >>> m(ModelInput([torch.randn(2, 4)] * 3, torch.zeros(2, 1), torch.zeros(2, 3))).shape
        torch.Size([2])
    """

    Params = XDeepFMParams
    uses_linear = True

    def __init__(self, spec: FeatureSpec, params: XDeepFMParams | None = None) -> None:
        super().__init__(spec, params)
        _ = spec.embed_dim  # validates uniform width
        p = self.params
        self.first = Linear1(spec.num_dense)
        self.cin = CIN(spec.num_fields, p.cin_layers)
        self.cin_fc = nn.Linear(self.cin.out_dim, 1)
        self.mlp = MLP(spec.flat_dim + spec.num_dense, p.hidden, 1, p.dropout, p.batch_norm)

    def forward(self, x: ModelInput) -> torch.Tensor:
        cin = self.cin_fc(self.cin(x.stacked())).squeeze(-1)  # (B,)
        deep = self.mlp(torch.cat([x.flat(), x.dense], dim=1)).squeeze(-1)  # (B,)
        return self.first(x.linear, x.dense) + cin + deep
