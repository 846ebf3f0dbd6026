"""How a data source travels to workers: a description each worker rebuilds the source from.

A distributed run hands every worker the source the run was given, never a configured
default: the plan carries `source.describe()`, and each worker calls `.build()`. A built-in
source describes itself by its class and constructor arguments (a worker reopens the file
itself, on its own node); any other source, by default, travels as the object itself
(Ray serialises it to the workers), so a user's own `DataSource` subclass needs nothing more.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from psrec.data.base import DataSource

__all__ = ["SourceSpec"]


@dataclass(frozen=True)
class SourceSpec:
    """A source to rebuild: `factory` ("module:Class", called with `kwargs`), or `obj` itself.

    >>> from psrec.data.synthetic import SyntheticConfig, SyntheticSource
    >>> spec = SyntheticSource(SyntheticConfig(num_fields=6, num_dense=1)).describe()
    >>> spec.factory, spec.build().schema.num_fields
    ('psrec.data.synthetic:SyntheticSource', 6)
    """

    factory: str = ""
    kwargs: dict[str, Any] = field(default_factory=dict)
    obj: DataSource | None = None

    def __post_init__(self) -> None:
        if (self.obj is None) == (not self.factory):
            raise ValueError("a SourceSpec names a factory or holds a source, exactly one")
        if self.factory and ":" not in self.factory:
            raise ValueError(f"SourceSpec.factory must be 'module:attribute', got {self.factory!r}")

    @classmethod
    def of(cls, source: DataSource, **kwargs: Any) -> SourceSpec:
        """Rebuild `source` by calling its class with `kwargs`."""
        t = type(source)
        return cls(factory=f"{t.__module__}:{t.__qualname__}", kwargs=kwargs)

    def build(self) -> DataSource:
        if self.obj is not None:
            return self.obj
        module, _, name = self.factory.partition(":")
        target: Any = importlib.import_module(module)
        for part in name.split("."):
            target = getattr(target, part)
        return target(**self.kwargs)
