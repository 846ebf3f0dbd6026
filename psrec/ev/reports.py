"""What an embedding variable reports: one eviction pass (`EvictionReport`) and its counts
and memory (`EVStats`). Plain frozen dataclasses; `psrec.ev.variable` fills them."""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["EvictionReport", "EVStats"]


@dataclass(frozen=True)
class EvictionReport:
    """What one eviction pass removed.

    Args:
        table: the variable's name.
        step: the global step eviction was judged against.
        rows_ttl: rows whose version was older than `step - steps_to_live`.
        rows_l2: further rows whose 0.5 * ||v||^2 was below `l2_evict_threshold`.
        bytes_freed: row storage released for reuse (values, freq/version, optimizer slots),
            in bytes. Arrays keep their capacity; new keys reuse the freed rows.
    """

    table: str
    step: int
    rows_ttl: int
    rows_l2: int
    bytes_freed: int

    @property
    def rows_evicted(self) -> int:
        return self.rows_ttl + self.rows_l2


@dataclass(frozen=True)
class EVStats:
    """Counts and memory of one variable.

    Args:
        table: the variable's name.
        rows: keys with a row.
        waiting: keys seen but not yet admitted (an estimate when `waiting_exact` is False).
        waiting_exact: False for the Bloom filter, whose count is estimated from its fill.
        admitted_total: keys admitted (given a row) so far, evicted ones included.
        evicted_total: rows evicted so far.
        row_bytes: storage per row in bytes (values, freq/version, slots).
        rows_used: rows handed out so far (live plus freed-for-reuse); arrays hold at least this many.
        bytes: memory held: row arrays at capacity, hash table and filter, in bytes.
        step: the largest global step applied (-1: none).
    """

    table: str
    rows: int
    waiting: int
    waiting_exact: bool
    admitted_total: int
    evicted_total: int
    row_bytes: int
    rows_used: int
    bytes: int
    step: int
