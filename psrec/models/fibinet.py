"""FiBiNET (Huang et al. 2019, "FiBiNET: Combining Feature Importance and Bilinear feature
Interaction for Click-Through Rate Prediction")."""
from __future__ import annotations

from dataclasses import dataclass
from typing import get_args

import torch

from psrec.models.base import CTRModel, FeatureSpec, ModelInput
from psrec.models.dnn import MLPParams
from psrec.models.interactions import Bilinear, BilinearType, SENet
from psrec.models.layers import MLP, Linear1
from psrec.models.registry import register


@dataclass(frozen=True)
class FiBiNETParams(MLPParams):
    """MLP tower plus the SENET and bilinear settings."""

    reduction_ratio: int = 3  # MODELS.md / the paper: F/3 units in the SENET bottleneck
    bilinear_type: BilinearType = "field_interaction"  # FuxiCTR default: one W per pair

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.reduction_ratio < 1:
            raise ValueError(f"reduction_ratio must be >= 1, got {self.reduction_ratio}")
        if self.bilinear_type not in get_args(BilinearType):
            raise ValueError(f"bilinear_type must be one of {get_args(BilinearType)}, "
                             f"got {self.bilinear_type!r}")


@register("fibinet")
class FiBiNET(CTRModel):
    """logit = LR + MLP([flat(p) ; flat(q) ; dense]), p = Bilinear(E), q = Bilinear'(SENET(E)).

    SENET: z = mean_D(E), a = ReLU(W2 ReLU(W1 z)), V = a * E; bilinear p_ij = (e_i W) * e_j
    for i < j, with separate weights for E and for V (as in FuxiCTR).
    E (B, F, D) -> p, q (B, P, D) -> MLP input (B, 2 P D + num_dense) -> (B,).

    Example:
        >>> m = FiBiNET(FeatureSpec(3, (4, 4, 4), 0))
        >>> m(ModelInput([torch.randn(2, 4)] * 3, torch.zeros(2, 0), torch.zeros(2, 3))).shape
        torch.Size([2])
    """

    Params = FiBiNETParams
    uses_linear = True

    def __init__(self, spec: FeatureSpec, params: FiBiNETParams | None = None) -> None:
        super().__init__(spec, params)
        d = spec.embed_dim  # validates uniform width
        f = spec.num_fields
        if f < 2:
            raise ValueError("FiBiNET needs at least two fields to form a bilinear pair")
        p = self.params
        self.first = Linear1(spec.num_dense)
        self.senet = SENet(f, p.reduction_ratio)
        self.bilinear_e = Bilinear(f, d, p.bilinear_type)
        self.bilinear_v = Bilinear(f, d, p.bilinear_type)
        pairs = f * (f - 1) // 2
        self.mlp = MLP(2 * pairs * d + spec.num_dense, p.hidden, 1, p.dropout, p.batch_norm)

    def forward(self, x: ModelInput) -> torch.Tensor:
        emb = x.stacked()  # (B, F, D)
        p = self.bilinear_e(emb).flatten(start_dim=1)  # (B, P D)
        q = self.bilinear_v(self.senet(emb)).flatten(start_dim=1)  # (B, P D)
        deep = self.mlp(torch.cat([p, q, x.dense], dim=1)).squeeze(-1)
        return self.first(x.linear, x.dense) + deep
