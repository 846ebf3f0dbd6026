"""Data sources by name: `@register_source("mine")` on a builder `cfg -> DataSource`, then
`data.source = "mine"` in TOML. The built-in names (synthetic, files, criteo, avazu,
movielens) are registered by psrec/data/factory.py.

>>> from psrec.data.registry import register_source, source_names
>>> @register_source("doc_example")
... def _build(cfg):
...     from psrec.data.synthetic import SyntheticSource
...     return SyntheticSource(cfg.synthetic)
>>> "doc_example" in source_names() and "criteo" in source_names()
True
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from psrec.data.base import DataSource

__all__ = ["register_source", "get_source_builder", "source_names", "make_source"]

Builder = Callable[[Any], DataSource]
_REGISTRY: dict[str, Builder] = {}


def register_source(name: str):
    """Decorator: make a builder (a function of the run's Config returning a DataSource)
    findable as `data.source = name`."""

    def deco(fn: Builder) -> Builder:
        if name in _REGISTRY and _REGISTRY[name] is not fn:
            raise ValueError(f"data source name {name!r} is registered twice")
        _REGISTRY[name] = fn
        return fn

    return deco


def get_source_builder(name: str) -> Builder:
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown data source {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None


def source_names() -> list[str]:
    _ensure_loaded()
    return sorted(_REGISTRY)


def make_source(cfg) -> DataSource:
    """The source `cfg.data.source` names, built from `cfg` (a psrec.config.Config)."""
    return get_source_builder(cfg.data.source)(cfg)


def _ensure_loaded() -> None:
    import psrec.data.factory  # noqa: F401  (registers the built-in sources)
