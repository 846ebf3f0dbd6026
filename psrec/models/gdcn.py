"""GDCN (Wang et al. 2023, "Towards Deeper, Lighter and Interpretable Cross Network for CTR
Prediction"): gated cross network, stacked (GDCN-S) or parallel (GDCN-P) with an MLP."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from psrec.models.base import CTRModel, FeatureSpec, ModelInput
from psrec.models.dcn import DCNParams
from psrec.models.interactions import CrossTowers, GatedCrossNet
from psrec.models.registry import register


@dataclass(frozen=True)
class GDCNParams(DCNParams):
    """DCN params (num_cross_layers 3 is also the GDCN code's default) plus the structure."""

    structure: Literal["stacked", "parallel"] = "parallel"  # GDCN-P, FuxiCTR's GDCNP

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.structure not in ("stacked", "parallel"):
            raise ValueError(f"structure must be 'stacked' or 'parallel', got {self.structure!r}")


@register("gdcn")
class GDCN(CTRModel):
    """x_{l+1} = x0 * (W_c x_l + b_l) * sigmoid(W_g x_l) + x_l;
    stacked: logit = MLP(x_L); parallel: logit = w^T [x_L ; MLP_h(x0)] + b.

    x0 = [flat(E) ; dense] (B, N) -> (B,). Per-field widths may differ (GDCN's FDO relies on it).

    Example:
        >>> m = GDCN(FeatureSpec(2, (4, 2), 1), GDCNParams(structure="stacked"))
        >>> m(ModelInput([torch.randn(2, 4), torch.randn(2, 2)], torch.zeros(2, 1))).shape
        torch.Size([2])
    """

    Params = GDCNParams

    def __init__(self, spec: FeatureSpec, params: GDCNParams | None = None) -> None:
        super().__init__(spec, params)
        p = self.params
        n = spec.flat_dim + spec.num_dense
        self.towers = CrossTowers(GatedCrossNet(n, p.num_cross_layers), n, p.structure,
                                  p.hidden, p.dropout, p.batch_norm)

    def forward(self, x: ModelInput) -> torch.Tensor:
        return self.towers(torch.cat([x.flat(), x.dense], dim=1))  # (B,)
