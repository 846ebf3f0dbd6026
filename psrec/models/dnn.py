"""Plain deep network over concatenated embeddings and dense features."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from psrec.models.base import CTRModel, FeatureSpec, ModelInput
from psrec.models.layers import MLP
from psrec.models.registry import register


@dataclass(frozen=True)
class MLPParams:
    """Hyperparameters of the MLP tower shared by DNN-style models."""

    hidden: tuple[int, ...] = (256, 128, 64)  # FuxiCTR uses 400x3 on Criteo; smaller fits 2 cores
    dropout: float = 0.0  # small synthetic runs are one epoch: dropout only slows learning
    batch_norm: bool = False

    def __post_init__(self) -> None:
        if not self.hidden or any(h <= 0 for h in self.hidden):
            raise ValueError(f"hidden must be non-empty positive widths, got {self.hidden}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


@register("dnn")
class DNN(CTRModel):
    """logit = MLP([flat(E) ; dense]).  (B, sum D_f + num_dense) -> (B,)"""

    Params = MLPParams

    def __init__(self, spec: FeatureSpec, params: MLPParams | None = None) -> None:
        super().__init__(spec, params)
        p = self.params
        self.mlp = MLP(spec.flat_dim + spec.num_dense, p.hidden, 1, p.dropout, p.batch_norm)

    def forward(self, x: ModelInput) -> torch.Tensor:
        return self.mlp(torch.cat([x.flat(), x.dense], dim=1)).squeeze(-1)
