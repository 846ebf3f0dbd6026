"""Putting a refiner in front of any CTR model."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from psrec.models.base import CTRModel, ExtraEmbedding, ModelInput
from psrec.models.refine.base import Refiner, build_refiner

__all__ = ["RefinedModel", "refine_model", "with_fields"]


def with_fields(x: ModelInput, emb: torch.Tensor) -> ModelInput:
    """The same batch with its field embeddings replaced by the rows of emb (B, F, D).

    dense, linear and extra pass through untouched: refinement acts on E only.
    """
    return ModelInput(fields=list(emb.unbind(dim=1)), dense=x.dense, linear=x.linear, extra=x.extra)


class RefinedModel(CTRModel):
    """logit = inner(E' = refiner(E), dense, linear, extra);  E, E' (B, F, D) -> (B,).

    The embedding layer must serve this wrapper exactly as it serves `inner`, so the
    instance carries the inner model's `uses_linear`, `params` and `Params`, and
    `extra_embeddings()` delegates. These are instance attributes (the wrapped class varies),
    so read them from the model object, not from its class.

    Args:
        inner: the model that receives the refined embeddings.
        refiner: a Refiner built for the same FeatureSpec.

    Example:
        >>> from psrec.models import FeatureSpec, build_model
        >>> spec = FeatureSpec(2, (4, 4), 1)
        >>> m = refine_model(build_model("deepfm", spec), "senet")
        >>> m(ModelInput([torch.zeros(3, 4)] * 2, torch.zeros(3, 1), torch.zeros(3, 2))).shape
        torch.Size([3])
    """

    def __init__(self, inner: CTRModel, refiner: Refiner) -> None:
        if refiner.spec != inner.spec:
            raise ValueError(f"refiner spec {refiner.spec} differs from model spec {inner.spec}")
        super().__init__(inner.spec, inner.params)
        self.Params = type(inner).Params
        self.uses_linear = inner.uses_linear
        self.refiner = refiner
        self.inner = inner

    def extra_embeddings(self) -> tuple[ExtraEmbedding, ...]:
        return self.inner.extra_embeddings()

    def forward(self, x: ModelInput) -> torch.Tensor:
        refined = self.refiner(x.stacked())  # (B, F, D)
        return self.inner(with_fields(x, refined))  # (B,)


def refine_model(model: CTRModel, refiner: str,
                 params: Mapping[str, Any] | object | None = None) -> RefinedModel:
    """Wrap `model` so that the refiner named `refiner` (see `refiner_names()`) runs first.

    `params` is that refiner's Params dataclass or a mapping for it; None takes its defaults.
    """
    return RefinedModel(model, build_refiner(refiner, model.spec, params))
