"""Row-range tasks `[start, end)` and their per-epoch order.

A task is identified by `(epoch, index)`: `index` is its position in row order within the
epoch, so task `(e, i)` always covers the same rows whatever the shuffle. Everything here is
a pure function of (row range, task size, seed, epoch): a restored queue regenerates the
same tasks instead of storing them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Task", "TaskKey", "num_tasks", "task_bounds", "make_task", "split_tasks", "epoch_order",
           "contiguous_shares"]

TaskKey = tuple[int, int]  # (epoch, index)


@dataclass(frozen=True, order=True)
class Task:
    """Rows `[start, end)` of epoch `epoch`; `index` is the task's position in row order;
    `part` the part of the row range (a file of a multi-file source) the rows lie in.

    Example:
        >>> t = Task(epoch=0, index=2, start=200, end=300)
        >>> t.rows, t.key
        (100, (0, 2))
    """

    epoch: int
    index: int
    start: int
    end: int
    part: int = 0

    @property
    def rows(self) -> int:
        return self.end - self.start

    @property
    def key(self) -> TaskKey:
        return (self.epoch, self.index)


def num_tasks(start_row: int, end_row: int, task_rows: int) -> int:
    """Tasks needed to cover `[start_row, end_row)` with `task_rows` rows each (last one shorter)."""
    if end_row <= start_row:
        raise ValueError(f"empty row range [{start_row}, {end_row})")
    return -(-(end_row - start_row) // task_rows)


def task_bounds(start_row: int, end_row: int, task_rows: int, index: int) -> tuple[int, int]:
    """Rows `[start, end)` of task `index`."""
    s = start_row + index * task_rows
    if not start_row <= s < end_row:
        raise IndexError(f"task {index} is outside rows [{start_row}, {end_row})")
    return s, min(s + task_rows, end_row)


def make_task(start_row: int, end_row: int, task_rows: int, key: TaskKey) -> Task:
    s, e = task_bounds(start_row, end_row, task_rows, key[1])
    return Task(key[0], key[1], s, e)


def split_tasks(start_row: int, end_row: int, task_rows: int,
                splits: tuple[int, ...] = ()) -> list[tuple[int, int, int]]:
    """(start, end, part) of every task: each part of `[start_row, end_row)` (cut at `splits`,
    e.g. where each file starts) in tasks of `task_rows` rows, so no task spans two parts.

    Example:
        >>> split_tasks(0, 10, 4, splits=(6,))
        [(0, 4, 0), (4, 6, 0), (6, 10, 1)]
    """
    cuts = [start_row] + sorted(x for x in set(splits) if start_row < x < end_row) + [end_row]
    num_tasks(start_row, end_row, task_rows)  # an empty range is refused as before
    return [(s, min(s + task_rows, b), part) for part, (a, b) in enumerate(zip(cuts, cuts[1:]))
            for s in range(a, b, task_rows)]


def epoch_order(n: int, epoch: int, seed: int, shuffle: bool) -> list[int]:
    """Task indices of one epoch in the order they are handed out (a seeded permutation).

    Seeded by `(seed, epoch)` so every epoch differs and a restored queue replays it exactly.

    Example:
        >>> epoch_order(5, 0, seed=0, shuffle=False)
        [0, 1, 2, 3, 4]
        >>> sorted(epoch_order(5, 1, seed=0, shuffle=True))
        [0, 1, 2, 3, 4]
    """
    if not shuffle:
        return list(range(n))
    return [int(i) for i in np.random.default_rng([seed, epoch]).permutation(n)]


def contiguous_shares(n: int, parts: int) -> list[range]:
    """Split task indices `0..n-1` into `parts` contiguous blocks whose sizes differ by <= 1.

    Example:
        >>> contiguous_shares(10, 3)
        [range(0, 4), range(4, 7), range(7, 10)]
    """
    if parts < 1:
        raise ValueError(f"parts must be >= 1, got {parts}")
    base, extra = divmod(n, parts)
    out, s = [], 0
    for p in range(parts):
        e = s + base + (1 if p < extra else 0)
        out.append(range(s, e))
        s = e
    return out
