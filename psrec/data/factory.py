"""Build the data source a configuration names."""
from __future__ import annotations

from psrec.data.base import DataSource

__all__ = ["make_source"]


def make_source(cfg) -> DataSource:
    """`cfg` is a psrec.config.Config; only its `data` and `synthetic` sections are read."""
    d = cfg.data
    if d.source == "synthetic":
        from psrec.data.synthetic import SyntheticSource

        return SyntheticSource(cfg.synthetic)
    if d.source == "criteo":
        from psrec.data.criteo import CriteoSource

        return CriteoSource(d.path, strict=d.strict)
    if d.source == "avazu":
        from psrec.data.avazu import AvazuSource

        return AvazuSource(d.path, strict=d.strict)
    if d.source == "movielens":
        from psrec.data.movielens import MovieLensSource

        return MovieLensSource(d.path, strict=d.strict)
    raise ValueError(f"unknown data source {d.source!r}")
