"""IPNN (Qu et al. 2016, "Product-based Neural Networks for User Response Prediction")."""
from __future__ import annotations

import torch

from psrec.models.base import CTRModel, FeatureSpec, ModelInput
from psrec.models.dnn import MLPParams
from psrec.models.interactions import pairwise_inner
from psrec.models.layers import MLP
from psrec.models.registry import register


@register("ipnn")
class IPNN(CTRModel):
    """Inner-product PNN: logit = MLP([flat(E) ; <e_i, e_j> for i < j ; dense]).

    The paper's product layer feeds l_z (linear in E) and l_p (linear in the P inner products)
    into the first hidden layer; an MLP over the concatenation is the same function (FuxiCTR
    model_zoo/PNN does the same). E (B, F, D) -> MLP input (B, F D + P + num_dense) -> (B,).

    Example:
        >>> m = IPNN(FeatureSpec(3, (4, 4, 4), 1))
        >>> m(ModelInput([torch.randn(2, 4)] * 3, torch.zeros(2, 1))).shape
        torch.Size([2])
    """

    Params = MLPParams

    def __init__(self, spec: FeatureSpec, params: MLPParams | None = None) -> None:
        super().__init__(spec, params)
        _ = spec.embed_dim  # validates uniform width
        if spec.num_fields < 2:
            raise ValueError("IPNN needs at least two fields to form a product")
        p = self.params
        pairs = spec.num_fields * (spec.num_fields - 1) // 2
        self.mlp = MLP(spec.flat_dim + pairs + spec.num_dense, p.hidden, 1, p.dropout, p.batch_norm)

    def forward(self, x: ModelInput) -> torch.Tensor:
        products = pairwise_inner(x.stacked())  # (B, P)
        return self.mlp(torch.cat([x.flat(), products, x.dense], dim=1)).squeeze(-1)
