"""DCN (Wang et al. 2017, "Deep & Cross Network for Ad Click Predictions")."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from psrec.models.base import CTRModel, FeatureSpec, ModelInput
from psrec.models.dnn import MLPParams
from psrec.models.interactions import CrossNet, CrossTowers
from psrec.models.registry import register


@dataclass(frozen=True)
class DCNParams(MLPParams):
    """MLP tower plus the depth of the cross network."""

    num_cross_layers: int = 3  # MODELS.md: 3 layers; layer l crosses up to order l + 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_cross_layers < 1:
            raise ValueError(f"num_cross_layers must be >= 1, got {self.num_cross_layers}")


@register("dcn")
class DCN(CTRModel):
    """logit = w^T [x_L ; MLP_h(x0)] + b, x_{l+1} = x0 (x_l^T w_l) + b_l + x_l.

    x0 = [flat(E) ; dense] (B, N), N = sum D_f + num_dense: the paper stacks the embeddings
    and the dense features into one x0 that both towers read. Per-field widths may differ.

    Example:
        >>> m = DCN(FeatureSpec(2, (4, 3), 1))
        >>> m(ModelInput([torch.randn(2, 4), torch.randn(2, 3)], torch.zeros(2, 1))).shape
        torch.Size([2])
    """

    Params = DCNParams

    def __init__(self, spec: FeatureSpec, params: DCNParams | None = None) -> None:
        super().__init__(spec, params)
        p = self.params
        n = spec.flat_dim + spec.num_dense
        self.towers = CrossTowers(CrossNet(n, p.num_cross_layers), n, "parallel",
                                  p.hidden, p.dropout, p.batch_norm)

    def forward(self, x: ModelInput) -> torch.Tensor:
        return self.towers(torch.cat([x.flat(), x.dense], dim=1))  # (B,)
