"""GFRL, the gated feature refinement layer of MCRF (Wang et al. 2022, "MCRF: Enhancing CTR
Prediction Models via Multi-channel Feature Refinement Framework", DASFAA)."""
from __future__ import annotations

import torch
from torch import nn

from psrec.models.base import FeatureSpec
from psrec.models.layers import MLP
from psrec.models.refine.base import ContextMLPParams, Refiner, per_field_weight, register_refiner


class FLU(nn.Module):
    """Field-wise learning unit: a per-field linear map times a shared context vector.

        FLU(E)_f = (e_f W_f + b_f) * ReLU(MLP(flat E))

    W_f (D, D), b_f (D,); the MLP ends in a Linear to D. Shapes: E (B, F, D) -> local
    (B, F, D), context (B, 1, D) -> (B, F, D).
    """

    def __init__(self, num_fields: int, dim: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.weight = per_field_weight(num_fields, dim, dim)  # (F, D, D)
        self.bias = nn.Parameter(torch.zeros(num_fields, dim))  # (F, D)
        self.context = MLP(num_fields * dim, hidden, out_dim=dim)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        local = torch.einsum("bfd,fdo->bfo", emb, self.weight) + self.bias  # (B, F, D)
        ctx = torch.relu(self.context(emb.flatten(1))).unsqueeze(1)  # (B, 1, D)
        return local * ctx


@register_refiner("gfrl")
class GFRL(Refiner):
    """Gated linear units over two FLUs:

        P = sigmoid(FLU_gate(E));   E' = E * (1 - P) + FLU_out(E) * P

    Shapes: E (B, F, D) -> P (B, F, D) -> E' (B, F, D).

    Example:
        >>> from psrec.models import FeatureSpec
        >>> GFRL(FeatureSpec(2, (3, 3)))(torch.ones(4, 2, 3)).shape
        torch.Size([4, 2, 3])
    """

    Params = ContextMLPParams

    def __init__(self, spec: FeatureSpec, params: ContextMLPParams | None = None) -> None:
        super().__init__(spec, params)
        self.flu_out = FLU(self.num_fields, self.dim, self.params.hidden)
        self.flu_gate = FLU(self.num_fields, self.dim, self.params.hidden)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(self.flu_gate(emb))  # (B, F, D)
        return emb * (1.0 - p) + self.flu_out(emb) * p
