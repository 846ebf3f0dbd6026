"""The training rows' per-epoch order: a seeded shuffle of row blocks, the same in every mode.

Rows `[start, end)` are cut into blocks of `block` rows (the last may be shorter) and the
blocks into windows of `window` blocks. Each epoch permutes the windows, then the blocks
inside each window, seeded by `(seed, epoch)`. Logical row `start + i` of epoch `e` is then
row `i` of that block sequence. Rows inside a block keep their file order, so a read costs
one seek per block touched (the blocks of a batch are parsed together,
`DataSource.read_segments`), and consecutive batches stay inside one window of
`block * window` rows, where a Parquet row group or the page cache is already warm.

Everything is a pure function of `(start, end, block, window, seed, epoch)`: every worker of
every mode maps a logical row range to the same physical rows without talking to anyone, so
local, PS and collective runs train the same rows in the same steps, and a resumed run
replays the epoch it stopped in.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from psrec.data.base import Batch, DataSource

__all__ = ["RowOrder"]

_SEED_MOD = 2**63  # numpy seeds are non-negative: a negative train.seed is folded in


@dataclass(frozen=True)
class RowOrder:
    """Which physical rows a logical row range of one epoch reads.

    Args:
        start, end: the shuffled rows (the training range); rows outside it are read as they are.
        seed: ints seeding the order (with the epoch appended); None: file order every epoch.
        block: rows per block, read in file order (one seek each).
        window: blocks per window (a window's blocks are served together, in a shuffled order).

    >>> o = RowOrder(0, 10, seed=(1,), block=2, window=2)
    >>> [a for a, _ in o.segments(0, 0, 10)] != [a for a, _ in o.segments(1, 0, 10)]   # epochs differ
    True
    >>> sorted(r for a, b in o.segments(1, 0, 10) for r in range(a, b))   # each row once
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    """

    start: int
    end: int
    seed: tuple[int, ...] | None = None
    block: int = 256
    window: int = 64

    def __post_init__(self) -> None:
        if isinstance(self.seed, int):
            object.__setattr__(self, "seed", (self.seed,))
        if self.seed is not None:
            object.__setattr__(self, "seed", tuple(int(s) % _SEED_MOD for s in self.seed))
        if self.block < 1 or self.window < 1:
            raise ValueError(f"data.shuffle_block and the window must be >= 1, got {self.block}, {self.window}")
        if not 0 <= self.start <= self.end:
            raise ValueError(f"bad shuffled row range [{self.start}, {self.end})")

    @property
    def shuffled(self) -> bool:
        return self.seed is not None and self.end - self.start > self.block

    def within(self, start: int, end: int, salt: int) -> RowOrder:
        """The same kind of order over rows [start, end) only (a work-queue task: its rows
        stay in its own file slice), seeded apart by `salt` (the task's index)."""
        seed = None if self.seed is None else self.seed + (int(salt),)
        return RowOrder(start, end, seed, self.block, self.window)

    def segments(self, epoch: int, start: int, end: int) -> list[tuple[int, int]]:
        """Logical rows [start, end) of `epoch` -> physical row ranges [a, b), in order."""
        if not self.shuffled or end <= self.start or start >= self.end:
            return [(start, end)]
        logical, phys = _blocks(self.start, self.end, self.block, self.window, self.seed, int(epoch))
        out = [(start, self.start)] if start < self.start else []
        s = max(start, self.start)
        b = int(np.searchsorted(logical, s, side="right")) - 1
        stop = min(end, self.end)
        while s < stop:
            e = min(stop, int(logical[b + 1]))
            off = int(phys[b]) - int(logical[b])
            out.append((s + off, e + off))
            s, b = e, b + 1
        if end > self.end:
            out.append((self.end, end))
        return out

    def read(self, source: DataSource, epoch: int, start: int, end: int) -> Batch:
        """Logical rows [start, end) of `epoch` as one batch (its `start` is the logical one)."""
        segs = self.segments(epoch, start, end)
        out = source.read(*segs[0]) if len(segs) == 1 else source.read_segments(segs)
        out.start = start
        return out

    def view(self, source: DataSource, epoch: int) -> DataSource:
        """`source` as epoch `epoch` serves it (`source` itself when nothing is shuffled)."""
        return _EpochView(source, self, epoch) if self.shuffled else source


class _EpochView(DataSource):
    """A source whose logical rows are read through one epoch of a RowOrder."""

    def __init__(self, source: DataSource, order: RowOrder, epoch: int) -> None:
        self.source, self.order, self.epoch = source, order, epoch
        self.schema = source.schema

    @property
    def num_rows(self) -> int:
        return self.source.num_rows

    def read(self, start: int, end: int) -> Batch:
        self._check_range(start, end)
        return self.order.read(self.source, self.epoch, start, end)

    def malformed_lines(self) -> list:
        return self.source.malformed_lines()

    def describe(self):
        raise TypeError("an epoch view does not travel: send the source and its RowOrder")


@lru_cache(maxsize=8)  # a worker asks for the same epoch every step; a few epochs overlap in async runs
def _blocks(start: int, end: int, block: int, window: int, seed: tuple[int, ...],
            epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """(logical start of each served block (K+1,), physical start of each served block (K,))."""
    first = np.arange(start, end, block, dtype=np.int64)  # (K,) physical block starts, file order
    k = len(first)
    rng = np.random.default_rng([*seed, epoch])
    windows = rng.permutation(-(-k // window))
    served = np.concatenate([w * window + rng.permutation(min(window, k - w * window)) for w in windows])
    lengths = np.minimum(block, end - first)[served]
    logical = np.empty(k + 1, np.int64)
    logical[0] = start
    np.cumsum(lengths, out=logical[1:])
    logical[1:] += start
    return logical, first[served]
