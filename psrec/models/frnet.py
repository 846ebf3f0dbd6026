"""FRNet (Wang et al. 2022, "Enhancing CTR Prediction with Context-Aware Feature
Representation Learning", SIGIR): context-aware refinement of E, then a CTR backbone."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import torch

from psrec.models.base import CTRModel, ExtraEmbedding, FeatureSpec, ModelInput
from psrec.models.refine import IEUParams, build_refiner, with_fields
from psrec.models.registry import get_model_class, model_names, register


@dataclass(frozen=True)
class FRNetParams:
    """FRNet's refinement plus the backbone it feeds."""

    weight_type: Literal["bit", "vector"] = "bit"  # FRNet-B: the paper's stronger variant
    att_size: int = 10  # IEU attention width a; the reference code's default
    cie_hidden: tuple[int, ...] = (64,)  # IEU context MLP; reference 256, smaller fits 2 cores
    # Any registered model; the paper's headline pairing is DeepFM. The backbone's own Params
    # take their defaults except hidden/dropout/batch_norm below, passed when it has them.
    backbone: str = "deepfm"
    hidden: tuple[int, ...] = (256, 128, 64)  # backbone MLP, as MLPParams
    dropout: float = 0.0  # as MLPParams: short one-epoch runs learn faster without it
    batch_norm: bool = False

    def __post_init__(self) -> None:
        if self.att_size <= 0:
            raise ValueError(f"att_size must be positive, got {self.att_size}")
        if any(h <= 0 for h in self.cie_hidden):
            raise ValueError(f"cie_hidden widths must be positive, got {self.cie_hidden}")
        if self.backbone == "frnet":
            raise ValueError("backbone cannot be frnet itself")
        if self.backbone not in model_names():
            raise ValueError(f"unknown backbone {self.backbone!r}; known: {', '.join(model_names())}")
        if not self.hidden or any(h <= 0 for h in self.hidden):
            raise ValueError(f"hidden must be non-empty positive widths, got {self.hidden}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


@register("frnet")
class FRNet(CTRModel):
    """E' = E * sigmoid(IEU_W(E)) + IEU_G(E) * (1 - sigmoid(IEU_W(E)));  logit = backbone(E').

    IEU(E) = softmax(Q K^T) V W_p * PReLU(MLP(flat E)): self-attention across fields (Q, K, V
    Linear D -> a, projection a -> D) times a per-instance context vector (B, 1, D). IEU_G is
    bit-level (B, F, D); IEU_W is bit-level (B, F, D) or vector-level (summed over D,
    (B, F, 1)) per `weight_type`. See `psrec.models.refine.ieu`. The first-order weights
    and dense features reach the backbone unrefined.

    `uses_linear` and `extra_embeddings()` follow the backbone (the class default, True, is
    DeepFM's); read them from the instance. Shapes: E (B, F, D) -> E' (B, F, D) -> (B,).

    Example:
        >>> m = FRNet(FeatureSpec(2, (4, 4), 1), FRNetParams(hidden=(8,)))
        >>> m(ModelInput([torch.zeros(3, 4)] * 2, torch.zeros(3, 1), torch.zeros(3, 2))).shape
        torch.Size([3])
    """

    Params = FRNetParams
    uses_linear = True

    def __init__(self, spec: FeatureSpec, params: FRNetParams | None = None) -> None:
        super().__init__(spec, params)
        p = self.params
        refiner = "frnet_b" if p.weight_type == "bit" else "frnet_v"
        self.refine = build_refiner(refiner, spec, IEUParams(p.att_size, p.cie_hidden))
        self.backbone = _build_backbone(spec, p)
        self.uses_linear = self.backbone.uses_linear

    def extra_embeddings(self) -> tuple[ExtraEmbedding, ...]:
        return self.backbone.extra_embeddings()

    def forward(self, x: ModelInput) -> torch.Tensor:
        refined = self.refine(x.stacked())  # (B, F, D)
        return self.backbone(with_fields(x, refined))  # (B,)


def _build_backbone(spec: FeatureSpec, p: FRNetParams) -> CTRModel:
    cls = get_model_class(p.backbone)
    shared = {"hidden": p.hidden, "dropout": p.dropout, "batch_norm": p.batch_norm}
    names = {f.name for f in dataclasses.fields(cls.Params)}
    return cls(spec, cls.Params(**{k: v for k, v in shared.items() if k in names}))
