"""What every data source serves: a schema and row-range batches.

A source is a table of `num_rows` rows. Any row range `[start, end)` can be read on its own
(and gives the same rows however the range is split), so that work can be divided by row
ranges across workers and work-queue tasks.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

__all__ = ["FieldSpec", "Schema", "Ragged", "Batch", "DataSource", "concat_batches"]


@dataclass(frozen=True)
class FieldSpec:
    """One categorical field.

    Args:
        name: field name, e.g. "C1".
        cardinality: number of distinct ids the field can take (an estimate for real data).
        multi_valued: True when a row holds a variable-length list of ids for this field.
    """

    name: str
    cardinality: int
    multi_valued: bool = False


@dataclass(frozen=True)
class Schema:
    """The fields of a source, in the order models see them (the F axis of `(B, F, D)`)."""

    fields: tuple[FieldSpec, ...]
    dense_names: tuple[str, ...] = ()

    @property
    def num_fields(self) -> int:
        return len(self.fields)

    @property
    def num_dense(self) -> int:
        return len(self.dense_names)

    @property
    def single_fields(self) -> tuple[int, ...]:
        """Indices (into `fields`) of single-valued fields, in order: the columns of `Batch.keys`."""
        return tuple(i for i, f in enumerate(self.fields) if not f.multi_valued)

    @property
    def multi_fields(self) -> tuple[int, ...]:
        """Indices of multi-valued fields, in order: the entries of `Batch.multi`."""
        return tuple(i for i, f in enumerate(self.fields) if f.multi_valued)


@dataclass
class Ragged:
    """A multi-valued field for a batch in CSR form.

    `values[offsets[b]:offsets[b+1]]` are row b's keys. values: (nnz,) int64, offsets: (B+1,) int64.
    """

    values: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets) - 1


@dataclass
class Batch:
    """Rows `[start, start + len)` of a source.

    keys:   (B, F_single) int64, field-tagged keys of the single-valued fields.
    multi:  one `Ragged` per multi-valued field.
    dense:  (B, num_dense) float32.
    labels: (B,) float32 in {0, 1}.
    start:  row index of the first row.
    """

    keys: np.ndarray
    dense: np.ndarray
    labels: np.ndarray
    start: int = 0
    multi: list[Ragged] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    def all_keys(self) -> np.ndarray:
        """Every key the batch references, with multiplicity: (nnz_total,) int64."""
        parts = [self.keys.reshape(-1)] + [r.values for r in self.multi]
        return np.concatenate(parts) if len(parts) > 1 else parts[0]


def concat_batches(batches: list[Batch]) -> Batch:
    """Concatenate consecutive batches into one (used by tests and small readers)."""
    if not batches:
        raise ValueError("concat_batches needs at least one batch")
    multi: list[Ragged] = []
    for j in range(len(batches[0].multi)):
        vals, offs, base = [], [np.zeros(1, np.int64)], 0
        for b in batches:
            r = b.multi[j]
            vals.append(r.values)
            offs.append(r.offsets[1:] + base)
            base += int(r.offsets[-1])
        multi.append(Ragged(np.concatenate(vals), np.concatenate(offs)))
    return Batch(
        keys=np.concatenate([b.keys for b in batches]),
        dense=np.concatenate([b.dense for b in batches]),
        labels=np.concatenate([b.labels for b in batches]),
        start=batches[0].start,
        multi=multi,
    )


class DataSource(ABC):
    """A table of rows that serves any row range as batches."""

    schema: Schema

    @property
    @abstractmethod
    def num_rows(self) -> int:
        """Rows available; may be very large for generated sources."""

    @abstractmethod
    def read(self, start: int, end: int) -> Batch:
        """Rows `[start, end)` as one batch. Raises IndexError outside `[0, num_rows]`."""

    def read_segments(self, segments: list[tuple[int, int]]) -> Batch:
        """The rows of several ranges `[a, b)`, in order, as one batch (a shuffled epoch's
        blocks, `psrec.data.shuffle`). This default reads each range; a text or Parquet
        reader parses them in one pass instead, so small blocks cost no per-read overhead."""
        pieces = [self.read(a, b) for a, b in segments]
        return pieces[0] if len(pieces) == 1 else concat_batches(pieces)

    def batches(self, start: int, end: int, batch_size: int) -> Iterator[Batch]:
        """Rows `[start, end)` in consecutive batches of `batch_size` (the last may be short); a
        batch whose rows were all malformed is skipped."""
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        for s in range(start, end, batch_size):
            b = self.read(s, min(s + batch_size, end))
            if len(b):
                yield b

    def describe(self):
        """What a worker rebuilds this source from (`psrec.data.spec.SourceSpec`). By default
        the source itself, serialised to the worker; built-in sources name their class and
        arguments instead, so each worker reopens the data on its own node."""
        from psrec.data.spec import SourceSpec

        return SourceSpec(obj=self)

    def malformed_lines(self) -> list:
        """Lines skipped so far as malformed (`psrec.data.errors.MalformedLine`); none for a
        source that cannot hold a malformed line."""
        return list(getattr(self, "malformed", None) or [])

    def _check_range(self, start: int, end: int) -> None:
        if not (0 <= start <= end <= self.num_rows):
            raise IndexError(f"row range [{start}, {end}) outside [0, {self.num_rows})")
