"""Per-field multiplicative gates: FWN (from NON) and GateNet's vector/bit embedding gates.

All three compute, for each field f with its own weights, a gate from e_f alone and multiply
it into e_f. The per-field products run as one einsum over (B, F, D) x (F, D, out).
"""
from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from psrec.models.base import FeatureSpec, NoParams
from psrec.models.refine.base import Refiner, per_field_weight, register_refiner


@register_refiner("fwn")
class FWN(Refiner):
    """Field-wise network (Luo et al. 2020, "Network On Network", SIGIR), as in RefineCTR:

        e'_f = ReLU(e_f W_f + b_f) * e_f,   W_f (D, D), b_f (D,)

    Shapes: E (B, F, D) -> E' (B, F, D). b starts at zero (RefineCTR draws it at random;
    zero keeps the initial gate a pure function of e_f).

    Example:
        >>> from psrec.models import FeatureSpec
        >>> FWN(FeatureSpec(2, (3, 3)))(torch.ones(4, 2, 3)).shape
        torch.Size([4, 2, 3])
    """

    Params = NoParams

    def __init__(self, spec: FeatureSpec, params: NoParams | None = None) -> None:
        super().__init__(spec, params)
        self.weight = per_field_weight(self.num_fields, self.dim, self.dim)  # (F, D, D)
        self.bias = nn.Parameter(torch.zeros(self.num_fields, self.dim))  # (F, D)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        gate = torch.relu(torch.einsum("bfd,fdo->bfo", emb, self.weight) + self.bias)  # (B, F, D)
        return gate * emb


class _EmbeddingGate(Refiner):
    """GateNet embedding gate (Huang et al. 2020, "GateNet", arXiv:2007.03519):

        e'_f = (e_f W_f) * e_f,   W_f (D, 1) vector-level or (D, D) bit-level

    No activation on the gate, as in RefineCTR. Shapes: E (B, F, D) -> gate (B, F, 1) or
    (B, F, D) -> E' (B, F, D).
    """

    Params = NoParams
    bit_level: ClassVar[bool]

    def __init__(self, spec: FeatureSpec, params: NoParams | None = None) -> None:
        super().__init__(spec, params)
        out = self.dim if self.bit_level else 1
        self.weight = per_field_weight(self.num_fields, self.dim, out)  # (F, D, out)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        gate = torch.einsum("bfd,fdo->bfo", emb, self.weight)  # (B, F, 1) or (B, F, D)
        return gate * emb


@register_refiner("vgate")
class VGate(_EmbeddingGate):
    """Vector-level GateNet gate: one scalar e_f W_f per field, W_f (D, 1).

    Example:
        >>> from psrec.models import FeatureSpec
        >>> VGate(FeatureSpec(2, (3, 3)))(torch.ones(4, 2, 3)).shape
        torch.Size([4, 2, 3])
    """

    bit_level = False


@register_refiner("bgate")
class BGate(_EmbeddingGate):
    """Bit-level GateNet gate: one weight per embedding bit, e_f W_f with W_f (D, D).

    Example:
        >>> from psrec.models import FeatureSpec
        >>> BGate(FeatureSpec(2, (3, 3)))(torch.ones(4, 2, 3)).shape
        torch.Size([4, 2, 3])
    """

    bit_level = True
