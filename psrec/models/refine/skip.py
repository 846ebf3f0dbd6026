"""SKIP: no refinement, E' = E. The baseline column of every refinement comparison."""
from __future__ import annotations

import torch

from psrec.models.base import NoParams
from psrec.models.refine.base import Refiner, register_refiner


@register_refiner("skip")
class Skip(Refiner):
    """E' = E; (B, F, D) -> (B, F, D). Wrapping a model with it must not change its output."""

    Params = NoParams

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return emb
