"""Feature-refinement modules: a small interface and a registry keyed by name.

A refiner maps the stacked field embeddings E (B, F, D) to refined ones E' (B, F, D) of the
same shape, so that it can sit between the embedding layer and any CTR model (the "FR
module between FE and FI layer" pattern of Wang et al. 2023, "A Comprehensive Analysis and
Evaluation of Feature Refinement Modules for CTR Prediction", RefineCTR).

    >>> from psrec.models import FeatureSpec
    >>> r = build_refiner("senet", FeatureSpec(3, (4, 4, 4)), {"squeeze": "max"})
    >>> r(torch.randn(2, 3, 4)).shape
    torch.Size([2, 3, 4])
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from psrec.models.base import FeatureSpec, NoParams

__all__ = ["Refiner", "ContextMLPParams", "register_refiner", "get_refiner_class",
           "refiner_names", "build_refiner", "per_field_weight"]


@dataclass(frozen=True)
class ContextMLPParams:
    """The MLP over flat(E) (B, F*D) that several refiners use to read the whole instance."""

    # The references use one 256-wide layer on Criteo's 39 fields; 64 is plenty for the
    # handful of fields the synthetic and 2-core runs use. () means a single Linear.
    hidden: tuple[int, ...] = (64,)

    def __post_init__(self) -> None:
        if any(h <= 0 for h in self.hidden):
            raise ValueError(f"hidden widths must be positive, got {self.hidden}")


class Refiner(nn.Module):
    """Base class: forward(E (B, F, D)) -> E' (B, F, D).

    Subclasses set `Params` to a frozen dataclass of their hyperparameters (or leave
    `NoParams`). Every field needs the same width D; a per-field-width spec is refused here.
    """

    Params: ClassVar[type] = NoParams
    registry_name: ClassVar[str] = ""

    def __init__(self, spec: FeatureSpec, params: Any = None) -> None:
        super().__init__()
        self.spec = spec
        self.params = params if params is not None else self.Params()
        self.num_fields = spec.num_fields
        self.dim = spec.embed_dim  # validates uniform width: E must stack to (B, F, D)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


def per_field_weight(num_fields: int, in_dim: int, out_dim: int) -> nn.Parameter:
    """(F, in_dim, out_dim) weights, each field's slice Xavier-uniform for an in x out matrix.

    `nn.init.xavier_uniform_` on the 3-d tensor would count F into fan_out and D into the
    receptive field, giving the wrong bound; this draws per field with the 2-d bound.
    """
    bound = (6.0 / (in_dim + out_dim)) ** 0.5
    return nn.Parameter(torch.empty(num_fields, in_dim, out_dim).uniform_(-bound, bound))


_REFINERS: dict[str, type[Refiner]] = {}


def register_refiner(name: str):
    """Class decorator: make a Refiner subclass findable as `name`."""

    def deco(cls: type[Refiner]) -> type[Refiner]:
        if name in _REFINERS and _REFINERS[name] is not cls:
            raise ValueError(f"refiner name {name!r} is registered twice")
        _REFINERS[name] = cls
        cls.registry_name = name
        return cls

    return deco


def get_refiner_class(name: str) -> type[Refiner]:
    _ensure_loaded()
    try:
        return _REFINERS[name]
    except KeyError:
        raise KeyError(f"unknown refiner {name!r}; known: {', '.join(sorted(_REFINERS))}") from None


def refiner_names() -> list[str]:
    _ensure_loaded()
    return sorted(_REFINERS)


def build_refiner(name: str, spec: FeatureSpec, params: Mapping[str, Any] | object | None = None) -> Refiner:
    """Instantiate a registered refiner; `params` is its Params dataclass or a mapping for it."""
    from psrec.config_io import from_mapping  # local import: config_io is a leaf utility

    cls = get_refiner_class(name)
    if params is None or isinstance(params, Mapping):
        params = from_mapping(cls.Params, dict(params or {}), where=f"refine params ({name})")
    elif not isinstance(params, cls.Params):
        raise TypeError(f"refiner {name!r} takes {cls.Params.__name__}, got {type(params).__name__}")
    return cls(spec, params)


def _ensure_loaded() -> None:
    # Importing the package imports every refiner module, each of which registers itself.
    import psrec.models.refine  # noqa: F401
