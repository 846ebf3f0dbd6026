"""The built-in data sources, registered by name (psrec/data/registry.py), and
`make_source(cfg)`: the source a configuration names.

    synthetic                 the generator ([synthetic])
    files                     the spec-driven reader: data.format, train/valid/test paths, [[data.features]]
    criteo, avazu, movielens  presets: data.path (one file, legacy layout) or data.train_path (file sets)
"""
from __future__ import annotations

from psrec.data.base import DataSource
from psrec.data.registry import make_source, register_source

__all__ = ["make_source", "file_set"]

_OPENERS = {"csv": "psrec.data.tabular:FeatureCsvSource", "tsv": "psrec.data.tabular:FeatureCsvSource",
            "parquet": "psrec.data.parquet:ParquetSource", "libsvm": "psrec.data.libsvm:LibsvmSource",
            "libfm": "psrec.data.libsvm:LibsvmSource"}
_PRESET_CLASSES = {"criteo": "psrec.data.criteo:CriteoSource", "avazu": "psrec.data.avazu:AvazuSource",
                   "movielens": "psrec.data.movielens:MovieLensSource"}


def _options(d) -> dict:
    """The per-file reader's arguments for `data.format`."""
    common = {"features": d.features, "label_threshold": d.label_threshold, "strict": d.strict}
    if d.format in ("csv", "tsv"):
        return {**common, "label": d.label, "columns": d.columns, "delimiter": "\t" if d.format == "tsv" else ","}
    if d.format == "parquet":
        return {**common, "label": d.label}
    return {**common, "label": d.label, "fmt": d.format}


def file_set(cfg, opener: str, options: dict) -> DataSource:
    """train/valid/test paths of `cfg.data` as one FileSetSource."""
    from psrec.data.fileset import FileSetSource, expand_paths

    d = cfg.data
    paths = {k: expand_paths(getattr(d, f"{k}_path"), f"data.{k}_path") if getattr(d, f"{k}_path") else []
             for k in ("train", "valid", "test")}
    return FileSetSource(paths["train"], paths["valid"], paths["test"], opener=opener, options=options,
                         test_share=d.test_share)


@register_source("synthetic")
def _synthetic(cfg) -> DataSource:
    from psrec.data.synthetic import SyntheticSource

    return SyntheticSource(cfg.synthetic)


@register_source("files")
def _files(cfg) -> DataSource:
    return file_set(cfg, _OPENERS[cfg.data.format], _options(cfg.data))


def _preset(name: str):
    def build(cfg) -> DataSource:
        d = cfg.data
        if d.train_path:
            return file_set(cfg, _PRESET_CLASSES[name], {"strict": d.strict})
        from psrec.data.spec import SourceSpec

        return SourceSpec(factory=_PRESET_CLASSES[name], kwargs={"path": d.path, "strict": d.strict}).build()

    return build


for _name in _PRESET_CLASSES:
    register_source(_name)(_preset(_name))
