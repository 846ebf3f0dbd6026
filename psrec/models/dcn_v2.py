"""DCN-v2 (Wang et al. 2021, "DCN V2: Improved Deep & Cross Network and Practical Lessons for
Web-scale Learning to Rank Systems"), full-rank cross layers."""
from __future__ import annotations

from dataclasses import dataclass
from typing import get_args

import torch

from psrec.models.base import CTRModel, FeatureSpec, ModelInput
from psrec.models.dcn import DCNParams
from psrec.models.interactions import CrossNetV2, CrossStructure, CrossTowers
from psrec.models.registry import register


@dataclass(frozen=True)
class DCNv2Params(DCNParams):
    """DCN params plus how the cross network and the MLP are combined."""

    structure: CrossStructure = "parallel"  # MODELS.md default; FuxiCTR's default too

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.structure not in get_args(CrossStructure):
            raise ValueError(f"structure must be one of {get_args(CrossStructure)}, got {self.structure!r}")


@register("dcn_v2")
class DCNv2(CTRModel):
    """x_{l+1} = x0 * (W_l x_l + b_l) + x_l (W_l N x N), combined with an MLP per `structure`
    (crossnet_only, stacked, parallel, stacked_parallel; see `CrossTowers`).

    x0 = [flat(E) ; dense] (B, N) -> (B,). Per-field widths may differ.

    Example:
        >>> m = DCNv2(FeatureSpec(2, (4, 4), 0), DCNv2Params(structure="stacked"))
        >>> m(ModelInput([torch.randn(2, 4)] * 2, torch.zeros(2, 0))).shape
        torch.Size([2])
    """

    Params = DCNv2Params

    def __init__(self, spec: FeatureSpec, params: DCNv2Params | None = None) -> None:
        super().__init__(spec, params)
        p = self.params
        n = spec.flat_dim + spec.num_dense
        self.towers = CrossTowers(CrossNetV2(n, p.num_cross_layers), n, p.structure,
                                  p.hidden, p.dropout, p.batch_norm)

    def forward(self, x: ModelInput) -> torch.Tensor:
        return self.towers(torch.cat([x.flat(), x.dense], dim=1))  # (B,)
