"""Errors of the file readers: a malformed line is a record, bad input as a whole is a DataError.

A reader never drops a line silently: a line it cannot parse becomes a `MalformedLine`
(kept on the source and counted), or, in strict mode, a `DataError` naming it.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MalformedLine", "DataError", "RAW_LIMIT"]

# Enough of a line to recognise it in an editor; a whole Criteo line is ~150-400 chars
# and a corrupt one can be megabytes (a missing newline), so the record keeps only a prefix.
RAW_LIMIT = 120


@dataclass(frozen=True)
class MalformedLine:
    """One line a reader skipped.

    Args:
        line_no: line number in the file, 1-based, counting the header line if any.
        reason: why it was skipped, e.g. "expected 40 columns, got 39".
        raw: the line as read (without its newline), truncated to `RAW_LIMIT` characters.
        file: the file it is in ('' when the source has a single file it does not name).

    Example:
        >>> MalformedLine(3, "label must be 0 or 1, got '7'", "7,1,2")
        MalformedLine(line_no=3, reason="label must be 0 or 1, got '7'", raw='7,1,2', file='')
    """

    line_no: int
    reason: str
    raw: str
    file: str = ""

    @classmethod
    def make(cls, line_no: int, reason: str, raw: str, file: str = "") -> MalformedLine:
        """Build a record, truncating `raw` to `RAW_LIMIT` characters (marked with '...')."""
        if len(raw) > RAW_LIMIT:
            raw = raw[:RAW_LIMIT] + "..."
        return cls(int(line_no), reason, raw, str(file))

    def __str__(self) -> str:
        where = f"{self.file}: " if self.file else ""
        return f"{where}line {self.line_no}: {self.reason}: {self.raw!r}"


class DataError(ValueError):
    """Input that cannot be read: a malformed line in strict mode, or a file of the wrong format."""
