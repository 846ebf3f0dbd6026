"""What the delimited-text readers share: row-range reading, splitting, malformed-line
bookkeeping and the column parsers (labels, dense floats, hashed keys, lists).

A reader subclasses `CsvSource`, names its columns and its label column, and turns the
well-formed rows (a `Table`) into arrays in `_parse`; everything else lives here once.

Speed: no per-character Python. A clean range is split with one `join` + one `split` (C),
a column is a slice of that flat list (C), numbers go through `map(float, ...)` into
`np.fromiter` (C), and each distinct categorical string is hashed once per range, so the
Python-level work is a few dict lookups per value.
"""
from __future__ import annotations

import csv
import os
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from hashlib import blake2b
from itertools import chain, repeat

import numpy as np

from psrec.data.base import Batch, DataSource, Ragged, Schema
from psrec.data.csv_index import LineIndex
from psrec.data.errors import DataError, MalformedLine
from psrec.data.keys import ID_MASK, make_keys

__all__ = ["CsvSource", "Table", "ParsedRows", "RowErrors", "MISSING_ID", "detect_delimiter",
           "missing_key", "hash_ids", "parse_labels01", "parse_floats", "hash_block",
           "split_multi", "select_rows"]

# The id of each field's "missing" key. Hashed ids that land on it are moved to 1, so a
# missing value never shares a key with a real one (a 2**-54 event, but free to rule out).
MISSING_ID = 0

_LABEL01 = {"0": 0.0, "1": 1.0}
_EMPTY_TO_ZERO = {"": "0"}


def missing_key(field_index: int) -> int:
    """The key an empty value of field `field_index` gets: `make_keys(field, MISSING_ID)`."""
    return int(make_keys(field_index, np.array([MISSING_ID], np.uint64))[0])


def detect_delimiter(first_line: str) -> str:
    """Tab if the first line has one (the original Criteo files), else comma."""
    return "\t" if "\t" in first_line else ","


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


@dataclass
class Table:
    """n rows of `width` string fields, row-major in one flat list: row i is
    `flat[i*width:(i+1)*width]`, so column j is the C-level slice `flat[j::width]`."""

    flat: list[str]
    width: int

    @property
    def n(self) -> int:
        return len(self.flat) // self.width

    def column(self, j: int) -> list[str]:
        """Column j: n strings."""
        return self.flat[j::self.width]

    def block(self, columns: Sequence[int]) -> list[str]:
        """Columns `columns` one after the other (column-major): len(columns) * n strings."""
        out: list[str] = []
        for j in columns:
            out += self.flat[j::self.width]
        return out


@dataclass
class RowErrors:
    """The first reason each row of a parse is bad: {row index: reason}."""

    reasons: dict[int, str] = field(default_factory=dict)

    def add(self, bad: np.ndarray, reason_of) -> None:
        """Record `reason_of(i)` for every row i with `bad[i]` that has no reason yet."""
        for i in np.flatnonzero(bad).tolist():
            if i not in self.reasons:
                self.reasons[i] = reason_of(i)

    def keep_mask(self, n: int) -> np.ndarray:
        """(n,) bool: rows with no error."""
        keep = np.ones(n, bool)
        if self.reasons:
            keep[list(self.reasons)] = False
        return keep


def parse_labels01(values: list[str], name: str, errors: RowErrors) -> np.ndarray:
    """n '0'/'1' strings -> (n,) float32; anything else is a row error."""
    labels = np.fromiter(map(_LABEL01.get, values, repeat(-1.0)), np.float32, len(values))
    errors.add(labels < 0, lambda i: f"{name} must be 0 or 1, got {values[i]!r}")
    return np.maximum(labels, 0.0)


def parse_floats(values: list[str], n: int, names: Sequence[str],
                 errors: RowErrors) -> np.ndarray:
    """k columns of n numbers, column-major (`Table.block`) -> (n, k) float64, empty -> 0.

    A value that is not a finite number is a row error (the row's values are then 0, and
    the caller drops the row).
    """
    k = len(names)
    filled = map(_EMPTY_TO_ZERO.get, values, values)  # '' -> '0', others unchanged
    try:
        out = np.fromiter(map(float, filled), np.float64, k * n)
        bad = ~np.isfinite(out)  # float() takes "nan" and "inf"; no count is either
    except ValueError:
        # Rare path (some value is not a number): find which, value by value.
        out = np.zeros(k * n, np.float64)
        bad = np.zeros(k * n, bool)
        for t, s in enumerate(values):
            try:
                out[t] = float(s or "0")
            except ValueError:
                bad[t] = True
        bad |= ~np.isfinite(out)
    out[bad] = 0.0
    out, bad = out.reshape(k, n).T, bad.reshape(k, n).T  # (n, k)
    first = bad.argmax(axis=1)  # column of each row's first bad value
    errors.add(bad.any(axis=1), lambda i: f"{names[first[i]]} is not a finite number: "
                                          f"{values[first[i] * n + i]!r}")
    return out


def hash_ids(values: list[str]) -> np.ndarray:
    """Strings -> (len,) uint64 ids: '' -> MISSING_ID, else the low 54 bits of the string's
    8-byte BLAKE2b digest read little-endian, i.e. `keys.hash_strings(...) & ID_MASK` (the
    test suite checks they agree), never MISSING_ID.

    Each distinct string is hashed once: the BLAKE2b call is the costliest step per value
    and categorical columns repeat values heavily.
    """
    uniq = list(dict.fromkeys(values))  # distinct, first-seen order (C-level)
    digests = b"".join([blake2b(s.encode(), digest_size=8).digest() for s in uniq])
    ids = np.frombuffer(digests, "<u8").astype(np.uint64) & ID_MASK
    ids[ids == MISSING_ID] = 1
    id_of = dict(zip(uniq, ids.tolist()))
    id_of[""] = MISSING_ID
    return np.fromiter(map(id_of.__getitem__, values), np.uint64, len(values))


def hash_block(values: list[str], n: int, field_indices: Sequence[int]) -> np.ndarray:
    """k columns of n strings, column-major (`Table.block`) -> (n, k) int64 keys, column j
    tagged with field `field_indices[j]`."""
    fields = np.asarray(field_indices, np.uint64)
    ids = hash_ids(values).reshape(len(fields), n).T  # (n, k)
    return make_keys(fields[None, :], ids)


def split_multi(values: list[str], sep: str, field_index: int) -> Ragged:
    """A list-valued column, e.g. "Comedy|Drama", -> Ragged of keys of field `field_index`.

    An empty cell (and an empty item, as in "a||b") gets the field's missing key, so every
    row has at least one key and a pooled embedding is always defined.
    """
    items = [s.split(sep) for s in values]
    lengths = np.fromiter(map(len, items), np.int64, len(items))
    offsets = np.zeros(len(items) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    keys = make_keys(field_index, hash_ids(list(chain.from_iterable(items))))
    return Ragged(keys, offsets)


def select_rows(r: Ragged, keep: np.ndarray) -> Ragged:
    """The rows of `r` where `keep` (B,) bool is True."""
    lengths = np.diff(r.offsets)
    offsets = np.zeros(int(keep.sum()) + 1, np.int64)
    np.cumsum(lengths[keep], out=offsets[1:])
    return Ragged(r.values[np.repeat(keep, lengths)], offsets)


def _split_quoted(line: str, delimiter: str) -> list[str] | str:
    """One line with quotes -> fields, or an error reason. Parsed alone, so an unclosed quote
    cannot swallow the next line (the index has already fixed where each row is)."""
    try:
        rows = list(csv.reader([line], delimiter=delimiter, strict=True))
    except csv.Error as e:
        return f"bad quoting: {e}"
    return rows[0] if rows else [""]


@dataclass
class ParsedRows:
    """What `CsvSource._parse` returns for the n rows of a Table (bad ones included)."""

    keys: np.ndarray                 # (n, F_single) int64
    dense: np.ndarray                # (n, D) float32
    labels: np.ndarray               # (n,) float32
    multi: list[Ragged] = field(default_factory=list)


class CsvSource(DataSource):
    """A delimited text file with one row per line, served by row range (see `DataSource`).

    Subclasses set `COLUMNS` (names in file order), `LABEL_COLUMN` (its index, used to tell
    a header from data) and `schema`, and implement `_parse`.

    Args:
        path: the file.
        delimiter: field separator; None detects it from the first line (tab if it has one,
            else comma).
        header: True/False; None detects it: the first line is a header when its label
            column is not a number. (Not "not 0/1": a first data line with a bad label such
            as 7 must be reported as malformed, not silently taken for a header.)
        strict: raise `DataError` at the first malformed line instead of skipping it.

    Rows are lines: `num_rows` counts malformed lines too, and `read(start, end)` returns
    `end - start` rows minus the malformed ones in that range, which are recorded once each
    in `malformed` (so `num_rows == rows served + malformed_count` after a full pass).
    """

    COLUMNS: tuple[str, ...] = ()
    LABEL_COLUMN: int = 0
    schema: Schema

    def __init__(self, path: str | os.PathLike, *, delimiter: str | None = None,
                 header: bool | None = None, strict: bool = False) -> None:
        if delimiter is not None and (len(delimiter) != 1 or delimiter in '"\r\n'):
            raise ValueError(f"delimiter must be one character other than a quote or "
                             f"newline, got {delimiter!r}")
        self.path = os.fspath(path)
        self.strict = bool(strict)
        with open(self.path, "rb") as f:
            first = f.readline().decode("utf-8", errors="replace").rstrip("\r\n")
        self.delimiter = delimiter if delimiter is not None else detect_delimiter(first)
        is_header = self._looks_like_header if header is None else header
        self._index = LineIndex(self.path, header=is_header)
        if self._index.header is not None:
            fields = self._split([self._index.header])[0]
            n = len(fields) if isinstance(fields, list) else 0
            if n != len(self.COLUMNS):
                raise DataError(f"{self.path}: header has {n} columns, expected "
                                f"{len(self.COLUMNS)} ({type(self).__name__}); wrong "
                                f"delimiter {self.delimiter!r} or not this format?")
        self._malformed: dict[int, MalformedLine] = {}

    def describe(self):
        from psrec.data.spec import SourceSpec

        return SourceSpec.of(self, path=self.path, strict=self.strict, delimiter=self.delimiter,
                             header=self._index.header is not None)

    # -- what subclasses provide ---------------------------------------------------------
    @abstractmethod
    def _parse(self, table: Table, errors: RowErrors) -> ParsedRows:
        """The n rows of `table` (all of the right width, file column order) -> arrays for
        all n rows; record each bad row's reason in `errors` (its values may be anything)."""

    # -- shared machinery ------------------------------------------------------------------
    def _looks_like_header(self, line: str) -> bool:
        fields = self._split([line])[0]
        return isinstance(fields, list) and (
            len(fields) <= self.LABEL_COLUMN or not _is_number(fields[self.LABEL_COLUMN]))

    def _split(self, lines: list[str]) -> list[list[str] | str]:
        """Lines -> field lists (or an error reason for a line with bad quoting)."""
        d = self.delimiter
        return [line.split(d) if '"' not in line else _split_quoted(line, d) for line in lines]

    def _table(self, lines: list[str]) -> tuple[Table, list[int], dict[int, str]]:
        """Lines -> (table of the well-formed ones, their line indices, {index: reason} of
        the others)."""
        d, width = self.delimiter, len(self.COLUMNS)
        joined = d.join(lines)
        if '"' not in joined and all(c == width - 1 for c in map(str.count, lines, repeat(d))):
            # Fast path, every line clean: one split for the whole range.
            flat = joined.split(d) if lines else []
            return Table(flat, width), list(range(len(lines))), {}
        bad: dict[int, str] = {}
        good: list[int] = []
        split = self._split(lines)
        for i, fields in enumerate(split):
            if isinstance(fields, str):
                bad[i] = fields
            elif len(fields) != width:
                bad[i] = f"expected {width} columns, got {len(fields)}"
            else:
                good.append(i)
        flat = list(chain.from_iterable(split[i] for i in good))
        return Table(flat, width), good, bad

    @property
    def num_rows(self) -> int:
        return self._index.num_lines

    @property
    def header(self) -> str | None:
        """The header line, or None when the file has none."""
        return self._index.header

    @property
    def malformed(self) -> list[MalformedLine]:
        """Malformed lines met so far (in ranges read), by line number, each once."""
        return [self._malformed[k] for k in sorted(self._malformed)]

    @property
    def malformed_count(self) -> int:
        return len(self._malformed)

    def scan_malformed(self, chunk_rows: int = 65536) -> list[MalformedLine]:
        """Read the whole file once (in chunks of `chunk_rows`) and return every malformed line."""
        for _ in self.batches(0, self.num_rows, chunk_rows):
            pass
        return self.malformed

    def read(self, start: int, end: int) -> Batch:
        """Rows `[start, end)` minus malformed lines.

        Returns a Batch with keys (B, F_single) int64, dense (B, D) float32, labels (B,)
        float32, multi one Ragged per multi-valued field, where B = end - start - (malformed
        lines in the range). Raises DataError at the first malformed line if strict.
        """
        self._check_range(start, end)
        return self._read_lines(self._index.read_lines(start, end), start, lambda i: start + i)

    def read_segments(self, segments: list[tuple[int, int]]) -> Batch:
        """Rows of each range `[a, b)` in order, parsed in one pass (one seek per range)."""
        lines: list[str] = []
        first = np.zeros(len(segments) + 1, np.int64)  # position in `lines` of each range's first row
        for k, (a, b) in enumerate(segments):
            self._check_range(a, b)
            lines += self._index.read_lines(a, b)
            first[k + 1] = len(lines)
        starts = [a for a, _ in segments]

        def row_of(i: int) -> int:
            k = int(np.searchsorted(first, i, side="right")) - 1
            return starts[k] + i - int(first[k])

        return self._read_lines(lines, starts[0] if starts else 0, row_of)

    def _read_lines(self, lines: list[str], start: int, row_of) -> Batch:
        """Lines -> a Batch of the well-formed ones; `row_of(i)`: the row of line i (reports)."""
        table, good, bad = self._table(lines)
        errors = RowErrors()
        parsed = self._parse(table, errors)
        for j, reason in errors.reasons.items():
            bad[good[j]] = reason
        if bad:
            self._record(row_of, lines, bad)
        keep = errors.keep_mask(table.n)
        return Batch(
            keys=parsed.keys[keep],
            dense=parsed.dense[keep].astype(np.float32, copy=False),
            labels=parsed.labels[keep],
            start=start,
            multi=[select_rows(r, keep) for r in parsed.multi],
        )

    def _record(self, row_of, lines: list[str], bad: dict[int, str]) -> None:
        records = [MalformedLine.make(self._index.line_no(row_of(i)), bad[i], lines[i], self.path)
                   for i in sorted(bad)]
        for m in records:
            self._malformed.setdefault(m.line_no, m)
        if self.strict:
            m = records[0]
            raise DataError(f"{self.path}: line {m.line_no}: {m.reason}: {m.raw!r}")
