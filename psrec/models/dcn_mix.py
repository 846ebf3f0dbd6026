"""DCN-Mix (Wang et al. 2021, DCN-v2 paper Sec. 5.2): low-rank mixture-of-experts cross layers."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from psrec.models.base import CTRModel, FeatureSpec, ModelInput
from psrec.models.dcn_v2 import DCNv2Params
from psrec.models.interactions import Activation, CrossNetMix, CrossTowers
from psrec.models.registry import register


@dataclass(frozen=True)
class DCNMixParams(DCNv2Params):
    """DCN-v2 params plus the expert shape."""

    low_rank: int = 32  # r: MODELS.md / FuxiCTR / DeepCTR default
    num_experts: int = 4  # K: MODELS.md / FuxiCTR / DeepCTR default
    activation: Activation = "tanh"  # g: FuxiCTR / DeepCTR use tanh (torchrec ReLU)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.low_rank < 1 or self.num_experts < 1:
            raise ValueError(f"low_rank and num_experts must be >= 1, "
                             f"got {self.low_rank}, {self.num_experts}")
        if self.activation not in ("tanh", "relu", "none"):
            raise ValueError(f"activation must be 'tanh', 'relu' or 'none', got {self.activation!r}")


@register("dcn_mix")
class DCNMix(CTRModel):
    """x_{l+1} = sum_i softmax_i(G_i x_l) * [x0 * (U_i g(C_i g(V_i^T x_l)) + b_l)] + x_l,
    combined with an MLP per `structure` as in DCN-v2 (see `CrossNetMix`, `CrossTowers`).

    x0 = [flat(E) ; dense] (B, N) -> (B,). Per-field widths may differ.

    Example:
        >>> m = DCNMix(FeatureSpec(2, (4, 4), 0), DCNMixParams(low_rank=2, num_experts=2))
        >>> m(ModelInput([torch.randn(2, 4)] * 2, torch.zeros(2, 0))).shape
        torch.Size([2])
    """

    Params = DCNMixParams

    def __init__(self, spec: FeatureSpec, params: DCNMixParams | None = None) -> None:
        super().__init__(spec, params)
        p = self.params
        n = spec.flat_dim + spec.num_dense
        cross = CrossNetMix(n, p.num_cross_layers, p.low_rank, p.num_experts, p.activation)
        self.towers = CrossTowers(cross, n, p.structure, p.hidden, p.dropout, p.batch_norm)

    def forward(self, x: ModelInput) -> torch.Tensor:
        return self.towers(torch.cat([x.flat(), x.dense], dim=1))  # (B,)
