"""The feature spec of a dataset (`[[data.features]]`) and how one feature's raw values become
keys or dense floats, the same way whatever the file format.

A categorical value is hashed from its text (`"5"` in a CSV, `5` in Parquet and index 5 of
a libsvm group all give one key), so the same rows in any format give the same batches.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from psrec.data._csv import RowErrors, hash_ids, parse_floats
from psrec.data.base import FieldSpec, Ragged, Schema
from psrec.data.keys import make_keys

__all__ = ["FeatureConfig", "schema_of", "encode_categorical", "encode_numeric", "encode_sequence",
           "encode_labels", "CATEGORICAL_TRANSFORMS", "NUMERIC_TRANSFORMS"]

# Transforms a feature may name, by type. hour_of_day/weekday read a YYMMDDHH column (Avazu).
CATEGORICAL_TRANSFORMS = ("none", "hour_of_day", "weekday")
NUMERIC_TRANSFORMS = ("none", "log1p", "signed_log1p")
_LABELS = {"0": 0.0, "1": 1.0, "-1": 0.0, "+1": 1.0, "0.0": 0.0, "1.0": 1.0}  # -1/+1: libsvm's usual labels


@dataclass(frozen=True)
class FeatureConfig:
    """One `[[data.features]]` entry.

    Args:
        name: the field's name (the column it reads unless `column` is set).
        type: categorical (one hashed key), numeric (one dense float), sequence (a list of
            hashed keys, pooled by the embedding layer).
        column: the file column, default `name` (two features may read one column).
        transform: numeric: log1p (x > -1) or signed_log1p (sign(x) log1p|x|, Criteo's counts);
            categorical: hour_of_day or weekday of a YYMMDDHH value.
        separator: sequence items within one text cell.
        max_len: keep a sequence's first max_len items (0: all).
        cardinality: distinct values expected (an estimate for table sizing; 0: unknown).
        index: libsvm: the group's first feature index; libFM: the group's field number
            (-1: libFM takes the feature's position among the features).
        size: libsvm: the feature indices in the group, `[index, index + size)`.

    >>> FeatureConfig("price", type="numeric", transform="log1p").column
    'price'
    """

    name: str
    type: Literal["categorical", "numeric", "sequence"] = "categorical"
    column: str = ""
    transform: str = "none"
    separator: str = "|"  # the usual list separator of CTR exports (MovieLens genres)
    max_len: int = 0
    cardinality: int = 0
    index: int = -1
    size: int = 1

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a feature needs a name")
        if not self.column:
            object.__setattr__(self, "column", self.name)
        allowed = NUMERIC_TRANSFORMS if self.type == "numeric" else CATEGORICAL_TRANSFORMS
        if self.type == "sequence":
            allowed = ("none",)
        if self.transform not in allowed:
            raise ValueError(f"feature {self.name!r}: transform {self.transform!r} does not apply to a "
                             f"{self.type} feature; one of {', '.join(allowed)}")
        if not self.separator:
            raise ValueError(f"feature {self.name!r}: separator must not be empty")
        if self.max_len < 0 or self.cardinality < 0 or self.size < 1:
            raise ValueError(f"feature {self.name!r}: max_len and cardinality must be >= 0, size >= 1")

    @property
    def is_key(self) -> bool:
        """True for categorical and sequence features (they become embedding fields)."""
        return self.type != "numeric"


def schema_of(features: Sequence[FeatureConfig]) -> Schema:
    """Fields: the categorical and sequence features in spec order; dense: the numeric ones."""
    fields = tuple(FieldSpec(f.name, f.cardinality or 100_000, f.type == "sequence")  # 100k: unknown
                   for f in features if f.is_key)
    return Schema(fields, tuple(f.name for f in features if not f.is_key))


def _yymmddhh(values: list[str], errors: RowErrors) -> tuple[np.ndarray, np.ndarray]:
    from psrec.data.avazu import _split_hour

    return _split_hour(np.asarray(values, dtype=str), errors)


_HOURS = np.array([str(h) for h in range(24)])
_WEEKDAYS = np.array(["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"])


def encode_categorical(f: FeatureConfig, values: list[str], field: int, errors: RowErrors) -> np.ndarray:
    """n text values ('' = missing) -> (n,) int64 keys of field `field`."""
    if f.transform != "none":
        hour, weekday = _yymmddhh(values, errors)
        values = (_HOURS[hour] if f.transform == "hour_of_day" else _WEEKDAYS[weekday]).tolist()
    return make_keys(field, hash_ids(values))


def encode_numeric(f: FeatureConfig, values: list[str] | np.ndarray, errors: RowErrors) -> np.ndarray:
    """n values (text, '' = 0, or a float array) -> (n,) float64 after the transform; a value that
    is not a finite number (or out of the transform's domain) is a row error."""
    if isinstance(values, np.ndarray):
        x = values.astype(np.float64, copy=True)
        bad = ~np.isfinite(x)
        errors.add(bad, lambda i: f"{f.name} is not a finite number: {values[i]!r}")
        x[bad] = 0.0
    else:
        x = parse_floats(values, len(values), (f.name,), errors)[:, 0]
    if f.transform == "log1p":
        bad = x <= -1.0
        errors.add(bad, lambda i: f"{f.name} must be > -1 for log1p, got {x[i]!r}")
        x = np.log1p(np.where(bad, 0.0, x))
    elif f.transform == "signed_log1p":
        x = np.sign(x) * np.log1p(np.abs(x))
    return x


def encode_sequence(f: FeatureConfig, items: list[list[str]], field: int) -> Ragged:
    """n rows of item lists -> a Ragged of keys of field `field`; an empty row (or item) gets the
    field's missing key, so every row has a key and its pooled embedding is defined."""
    if f.max_len:
        items = [r[:f.max_len] for r in items]
    items = [r if r else [""] for r in items]
    lengths = np.fromiter(map(len, items), np.int64, len(items))
    offsets = np.zeros(len(items) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = [s for r in items for s in r]
    return Ragged(make_keys(field, hash_ids(flat)), offsets)


def encode_labels(values: list[str] | np.ndarray, name: str, threshold: float, errors: RowErrors) -> np.ndarray:
    """n labels -> (n,) float32 in {0, 1}. threshold 0: the values must be 0/1 (or libsvm's -1/+1);
    else label = value >= threshold (e.g. ratings of 4 stars and up)."""
    if threshold:
        x = encode_numeric(FeatureConfig(name, type="numeric"), values, errors)
        return (x >= threshold).astype(np.float32)
    if isinstance(values, np.ndarray):
        x = values.astype(np.float64)
        ok = (x == 0) | (x == 1)
        errors.add(~ok, lambda i: f"{name} must be 0 or 1, got {values[i]!r}")
        return np.where(ok, x, 0.0).astype(np.float32)
    y = np.fromiter((_LABELS.get(v, -1.0) for v in values), np.float32, len(values))
    errors.add(y < 0, lambda i: f"{name} must be 0 or 1, got {values[i]!r}")
    return np.maximum(y, 0.0)


def encode_rows(features: Sequence[FeatureConfig], column, n: int, errors: RowErrors):
    """Every feature of n rows -> (keys (n, F_single) int64, dense (n, D) float32, multi Raggeds).

    `column(f)` gives feature f's raw values: n strings, a float array (numeric), or n item
    lists (sequence; a string is split at `f.separator`).
    """
    keys, dense, multi = [], [], []
    field = 0
    for f in features:
        raw = column(f)
        if f.type == "numeric":
            dense.append(encode_numeric(f, raw, errors))
            continue
        if f.type == "categorical":
            keys.append(encode_categorical(f, raw, field, errors))
        else:
            items = [s.split(f.separator) if s else [] for s in raw] if raw and isinstance(raw[0], str) else raw
            multi.append(encode_sequence(f, list(items), field))
        field += 1
    k = np.stack(keys, axis=1) if keys else np.zeros((n, 0), np.int64)
    d = np.stack(dense, axis=1).astype(np.float32) if dense else np.zeros((n, 0), np.float32)
    return k, d, multi
