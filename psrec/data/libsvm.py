"""libsvm (`label index:value ...`) and libFM (`label field:index:value ...`) files read by a
feature spec: one field per feature group.

A libsvm group is the index range `[index, index + size)` of a `[[data.features]]` entry;
a libFM group is a field number (`index`, else the entry's position). In a group, a
categorical feature's id is the index's offset in the group (libsvm) or the index itself
(libFM), hashed from its text as a CSV value would be: CSV value "3" of a column and index
lo + 3 of its libsvm group give one key. A numeric feature takes the value. Indices outside
every group are not features and are ignored.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from psrec.data._csv import RowErrors, select_rows
from psrec.data.base import Batch, DataSource
from psrec.data.csv_index import LineIndex
from psrec.data.errors import DataError, MalformedLine
from psrec.data.features import FeatureConfig, encode_labels, encode_rows, schema_of
from psrec.data.tabular import check_file

__all__ = ["LibsvmSource"]


class LibsvmSource(DataSource):
    """A libsvm or libFM file as a DataSource (batches as `FeatureCsvSource`'s).

    Args:
        path: the file.
        features: the feature groups (`index`, `size`; libFM: `index` is the field).
        fmt: "libsvm" or "libfm".
        label_threshold: 0: labels must be 0/1 or -1/+1; else label = value >= threshold.
        strict: raise DataError at the first malformed line instead of skipping it.
    """

    def __init__(self, path: str | os.PathLike, features: Sequence[FeatureConfig], *, fmt: str = "libsvm",
                 label: str = "label", label_threshold: float = 0.0, strict: bool = False) -> None:
        if fmt not in ("libsvm", "libfm"):
            raise ValueError(f"fmt must be libsvm or libfm, got {fmt!r}")
        self.path = os.fspath(path)
        check_file(self.path, fmt)
        self.features, self.fmt, self.label = tuple(features), fmt, label
        self.label_threshold, self.strict = float(label_threshold), bool(strict)
        if not self.features:
            raise DataError(f"{self.path}: a {fmt} file needs its feature groups as [[data.features]] "
                            f"(`psrec data inspect {self.path} --format {fmt}` suggests them)")
        if fmt == "libsvm":
            for f in self.features:
                if f.index < 0:
                    raise DataError(f"feature {f.name!r}: a libsvm group needs `index` (its first feature index)")
            self._lo = np.array([f.index for f in self.features], np.int64)
            self._hi = self._lo + np.array([f.size for f in self.features], np.int64)
            order = np.argsort(self._lo)
            if np.any(self._lo[order][1:] < self._hi[order][:-1]):
                raise DataError("libsvm feature groups overlap: each index belongs to one group")
        else:
            self._field = np.array([f.index if f.index >= 0 else i for i, f in enumerate(self.features)], np.int64)
        self.schema = schema_of(self.features)
        self._index = LineIndex(self.path, header=False)
        self._malformed: dict[int, MalformedLine] = {}

    def describe(self):
        from psrec.data.spec import SourceSpec

        return SourceSpec.of(self, path=self.path, features=self.features, fmt=self.fmt, label=self.label,
                             label_threshold=self.label_threshold, strict=self.strict)

    @property
    def num_rows(self) -> int:
        return self._index.num_lines

    @property
    def malformed(self) -> list[MalformedLine]:
        return [self._malformed[k] for k in sorted(self._malformed)]

    def _group_of(self, first: np.ndarray, second: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Tokens' (group, id text source) for libsvm (index) or libFM (field, index): (group
        number or -1, the id: offset in the group for libsvm, the index for libFM)."""
        if self.fmt == "libsvm":
            g = np.full(len(first), -1, np.int64)
            for j, (lo, hi) in enumerate(zip(self._lo, self._hi)):
                g[(first >= lo) & (first < hi)] = j
            return g, first - np.where(g >= 0, self._lo[np.maximum(g, 0)], 0)
        lookup = {int(fld): j for j, fld in enumerate(self._field)}
        return np.fromiter((lookup.get(v, -1) for v in first.tolist()), np.int64, len(first)), second

    def read(self, start: int, end: int) -> Batch:
        """Rows `[start, end)` minus malformed lines: keys (B, F_single), dense (B, D), labels (B,)."""
        self._check_range(start, end)
        lines = self._index.read_lines(start, end)
        n = len(lines)
        errors = RowErrors()
        toks = [line.split() for line in lines]
        empty = np.fromiter((not t for t in toks), bool, n)
        errors.add(empty, lambda i: "empty line")
        labels = encode_labels([t[0] if t else "" for t in toks], self.label, self.label_threshold, errors)
        per = 2 if self.fmt == "libsvm" else 3
        counts = np.fromiter((max(len(t) - 1, 0) for t in toks), np.int64, n)
        row = np.repeat(np.arange(n), counts)
        flat_tok = [x for t in toks for x in t[1:]]
        parts = ":".join(flat_tok).split(":") if flat_tok else []
        if len(parts) == per * len(flat_tok):
            nums = parts
        else:  # some token has the wrong number of ':' parts: find which rows, token by token
            nums, bad_rows = [], set()
            for r, tok in zip(row.tolist(), flat_tok):
                p = tok.split(":")
                if len(p) != per:
                    bad_rows.add(r)
                    p = ["-1"] * per
                nums += p
            bad = np.zeros(n, bool)
            bad[list(bad_rows)] = True
            want = "index:value" if per == 2 else "field:index:value"
            errors.add(bad, lambda i: f"a feature is not {want}")
        try:
            cols = [np.array(nums[k::per], dtype=np.float64) for k in range(per)]
        except ValueError:
            cols = [np.array([_num(v) for v in nums[k::per]], np.float64) for k in range(per)]
        notnum = ~np.isfinite(cols[0]) | ~np.isfinite(cols[-1]) | ~np.isfinite(cols[1])
        nb = np.zeros(n, bool)
        nb[row[notnum]] = True
        errors.add(nb, lambda i: "a feature index or value is not a number")
        ints = [np.nan_to_num(c, nan=-1).astype(np.int64) for c in cols[:-1]]
        group, ident = self._group_of(ints[0], ints[-1])
        value = np.nan_to_num(cols[-1])
        keys, dense, multi = encode_rows(self.features, lambda f: self._column(f, group, ident, value, row, n, errors),
                                         n, errors)
        if errors.reasons:
            self._record(start, lines, errors.reasons)
        keep = errors.keep_mask(n)
        return Batch(keys=keys[keep], dense=dense[keep], labels=labels[keep], start=start,
                     multi=[select_rows(r, keep) for r in multi])

    def _column(self, f: FeatureConfig, group, ident, value, row, n: int, errors: RowErrors):
        j = self.features.index(f)
        sel = group == j
        rows, ids, vals = row[sel], ident[sel], value[sel]
        if f.type == "numeric":
            out = np.zeros(n, np.float64)
            out[rows] = vals
            return out
        if f.type == "categorical":
            many = np.bincount(rows, minlength=n) > 1
            errors.add(many, lambda i: f"feature group {f.name!r} has several indices in one row; "
                                       f"make it type = \"sequence\"")
            out = [""] * n
            for r, v in zip(rows.tolist(), ids.tolist()):
                out[r] = str(v)
            return out
        items: list[list[str]] = [[] for _ in range(n)]
        for r, v in zip(rows.tolist(), ids.tolist()):
            items[r].append(str(v))
        return items

    def _record(self, start: int, lines: list[str], reasons: dict[int, str]) -> None:
        for i in sorted(reasons):
            m = MalformedLine.make(self._index.line_no(start + i), reasons[i], lines[i], self.path)
            self._malformed.setdefault(m.line_no, m)
        if self.strict:
            m = self._malformed[self._index.line_no(start + min(reasons))]
            raise DataError(f"{self.path}: line {m.line_no}: {m.reason}: {m.raw!r}")


def _num(s: str) -> float:
    try:
        return float(s)
    except ValueError:
        return float("nan")
