"""CSV and TSV files read by a feature spec: the columns come from the header (or
`columns`), each `[[data.features]]` entry names the column it reads."""
from __future__ import annotations

import os
from collections.abc import Sequence

from psrec.data._csv import CsvSource, ParsedRows, RowErrors, Table
from psrec.data.errors import DataError
from psrec.data.features import FeatureConfig, encode_labels, encode_rows, schema_of

__all__ = ["FeatureCsvSource", "check_file"]

_PARQUET_MAGIC = b"PAR1"


def check_file(path: str, fmt: str) -> None:
    """A DataError, one line, for a path that cannot be a `fmt` data file: missing, a directory,
    empty, or a Parquet file given as text (or the reverse)."""
    if os.path.isdir(path):
        raise DataError(f"{path}: is a directory; name a file or a glob such as {path.rstrip('/')}/*")
    if not os.path.exists(path):
        raise DataError(f"{path}: no such file")
    if os.path.getsize(path) == 0:
        raise DataError(f"{path}: empty file")
    with open(path, "rb") as f:
        magic = f.read(4)
    if fmt != "parquet" and magic == _PARQUET_MAGIC:
        raise DataError(f"{path}: a Parquet file, but data.format is {fmt!r}; set data.format = \"parquet\"")
    if fmt == "parquet" and magic != _PARQUET_MAGIC:
        raise DataError(f"{path}: not a Parquet file (data.format = \"parquet\"); csv, tsv, libsvm or libfm?")


class FeatureCsvSource(CsvSource):
    """A CSV/TSV file whose features a spec names (see `DataSource` for row ranges).

    Args:
        path: the file.
        features: the `[[data.features]]` entries (FeatureConfig).
        label: the label column's name.
        delimiter: ',' for csv, '\\t' for tsv; None detects it (tab if the first line has one).
        columns: the file's column names (empty: the first line is a header naming them).
        header: with `columns`, whether the first line is a header; None detects it (a first
            line whose label is not a number).
        label_threshold: 0: labels must be 0/1; else label = value >= threshold.
        strict: raise DataError at the first malformed line instead of skipping it.

    Batches: keys (B, categorical features) int64, dense (B, numeric features) float32, one
    Ragged per sequence feature, labels (B,) float32.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "t.csv"
    >>> _ = p.write_text("clicked,user,price\\n1,u1,3.5\\n0,u2,\\n")
    >>> src = FeatureCsvSource(p, [FeatureConfig("user"), FeatureConfig("price", type="numeric")], "clicked")
    >>> b = src.read(0, 2); b.keys.shape, b.dense[:, 0].tolist(), b.labels.tolist()
    ((2, 1), [3.5, 0.0], [1.0, 0.0])
    """

    def __init__(self, path: str | os.PathLike, features: Sequence[FeatureConfig], label: str, *,
                 delimiter: str | None = None, columns: Sequence[str] = (), header: bool | None = None,
                 label_threshold: float = 0.0, strict: bool = False) -> None:
        path = os.fspath(path)
        check_file(path, "csv")
        self.features = tuple(features)
        self.label, self.label_threshold = label, float(label_threshold)
        with open(path, "rb") as f:
            first = f.readline().decode("utf-8", errors="replace").rstrip("\r\n")
        d = delimiter if delimiter is not None else ("\t" if "\t" in first else ",")
        names = list(columns) or [c.strip().strip('"') for c in first.split(d)]
        where = "data.columns" if columns else "the header"
        need = [label] + [f.column for f in self.features]
        missing = [c for c in dict.fromkeys(need) if c not in names]
        if missing:
            raise DataError(f"{path}: column {missing[0]!r} (named in the spec) is not in {where}: "
                            f"{', '.join(names[:12])}{' ...' if len(names) > 12 else ''}; "
                            f"wrong delimiter {d!r} or wrong data.format?")
        self.COLUMNS = tuple(names)
        self.LABEL_COLUMN = names.index(label)
        self._col = {c: i for i, c in enumerate(names)}
        self.schema = schema_of(self.features)
        super().__init__(path, delimiter=d, header=header if columns else True, strict=strict)
        self._columns_given = tuple(columns)

    def describe(self):
        from psrec.data.spec import SourceSpec

        return SourceSpec.of(self, path=self.path, features=self.features, label=self.label,
                             delimiter=self.delimiter, columns=self._columns_given, header=self.header is not None,
                             label_threshold=self.label_threshold, strict=self.strict)

    def _parse(self, table: Table, errors: RowErrors) -> ParsedRows:
        n = table.n
        labels = encode_labels(table.column(self.LABEL_COLUMN), self.label, self.label_threshold, errors)
        keys, dense, multi = encode_rows(self.features, lambda f: table.column(self._col[f.column]), n, errors)
        return ParsedRows(keys=keys, dense=dense, labels=labels, multi=multi)
