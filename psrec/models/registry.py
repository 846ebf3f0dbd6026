"""Models by name: `@register("deepfm")` on the class, `build_model("deepfm", spec, params)`."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from psrec.models.base import CTRModel, FeatureSpec

__all__ = ["register", "get_model_class", "model_names", "build_model"]

_REGISTRY: dict[str, type[CTRModel]] = {}


def register(name: str):
    """Class decorator: make a CTRModel subclass findable as `name`."""

    def deco(cls: type[CTRModel]) -> type[CTRModel]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"model name {name!r} is registered twice")
        _REGISTRY[name] = cls
        cls.registry_name = name
        return cls

    return deco


def get_model_class(name: str) -> type[CTRModel]:
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None


def model_names() -> list[str]:
    _ensure_loaded()
    return sorted(_REGISTRY)


def build_model(name: str, spec: FeatureSpec, params: Mapping[str, Any] | object | None = None) -> CTRModel:
    """Instantiate a registered model; `params` is its Params dataclass or a mapping for it."""
    from psrec.config_io import from_mapping  # local import: config_io is a leaf utility

    cls = get_model_class(name)
    if params is None or isinstance(params, Mapping):
        params = from_mapping(cls.Params, dict(params or {}), where=f"model.params ({name})")
    return cls(spec, params)


def _ensure_loaded() -> None:
    # Importing the package imports every model module, each of which registers itself.
    import psrec.models  # noqa: F401
