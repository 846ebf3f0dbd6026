"""Parquet files read by a feature spec, one row group at a time (pyarrow).

A row range touches the row groups that hold it; the last group read is kept, so the
consecutive batches of a pass decode each group once. Categorical values are hashed from
their text form (pyarrow's cast to string: 5 -> "5"), as in a CSV of the same rows.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from psrec.data._csv import RowErrors, select_rows
from psrec.data.base import Batch, DataSource
from psrec.data.errors import DataError, MalformedLine
from psrec.data.features import FeatureConfig, encode_labels, encode_rows, schema_of
from psrec.data.tabular import check_file

__all__ = ["ParquetSource"]


class ParquetSource(DataSource):
    """A Parquet file as a DataSource (batches as `FeatureCsvSource`'s).

    Args:
        path: the file.
        features: the `[[data.features]]` entries.
        label: the label column.
        label_threshold: 0: labels must be 0/1; else label = value >= threshold.
        strict: raise DataError at the first malformed row instead of skipping it.

    A malformed row (a null or non-0/1 label, a non-finite number) is skipped and recorded
    with its 1-based row number as `line_no`.
    """

    def __init__(self, path: str | os.PathLike, features: Sequence[FeatureConfig], label: str, *,
                 label_threshold: float = 0.0, strict: bool = False) -> None:
        import pyarrow.parquet as pq

        self.path = os.fspath(path)
        check_file(self.path, "parquet")
        try:
            self._file = pq.ParquetFile(self.path)
        except Exception as e:  # pyarrow raises ArrowInvalid / OSError for a damaged footer
            raise DataError(f"{self.path}: cannot read as Parquet: {e}") from None
        self.features, self.label = tuple(features), label
        self.label_threshold, self.strict = float(label_threshold), bool(strict)
        names = self._file.schema_arrow.names
        need = list(dict.fromkeys([label] + [f.column for f in self.features]))
        missing = [c for c in need if c not in names]
        if missing:
            raise DataError(f"{self.path}: column {missing[0]!r} (named in the spec) is not in the file: "
                            f"{', '.join(names[:12])}{' ...' if len(names) > 12 else ''}")
        self._need = need
        md = self._file.metadata
        self._group_start = np.zeros(md.num_row_groups + 1, np.int64)  # first row of each group
        np.cumsum([md.row_group(i).num_rows for i in range(md.num_row_groups)], out=self._group_start[1:])
        self.schema = schema_of(self.features)
        self._cached: tuple[int, object] | None = None
        self._malformed: dict[int, MalformedLine] = {}

    def describe(self):
        from psrec.data.spec import SourceSpec

        return SourceSpec.of(self, path=self.path, features=self.features, label=self.label,
                             label_threshold=self.label_threshold, strict=self.strict)

    def __getstate__(self):
        # A ParquetFile holds an open handle: a copy reopens the file instead.
        return {k: v for k, v in self.__dict__.items() if k not in ("_file", "_cached")}

    def __setstate__(self, state):
        import pyarrow.parquet as pq

        self.__dict__.update(state)
        self._file, self._cached = pq.ParquetFile(self.path), None

    @property
    def num_rows(self) -> int:
        return int(self._group_start[-1])

    @property
    def malformed(self) -> list[MalformedLine]:
        return [self._malformed[k] for k in sorted(self._malformed)]

    def _group(self, g: int):
        if self._cached is None or self._cached[0] != g:
            self._cached = (g, self._file.read_row_group(g, columns=self._need))
        return self._cached[1]

    def _table(self, start: int, end: int):
        import pyarrow as pa

        g0 = int(np.searchsorted(self._group_start, start, side="right")) - 1
        parts = []
        for g in range(max(g0, 0), len(self._group_start) - 1):
            lo, hi = int(self._group_start[g]), int(self._group_start[g + 1])
            if lo >= end:
                break
            a, b = max(start, lo), min(end, hi)
            if b > a:
                parts.append(self._group(g).slice(a - lo, b - a))
        if not parts:
            return self._file.schema_arrow.empty_table().select(self._need)
        return parts[0] if len(parts) == 1 else pa.concat_tables(parts)

    def read(self, start: int, end: int) -> Batch:
        """Rows `[start, end)` minus malformed rows: keys (B, F_single), dense (B, D), labels (B,)."""
        self._check_range(start, end)
        return self._encode(self._table(start, end), start, lambda i: start + i)

    def read_segments(self, segments: list[tuple[int, int]]) -> Batch:
        """Rows of each range `[a, b)` in order, encoded in one pass."""
        import pyarrow as pa

        for a, b in segments:
            self._check_range(a, b)
        parts = [self._table(a, b) for a, b in segments]
        t = parts[0] if len(parts) == 1 else pa.concat_tables(parts)
        rows = np.concatenate([np.arange(a, b) for a, b in segments]) if segments else np.zeros(0, np.int64)
        return self._encode(t, int(rows[0]) if len(rows) else 0, lambda i: int(rows[i]))

    def _encode(self, t, start: int, row_of) -> Batch:
        """An arrow table -> a Batch of its good rows; `row_of(i)`: the file row of table row i."""
        n = t.num_rows
        errors = RowErrors()
        labels = encode_labels(_numbers(t.column(self.label), self.label, errors), self.label,
                               self.label_threshold, errors)
        keys, dense, multi = encode_rows(self.features, lambda f: _values(t.column(f.column), f, errors), n, errors)
        if errors.reasons:
            self._record(row_of, errors.reasons)
        keep = errors.keep_mask(n)
        return Batch(keys=keys[keep], dense=dense[keep], labels=labels[keep], start=start,
                     multi=[select_rows(r, keep) for r in multi])

    def _record(self, row_of, reasons: dict[int, str]) -> None:
        for i in sorted(reasons):
            r = row_of(i) + 1
            m = MalformedLine.make(r, reasons[i], f"row {r}", self.path)
            self._malformed.setdefault(m.line_no, m)
        if self.strict:
            i = min(reasons)
            raise DataError(f"{self.path}: row {row_of(i) + 1}: {reasons[i]}")


def _numbers(col, name: str, errors: RowErrors) -> np.ndarray:
    """A column as (n,) float64; a null is a row error (NaN), text is parsed as numbers."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        x = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        vals = col.to_pylist()
        x = np.array([_float_or_nan(v) for v in vals], np.float64)
    errors.add(np.isnan(x), lambda i: f"{name} is missing or not a number")
    return np.nan_to_num(x, nan=0.0)


def _float_or_nan(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _values(col, f: FeatureConfig, errors: RowErrors):
    """A column as `encode_rows` takes it: strings ('' for null), floats (numeric; null -> 0, as
    an empty CSV cell), or item lists (a list column)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if f.type == "numeric":
        try:
            return pc.fill_null(pc.cast(col, pa.float64()), 0.0).to_numpy(zero_copy_only=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return ["" if v is None else str(v) for v in col.to_pylist()]
    if f.type == "sequence" and (pa.types.is_list(col.type) or pa.types.is_large_list(col.type)):
        return [[str(v) for v in (r or []) if v is not None] for r in col.to_pylist()]
    return pc.fill_null(pc.cast(col, pa.string()), "").to_pylist()
