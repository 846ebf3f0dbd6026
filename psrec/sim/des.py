"""A discrete-event simulation of workers of uneven speed under static or dynamic task assignment.

The job: `total_rows` rows cut into tasks of `task_rows` rows (the last one shorter), as the
work queue (`workqueue/`) cuts an epoch. A worker that starts a task of r rows at time t
finishes it `work_time(worker, t, r * seconds_per_row)` seconds later; `work_time` is the
straggler model (`workqueue.stragglers.Stragglers.work_time`, or `constant_speeds(...)`).

Policies, as in `workqueue/policies.py`:
- `static`: worker w owns the w-th contiguous block of tasks and does only those; the job
  ends when the slowest block ends. With constant speeds v_w and equal shares
  s = total_rows / W: makespan = max_w s * seconds_per_row / v_w.
- `dynamic`: one shared queue; a worker that becomes free takes the next task. With equal
  speeds and T tasks of r rows, a multiple of W: makespan = (T / W) (latency + r * seconds_per_row).
- `stealing`: static blocks, but a worker whose block is empty takes the last task of the
  block with the most tasks left.

Every take from a queue (dynamic, stealing) costs `dispatch_latency` seconds (the round trip
to the queue actor); static shares are known up front and cost nothing to take.

The loop is event-driven (a heap of (time the worker is free, worker)), so a run costs
O(tasks log W) whatever the speeds.
"""
from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["WorkTime", "DESResult", "constant_speeds", "from_stragglers", "straggler_work_time",
           "simulate_assignment",
           "compare_policies", "POLICIES"]

WorkTime = Callable[[int, float, float], float]  # (worker, t_start s, base_seconds) -> seconds
POLICIES = ("static", "dynamic", "stealing")


def constant_speeds(speeds: Sequence[float]) -> WorkTime:
    """A WorkTime where worker w always runs at `speeds[w]` (1 = nominal, 0.25 = 4x slower).

    >>> constant_speeds([1.0, 0.5])(1, 0.0, 2.0)
    4.0
    """
    sp = tuple(float(s) for s in speeds)
    if not sp or any(not s > 0 for s in sp):
        raise ValueError(f"speeds must be > 0, got {speeds!r}")

    def work_time(worker: int, t_start: float, base_seconds: float) -> float:
        return base_seconds / sp[worker]

    return work_time


def from_stragglers(stragglers: Any) -> WorkTime:
    """The WorkTime of a `workqueue.stragglers.Stragglers` (anything with
    `work_time(worker, t_start, base_seconds)`), so the DES and the real work queue share one
    straggler model."""
    fn = getattr(stragglers, "work_time", None)
    if not callable(fn):
        raise TypeError(f"{type(stragglers).__name__} has no work_time(worker, t_start, base_seconds)")
    return fn


def straggler_work_time(config: Any, num_workers: int) -> WorkTime:
    """The WorkTime of `workqueue.stragglers.Stragglers(config, num_workers)`: the very model
    the real work-queue runs apply, so a simulated job and a real one see the same stragglers.

    >>> from workqueue.stragglers import StragglerConfig
    >>> straggler_work_time(StragglerConfig(factors="1:4x"), 2)(1, 0.0, 0.5)
    2.0
    """
    from workqueue.stragglers import Stragglers  # imported here: `psrec simulate` does not need it

    return from_stragglers(Stragglers(config, num_workers))


@dataclass(frozen=True)
class DESResult:
    """Outcome of one simulated job.

    Args:
        policy: static, dynamic or stealing.
        makespan: seconds until the last task ends.
        finish: per worker, when it finished its last task (0 if it got none).
        busy: per worker, seconds spent working (queue round trips excluded).
        tasks: per worker, tasks done.
        rows: per worker, rows done.
        takes: queue round trips paid (dynamic, stealing).
    """

    policy: str
    makespan: float
    finish: tuple[float, ...]
    busy: tuple[float, ...]
    tasks: tuple[int, ...]
    rows: tuple[int, ...]
    takes: int

    @property
    def total_rows(self) -> int:
        return sum(self.rows)

    @property
    def throughput(self) -> float:
        """Rows per second over the whole job."""
        return self.total_rows / self.makespan if self.makespan > 0 else float("inf")

    @property
    def idle_fraction(self) -> float:
        """Share of worker-seconds not spent working, up to the makespan."""
        cap = len(self.busy) * self.makespan
        return 1 - sum(self.busy) / cap if cap > 0 else 0.0


def _tasks(total_rows: int, task_rows: int) -> list[int]:
    full, rest = divmod(total_rows, task_rows)
    return [task_rows] * full + ([rest] if rest else [])


def _blocks(num_tasks: int, workers: int) -> list[deque[int]]:
    """Contiguous blocks of task indices, sizes differing by at most one (first blocks larger)."""
    base, extra = divmod(num_tasks, workers)
    out, start = [], 0
    for w in range(workers):
        n = base + (1 if w < extra else 0)
        out.append(deque(range(start, start + n)))
        start += n
    return out


def simulate_assignment(policy: str, num_workers: int, total_rows: int, task_rows: int,
                        seconds_per_row: float, work_time: WorkTime,
                        dispatch_latency: float = 0.0) -> DESResult:
    """Simulate one job (see the module doc for the policies and closed forms).

    Example: 2 workers, the second 4x slower, 8 rows in tasks of 1 row, 1 s per row:
        static: shares of 4 rows; the slow one takes 4 * 1 / 0.25 = 16 s.
        dynamic: the fast one does rows at t = 0..7 while the slow one needs 4 s per row:
        the slow worker finishes 2 tasks (t = 4, 8), the fast one 6 (t = 1..6): makespan 8 s.
        >>> wt = constant_speeds([1.0, 0.25])
        >>> simulate_assignment("static", 2, 8, 1, 1.0, wt).makespan
        16.0
        >>> r = simulate_assignment("dynamic", 2, 8, 1, 1.0, wt); r.makespan, r.tasks
        (8.0, (6, 2))
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; known: {', '.join(POLICIES)}")
    if num_workers < 1 or total_rows < 0 or task_rows < 1:
        raise ValueError("need num_workers >= 1, total_rows >= 0, task_rows >= 1")
    if seconds_per_row < 0 or dispatch_latency < 0:
        raise ValueError("seconds_per_row and dispatch_latency must be >= 0")
    sizes = _tasks(total_rows, task_rows)
    shared: deque[int] = deque(range(len(sizes)))
    blocks = _blocks(len(sizes), num_workers) if policy != "dynamic" else []
    finish = [0.0] * num_workers
    busy = [0.0] * num_workers
    tasks = [0] * num_workers
    rows = [0] * num_workers
    takes = 0
    heap = [(0.0, w) for w in range(num_workers)]  # (free at, worker): ties go to the lower id
    heapq.heapify(heap)
    while heap:
        t, w = heapq.heappop(heap)
        if policy == "dynamic":
            task = shared.popleft() if shared else None
        elif blocks[w]:
            task = blocks[w].popleft()
        elif policy == "stealing":
            victim = max(range(num_workers), key=lambda v: (len(blocks[v]), -v))
            task = blocks[victim].pop() if blocks[victim] else None
        else:
            task = None
        if task is None:
            continue  # this worker is done for the job
        if policy != "static":
            t += dispatch_latency
            takes += 1
        dur = float(work_time(w, t, sizes[task] * seconds_per_row))
        if dur < 0:
            raise ValueError(f"work_time returned {dur} < 0 for worker {w}")
        t += dur
        busy[w] += dur
        tasks[w] += 1
        rows[w] += sizes[task]
        finish[w] = t
        heapq.heappush(heap, (t, w))
    return DESResult(policy, max(finish, default=0.0), tuple(finish), tuple(busy), tuple(tasks),
                     tuple(rows), takes)


def compare_policies(num_workers: int, total_rows: int, task_rows: int, seconds_per_row: float,
                     work_time: WorkTime, dispatch_latency: float = 0.0,
                     policies: Sequence[str] = POLICIES) -> dict[str, DESResult]:
    """`simulate_assignment` for each policy on the same job and straggler model."""
    return {p: simulate_assignment(p, num_workers, total_rows, task_rows, seconds_per_row, work_time,
                                   dispatch_latency) for p in policies}
