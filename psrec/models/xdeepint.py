"""xDeepInt (Yan & Li, DLP-KDD 2020): a Polynomial Interaction Network with sub-space crossing.

    X_0 = split(E, h)                            (B, m*h, d/h)
    X_l = X_{l-1} * (W_l X_0) + X_{l-1}          W_l (m*h, m*h), l = 1..L
    logit = sum_f w_f sum_k merge(X_L)[f, k] + b (+ w_d^T dense)

There is no DNN: the residual polynomial layers give every order from 1 to L+1 and a linear
read-out sums them. Reference: yanyachen/xDeepInt `xdeepint/src/nn.py`. The paper trains the
PIN weights with FTRL (lr 0.02, l1 0.1, l2 0.1) and the embedding rows with G-FTRL; that is a
training choice (`psrec.optim.FTRL` for the former), not part of this file.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from psrec.models.base import CTRModel, FeatureSpec, ModelInput
from psrec.models.pin import FieldLinearOutput, PINLayer, subspace_merge, subspace_split
from psrec.models.registry import register

__all__ = ["XDeepIntParams", "XDeepInt"]


@dataclass(frozen=True)
class XDeepIntParams:
    """Hyperparameters of xDeepInt."""

    num_layers: int = 4  # L: the reference's Criteo run uses 4 PIN layers
    # h: the reference uses 16 with d = 16 (one-wide chunks); 4 divides every usual width
    # (4, 8, 16, 32) and keeps W at (4m)^2 instead of (16m)^2 entries on 2 cores.
    num_subspaces: int = 4
    dropout: float = 0.0  # the reference's Criteo run uses none

    def __post_init__(self) -> None:
        if self.num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {self.num_layers}")
        if self.num_subspaces < 1:
            raise ValueError(f"num_subspaces must be >= 1, got {self.num_subspaces}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


@register("xdeepint")
class XDeepInt(CTRModel):
    """Polynomial Interaction Network over sub-spaces with a linear read-out.

    Needs one embedding width d for all fields, divisible by `num_subspaces`.
    E (B, m, d) -> X_0 (B, m*h, d/h) -> L PIN layers -> merge (B, m, d) -> logits (B,).
    Dropout, when set, is applied to X_0 before each layer's mixing, as the reference does.

    Example:
        >>> m = XDeepInt(FeatureSpec(3, (4, 4, 4)), XDeepIntParams(num_layers=2, num_subspaces=2))
        >>> m(ModelInput([torch.randn(5, 4)] * 3, torch.zeros(5, 0))).shape
        torch.Size([5])
    """

    Params = XDeepIntParams

    def __init__(self, spec: FeatureSpec, params: XDeepIntParams | None = None) -> None:
        super().__init__(spec, params)
        p = self.params
        if spec.embed_dim % p.num_subspaces:
            raise ValueError(f"embedding width {spec.embed_dim} is not divisible by num_subspaces={p.num_subspaces}")
        n = spec.num_fields * p.num_subspaces
        self.layers = nn.ModuleList(PINLayer(n) for _ in range(p.num_layers))
        self.dropout = nn.Dropout(p.dropout) if p.dropout > 0 else nn.Identity()
        self.out = FieldLinearOutput(spec.num_fields, spec.num_dense)

    def forward(self, x: ModelInput) -> torch.Tensor:
        h = self.params.num_subspaces
        x0 = subspace_split(x.stacked(), h)  # (B, m*h, d/h)
        xl = x0
        for layer in self.layers:
            xl = layer(xl, self.dropout(x0))  # (B, m*h, d/h)
        return self.out(subspace_merge(xl, h), x.dense)  # (B,)
