"""Avazu click-through files: id, click, hour (YYMMDDHH), then 21 categorical columns.

Only labelled files are read (the competition's test.csv, which lacks `click`, is not).
"""
from __future__ import annotations

import os

import numpy as np

from psrec.data._csv import RowErrors
from psrec.data.features import FeatureConfig
from psrec.data.tabular import FeatureCsvSource

__all__ = ["AvazuSource", "AVAZU_COLUMNS", "AVAZU_CARDINALITIES", "AVAZU_FEATURES"]

_CAT = ("C1", "banner_pos", "site_id", "site_domain", "site_category", "app_id",
        "app_domain", "app_category", "device_id", "device_ip", "device_model", "device_type",
        "device_conn_type", "C14", "C15", "C16", "C17", "C18", "C19", "C20", "C21")
AVAZU_COLUMNS = ("id", "click", "hour") + _CAT

# Distinct values per column in the full train set (40.4 M rows), as used by TorchRec's
# Avazu example; estimates for other files. hour_of_day and weekday are exact.
AVAZU_CARDINALITIES = (24, 7, 7, 7, 4737, 7745, 26, 8552, 559, 36, 2686408, 6729486, 8251,
                       5, 4, 2626, 8, 9, 435, 4, 68, 172, 60)

# The spec: hour_of_day and weekday derived from `hour`, then the 21 columns, all categorical.
AVAZU_FEATURES = ((FeatureConfig("hour_of_day", column="hour", transform="hour_of_day", cardinality=24),
                   FeatureConfig("weekday", column="hour", transform="weekday", cardinality=7))
                  + tuple(FeatureConfig(c, cardinality=k) for c, k in zip(_CAT, AVAZU_CARDINALITIES[2:])))


class AvazuSource(FeatureCsvSource):
    """An Avazu file as a DataSource (the `avazu` preset of the spec reader): 23 single-valued
    fields, no dense features.

    Args:
        path: the file.
        strict: raise DataError at the first malformed line instead of skipping it.
        delimiter: None detects tab or comma from the first line.
        header: None detects it (a first line whose `click` is not a number is a header).

    Fields, in order: hour_of_day (0-23) and weekday (Mon-Sun) from `hour`, then the 21
    columns C1, banner_pos, ..., C21, all categorical: every one is an anonymised id or a
    small code (C14-C21 are anonymised categories written as integers), none is a
    magnitude, so there is no dense feature. `id` is a row id, not a feature; the date
    itself is left out too (the data spans 10 days: a model trained on past days would
    never see a future date).

    Batches: keys (B, 23) int64 tagged with the field index; dense (B, 0) float32; labels
    (B,) float32 = click. Malformed: wrong column count, click not 0/1, hour not a valid
    YYMMDDHH.

    Example:
        >>> src = AvazuSource("/work/shared/data/avazu_sample.txt")
        >>> src.read(0, 100).keys.shape
        (100, 23)
    """

    def __init__(self, path: str | os.PathLike, *, strict: bool = False,
                 delimiter: str | None = None, header: bool | None = None) -> None:
        super().__init__(path, AVAZU_FEATURES, "click", columns=AVAZU_COLUMNS, delimiter=delimiter,
                         header=header, strict=strict)

    def describe(self):
        from psrec.data.spec import SourceSpec

        return SourceSpec.of(self, path=self.path, strict=self.strict, delimiter=self.delimiter,
                             header=self.header is not None)


def _split_hour(col: np.ndarray, errors: RowErrors) -> tuple[np.ndarray, np.ndarray]:
    """YYMMDDHH strings (n,) -> (hour of day 0-23, weekday 0=Monday), both (n,) int64.
    Years are 20YY. An invalid value is a row error (its outputs are then 0)."""
    ok = (np.char.str_len(col) == 8) & np.char.isdigit(col)
    v = np.where(ok, col, "00010100").astype(np.int64)
    yy, mm, dd, hh = v // 1000000, v // 10000 % 100, v // 100 % 100, v % 100
    ok &= (hh < 24) & (mm >= 1) & (mm <= 12) & (dd >= 1) & (dd <= 31)
    month = ((2000 + yy - 1970) * 12 + np.clip(mm, 1, 12) - 1).astype("datetime64[M]")
    day = month.astype("datetime64[D]") + (np.clip(dd, 1, 31) - 1)
    ok &= day.astype("datetime64[M]") == month  # day 31 of a 30-day month rolls over
    errors.add(~ok, lambda i: f"hour must be a valid YYMMDDHH, got {str(col[i])!r}")
    # 1970-01-01 (day 0) was a Thursday, weekday 3 when Monday is 0.
    weekday = (day.astype(np.int64) + 3) % 7
    return np.where(ok, hh, 0), np.where(ok, weekday, 0)
