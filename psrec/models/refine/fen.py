"""FEN, the factor estimating network of IFM (Yu et al. 2019, "Input-aware Factorization
Machine", IJCAI): per-instance field weights from an MLP over all embeddings."""
from __future__ import annotations

import torch

from psrec.models.base import FeatureSpec
from psrec.models.layers import MLP
from psrec.models.refine.base import ContextMLPParams, Refiner, register_refiner


@register_refiner("fen")
class FEN(Refiner):
    """m = F * softmax(P MLP(flat E));  e'_f = m_f e_f.

    IFM rescales the softmax by the number of features so that the weights average 1 and
    E' stays on E's scale; here that number is F. The MLP is Linear+ReLU without batch norm
    (the RefineCTR code uses BN + dropout 0.5; BN fails on a batch of one and dropout slows
    short runs). Shapes: flat E (B, F*D) -> logits (B, F) -> m (B, F) -> E' (B, F, D).

    Example:
        >>> from psrec.models import FeatureSpec
        >>> FEN(FeatureSpec(3, (2, 2, 2)))(torch.ones(1, 3, 2)).shape
        torch.Size([1, 3, 2])
    """

    Params = ContextMLPParams

    def __init__(self, spec: FeatureSpec, params: ContextMLPParams | None = None) -> None:
        super().__init__(spec, params)
        self.mlp = MLP(self.num_fields * self.dim, self.params.hidden, out_dim=self.num_fields)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        m = self.num_fields * torch.softmax(self.mlp(emb.flatten(1)), dim=1)  # (B, F)
        return emb * m.unsqueeze(2)  # (B, F, D)
