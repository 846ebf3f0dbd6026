"""FRNet's refinement (Wang et al. 2022, "Enhancing CTR Prediction with Context-Aware Feature
Representation Learning", SIGIR): information extraction units (IEU) and a gate (CSGate).

IEU_G produces complementary features, IEU_W the gate's logits; the refined embedding mixes
the original and complementary features bit by bit (FRNet-B) or field by field (FRNet-V).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import nn

from psrec.models.base import FeatureSpec
from psrec.models.layers import MLP
from psrec.models.refine.base import Refiner, register_refiner

__all__ = ["IEU", "IEUParams", "FRNetV", "FRNetB", "cs_gate"]


@dataclass(frozen=True)
class IEUParams:
    att_size: int = 10  # width a of Q, K, V; the FRNet reference code's default
    # Hidden widths of the contextual information extractor MLP over flat(E); the reference
    # uses one 256-wide layer on Criteo, 64 suits the small runs here. () = a single Linear.
    cie_hidden: tuple[int, ...] = (64,)

    def __post_init__(self) -> None:
        if self.att_size <= 0:
            raise ValueError(f"att_size must be positive, got {self.att_size}")
        if any(h <= 0 for h in self.cie_hidden):
            raise ValueError(f"cie_hidden widths must be positive, got {self.cie_hidden}")


class IEU(nn.Module):
    """Information extraction unit: in-instance self-attention times a context vector.

        A   = softmax(Q K^T) over fields,  Q, K, V = E W_q, E W_k, E W_v  (D -> a, with bias)
        O   = (A V) W_p                     (a -> D)            # (B, F, D) cross-feature info
        c   = PReLU(MLP(flat E))            (F*D -> ... -> D)   # (B, 1, D) instance context
        bit:    IEU(E) = O * c              # (B, F, D)
        vector: IEU(E) = sum_d (O * c)      # (B, F, 1)

    The scores are not scaled by 1/sqrt(a), following the paper and its code. The CIE
    hidden layers are Linear+ReLU without BN/dropout (BN fails on a batch of one); the
    output activation is PReLU as in the reference.

    Args:
        num_fields: F.
        dim: D.
        level: "bit" or "vector".
        att_size: a.
        cie_hidden: hidden widths of the context MLP.
    """

    def __init__(self, num_fields: int, dim: int, level: Literal["bit", "vector"], att_size: int,
                 cie_hidden: tuple[int, ...]) -> None:
        super().__init__()
        if level not in ("bit", "vector"):
            raise ValueError(f"level must be 'bit' or 'vector', got {level!r}")
        self.level = level
        self.query = nn.Linear(dim, att_size)
        self.key = nn.Linear(dim, att_size)
        self.value = nn.Linear(dim, att_size)
        self.project = nn.Linear(att_size, dim)
        self.context = MLP(num_fields * dim, cie_hidden, out_dim=dim)
        self.context_act = nn.PReLU()

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        q, k, v = self.query(emb), self.key(emb), self.value(emb)  # (B, F, a) each
        scores = torch.softmax(q @ k.transpose(1, 2), dim=-1)  # (B, F, F)
        cross = self.project(scores @ v)  # (B, F, D)
        ctx = self.context_act(self.context(emb.flatten(1))).unsqueeze(1)  # (B, 1, D)
        out = cross * ctx  # (B, F, D)
        if self.level == "vector":
            return out.sum(dim=2, keepdim=True)  # (B, F, 1)
        return out


def cs_gate(emb: torch.Tensor, complementary: torch.Tensor, weight_logits: torch.Tensor) -> torch.Tensor:
    """CSGate: E' = E * sigmoid(W) + G * (1 - sigmoid(W)).

    emb, complementary: (B, F, D); weight_logits: (B, F, D) bit-level or (B, F, 1) vector-level.
    """
    w = torch.sigmoid(weight_logits)
    return emb * w + complementary * (1.0 - w)


class _FRNetRefiner(Refiner):
    """E' = E * sigmoid(IEU_W(E)) + IEU_G(E) * (1 - sigmoid(IEU_W(E))).

    IEU_G is always bit-level; IEU_W is bit-level (FRNet-B) or vector-level (FRNet-V).
    Shapes: E (B, F, D) -> E' (B, F, D).
    """

    Params = IEUParams
    weight_level: ClassVar[Literal["bit", "vector"]]

    def __init__(self, spec: FeatureSpec, params: IEUParams | None = None) -> None:
        super().__init__(spec, params)
        p = self.params
        self.ieu_g = IEU(self.num_fields, self.dim, "bit", p.att_size, p.cie_hidden)
        self.ieu_w = IEU(self.num_fields, self.dim, self.weight_level, p.att_size, p.cie_hidden)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return cs_gate(emb, self.ieu_g(emb), self.ieu_w(emb))


@register_refiner("frnet_v")
class FRNetV(_FRNetRefiner):
    """FRNet-V: one gate weight per field, sigmoid(IEU_W(E)) (B, F, 1).

    Example:
        >>> from psrec.models import FeatureSpec
        >>> FRNetV(FeatureSpec(2, (3, 3)))(torch.ones(4, 2, 3)).shape
        torch.Size([4, 2, 3])
    """

    weight_level = "vector"


@register_refiner("frnet_b")
class FRNetB(_FRNetRefiner):
    """FRNet-B: one gate weight per embedding bit, sigmoid(IEU_W(E)) (B, F, D).

    Example:
        >>> from psrec.models import FeatureSpec
        >>> FRNetB(FeatureSpec(2, (3, 3)))(torch.ones(4, 2, 3)).shape
        torch.Size([4, 2, 3])
    """

    weight_level = "bit"
