"""Many files as one source: the train files, then the valid files, then the test files, one
after the other, so every mode's row ranges (and the work queue's tasks) address them all.

Layout of the rows (`SplitLayout`): `[0, fit)` train, `[held_start, n_train)` the held-out
test share of the train files when there is no test file, then valid, then test. The rows
are served in file order; `data.shuffle`'s per-epoch order is applied above the source
(`psrec.data.shuffle.RowOrder`), the same way for every source.
"""
from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from psrec.data.base import Batch, DataSource, concat_batches
from psrec.data.errors import DataError

__all__ = ["FileSetSource", "SplitLayout", "expand_paths"]


def expand_paths(pattern: str, what: str) -> list[str]:
    """A path or glob (comma-separated for several) -> files, sorted per pattern; a DataError
    naming `what` (e.g. "data.train_path") when nothing matches."""
    out: list[str] = []
    for p in [s.strip() for s in pattern.split(",") if s.strip()]:
        if glob.has_magic(p):
            hits = sorted(h for h in glob.glob(p) if not os.path.isdir(h))
            if not hits:
                raise DataError(f"{what}: no file matches {p!r}")
            out += hits
        else:
            out.append(p)  # a missing file or a directory is reported by its reader, by name
    return out


@dataclass(frozen=True)
class SplitLayout:
    """Where each split's rows are: [start, end) ranges, and the files behind them.

    files: (split, path, first row, rows) for every file, split in train/valid/test.
    test_from: "test_path", or "held out: last N rows of the train files".
    """

    train: tuple[int, int]
    valid: tuple[int, int]
    test: tuple[int, int]
    files: tuple[tuple[str, str, int, int], ...]
    test_from: str


class FileSetSource(DataSource):
    """Train, valid and test files as one DataSource, each file read by its own source.

    Args:
        train, valid, test: file paths (test empty: `test_share` of the train rows, the last
            ones, are held out for testing).
        opener: "module:Class" of the per-file source, called with `path=` and `options`.
        options: the per-file source's other arguments (features, label, ...).
        test_share: the held-out share when there is no test file.
    """

    def __init__(self, train: Sequence[str], valid: Sequence[str] = (), test: Sequence[str] = (), *,
                 opener: str, options: dict[str, Any] | None = None, test_share: float = 0.1) -> None:
        from psrec.data.spec import SourceSpec

        if not train:
            raise DataError("data.train_path names no file")
        self._args = dict(train=list(train), valid=list(valid), test=list(test), opener=opener,
                          options=dict(options or {}), test_share=test_share)
        self.parts: list[tuple[str, DataSource]] = []
        for split, paths in (("train", train), ("valid", valid), ("test", test)):
            for p in paths:
                self.parts.append((split, SourceSpec(factory=opener, kwargs={**(options or {}), "path": p}).build()))
        for _, s in self.parts:
            _probe(s)
        self.schema = self.parts[0][1].schema
        for _, s in self.parts[1:]:
            if s.schema != self.schema:
                raise DataError(f"{getattr(s, 'path', s)}: its fields differ from the first file's")
        sizes = np.array([s.num_rows for _, s in self.parts], np.int64)
        self._start = np.zeros(len(sizes) + 1, np.int64)  # first logical row of each file
        np.cumsum(sizes, out=self._start[1:])
        n_of = {sp: int(sum(s.num_rows for x, s in self.parts if x == sp)) for sp in ("train", "valid", "test")}
        n_train, n_valid = n_of["train"], n_of["valid"]
        if test:
            fit, test_rng, test_from = n_train, (n_train + n_valid, int(self._start[-1])), "test_path"
        else:
            held = max(1, int(round(n_train * test_share))) if n_train > 1 else 0
            fit = n_train - held
            test_rng = (fit, n_train)
            test_from = f"held out: the last {held} rows of the train files ({test_share:.0%})"
        self.layout = SplitLayout(train=(0, fit), valid=(n_train, n_train + n_valid), test=test_rng,
                                  files=tuple((sp, getattr(s, "path", type(s).__name__), int(self._start[i]),
                                               int(s.num_rows)) for i, (sp, s) in enumerate(self.parts)),
                                  test_from=test_from)

    def describe(self):
        from psrec.data.spec import SourceSpec

        return SourceSpec.of(self, **self._args)

    @property
    def num_rows(self) -> int:
        return int(self._start[-1])

    def malformed_lines(self) -> list:
        return [m for _, s in self.parts for m in s.malformed_lines()]

    def read(self, start: int, end: int) -> Batch:
        """Rows `[start, end)` (see the module doc), malformed rows left out: one read per file touched."""
        self._check_range(start, end)
        pieces = []
        a, b = start, end
        f = int(np.searchsorted(self._start, a, side="right")) - 1
        while a < b:
            e = min(b, int(self._start[f + 1]))
            if e > a:
                off = int(self._start[f])
                pieces.append(self.parts[f][1].read(a - off, e - off))
            a, f = e, f + 1
        if not pieces:
            return _empty(self, start)
        out = concat_batches(pieces) if len(pieces) > 1 else pieces[0]
        out.start = start
        return out

    def read_segments(self, segments: list[tuple[int, int]]) -> Batch:
        """Rows of each range in order: the ranges in one file go to it in one call (one parse)."""
        runs: list[tuple[int, list[tuple[int, int]]]] = []  # (file, its ranges), in order
        for a, b in segments:
            self._check_range(a, b)
            f = int(np.searchsorted(self._start, a, side="right")) - 1
            while a < b:
                e = min(b, int(self._start[f + 1]))
                if e > a:
                    off = int(self._start[f])
                    if runs and runs[-1][0] == f:
                        runs[-1][1].append((a - off, e - off))
                    else:
                        runs.append((f, [(a - off, e - off)]))
                a, f = e, f + 1
        pieces = [self.parts[f][1].read_segments(rs) for f, rs in runs]
        start = segments[0][0] if segments else 0
        if not pieces:
            return _empty(self, start)
        out = concat_batches(pieces) if len(pieces) > 1 else pieces[0]
        out.start = start
        return out


# Rows read from the head of each file at open: enough to tell a wrong spec (every row bad)
# from a few malformed lines, cheap next to a pass.
PROBE_ROWS = 1000


def _probe(src: DataSource) -> None:
    """A DataError, one line, when a file has no rows or its first rows are all malformed (a
    label that is not 0/1, the wrong delimiter, ...): the spec does not fit the file."""
    name = getattr(src, "path", type(src).__name__)
    if src.num_rows == 0:
        raise DataError(f"{name}: no data rows")
    n = min(PROBE_ROWS, src.num_rows)
    if len(src.read(0, n)) == 0:
        bad = src.malformed_lines()
        why = f"; e.g. line {bad[0].line_no}: {bad[0].reason}" if bad else ""
        raise DataError(f"{name}: none of the first {n} rows is well-formed{why}")


def _empty(src: FileSetSource, start: int) -> Batch:
    b = src.parts[0][1].read(0, 0)
    b.start = start
    return b
