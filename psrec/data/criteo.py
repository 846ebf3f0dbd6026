"""Criteo Display Advertising Challenge files: label, I1-I13 dense, C1-C26 categorical.

Reads both the original files (tab-separated, no header) and the CSV-with-header exports
that CTR tools ship (e.g. /work/shared/data/criteo_sample.txt).
"""
from __future__ import annotations

import os

import numpy as np

from psrec.data.features import FeatureConfig
from psrec.data.tabular import FeatureCsvSource

__all__ = ["CriteoSource", "CRITEO_COLUMNS", "CRITEO_CARDINALITIES", "CRITEO_FEATURES", "log_transform"]

_DENSE = tuple(f"I{i}" for i in range(1, 14))
_CAT = tuple(f"C{i}" for i in range(1, 27))
CRITEO_COLUMNS = ("label",) + _DENSE + _CAT

# Distinct values per field in the Kaggle train set (the embedding sizes of the DLRM
# reference run, bench/dlrm_s_criteo_kaggle.sh); estimates for any other Criteo file.
CRITEO_CARDINALITIES = (1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683,
                        8351593, 3194, 27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18,
                        15, 286181, 105, 142572)

# The spec: dense I1-I13 through `log_transform` (signed_log1p), then C1-C26 hashed (fields 0-25).
CRITEO_FEATURES = (tuple(FeatureConfig(name, type="numeric", transform="signed_log1p") for name in _DENSE)
                   + tuple(FeatureConfig(name, cardinality=c) for name, c in zip(_CAT, CRITEO_CARDINALITIES)))


def log_transform(x: np.ndarray) -> np.ndarray:
    """sign(x) * log1p(|x|), elementwise, same shape.

    Criteo's dense columns are counts with heavy tails (I5 reaches millions while most
    values are below 100); fed raw, the largest column would swamp the first layer and the
    gradient scale. log1p compresses the tail and keeps 0 at 0 (so "missing -> 0" stays 0).
    The sign is kept rather than clamping negatives to 0 as DLRM does, because I2 holds
    small negative values (-1..-3) that would otherwise merge with 0.
    """
    return np.sign(x) * np.log1p(np.abs(x))


class CriteoSource(FeatureCsvSource):
    """A Criteo file as a DataSource (the `criteo` preset of the spec reader): 26 single-valued
    fields C1-C26, 13 dense I1-I13.

    Args:
        path: the file.
        strict: raise DataError at the first malformed line instead of skipping it.
        delimiter: None detects tab or comma from the first line.
        header: None detects it (a first line whose label is not a number is a header).

    Batches: keys (B, 26) int64 tagged with field j for C(j+1) (a missing value gets the
    field's missing key, `missing_key(j)`); dense (B, 13) float32, missing -> 0, then
    `log_transform`; labels (B,) float32 in {0, 1}.

    Malformed lines (wrong column count, a dense value that is not a finite number, a label
    other than 0/1) are skipped and kept in `malformed`; see `CsvSource`.

    Example:
        >>> src = CriteoSource("/work/shared/data/criteo_sample.txt")
        >>> b = src.read(0, 200)
        >>> b.keys.shape, b.dense.shape, int(b.labels.sum())
        ((200, 26), (200, 13), 49)
    """

    def __init__(self, path: str | os.PathLike, *, strict: bool = False,
                 delimiter: str | None = None, header: bool | None = None) -> None:
        super().__init__(path, CRITEO_FEATURES, "label", columns=CRITEO_COLUMNS, delimiter=delimiter,
                         header=header, strict=strict)

    def describe(self):
        from psrec.data.spec import SourceSpec

        return SourceSpec.of(self, path=self.path, strict=self.strict, delimiter=self.delimiter,
                             header=self.header is not None)
