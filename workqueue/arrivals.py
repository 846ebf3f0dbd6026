"""Arrival tickets for backup workers: per step, who got its gradient in first.

Chen et al., "Revisiting Distributed Synchronous SGD" (2016): N + b workers, each step
applies the first N gradients to arrive. A worker takes a ticket once its gradient is ready
(`ArrivalBoard.arrive`); tickets 1..N are applied, later ones dropped. A worker still busy
when N tickets are gone stops (`straggle_or_beaten`): its gradient would be dropped anyway.
`BackupTickets` is one worker's side of both, what the collective's and the PS's dense hooks
(`collective.backup`, `psrec.ps.backup`) share.

Boards: `LocalBoard` (workers on threads), `RayBoard` over the `ArrivalsActor` (PS workers,
one actor per job); the collective path keeps its own on the process group's store
(`collective.backup.StoreBoard`).
"""
from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod

import ray

__all__ = ["ArrivalBoard", "LocalBoard", "ArrivalsActor", "RayBoard", "BackupTickets", "straggle_or_beaten"]


class ArrivalBoard(ABC):
    """Per-step arrival tickets shared by every worker of a job."""

    poll_s = 0.001  # seconds between looks at the board while a slowdown runs

    @abstractmethod
    def arrive(self, step: int) -> int:
        """Take the next ticket of `step` (1 = first to arrive)."""

    @abstractmethod
    def count(self, step: int) -> int:
        """Tickets of `step` taken so far."""


class LocalBoard(ArrivalBoard):
    """The in-process board: one counter per step behind a lock.

    >>> b = LocalBoard(); [b.arrive(3), b.arrive(3), b.count(3), b.count(4)]
    [1, 2, 2, 0]
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[int, int] = {}

    def arrive(self, step: int) -> int:
        with self._lock:
            self._counts[step] = self._counts.get(step, 0) + 1
            return self._counts[step]

    def count(self, step: int) -> int:
        with self._lock:
            return self._counts.get(step, 0)


@ray.remote(num_cpus=0)
class ArrivalsActor(LocalBoard):
    """A job's board as a Ray actor (its calls are serialised: the counter stays exact)."""


class RayBoard(ArrivalBoard):
    """A worker's handle on the job's `ArrivalsActor`; every call waits at most `timeout_s`."""

    poll_s = 0.005  # a look costs an actor round trip (~0.5-1 ms)

    def __init__(self, actor, timeout_s: float = 60.0) -> None:
        self.actor, self.timeout_s = actor, timeout_s

    def arrive(self, step: int) -> int:
        return int(ray.get(self.actor.arrive.remote(step), timeout=self.timeout_s))

    def count(self, step: int) -> int:
        return int(ray.get(self.actor.count.remote(step), timeout=self.timeout_s))


def straggle_or_beaten(board: ArrivalBoard, step: int, needed: int, extra_s: float) -> tuple[float, bool]:
    """Sleep `extra_s` injected seconds, stopping early once `needed` workers have arrived at
    `step`; returns (seconds slept, beaten)."""
    t0 = time.perf_counter()
    while True:
        left = extra_s - (time.perf_counter() - t0)
        if left <= 0:
            return time.perf_counter() - t0, False
        if board.count(step) >= needed:
            return time.perf_counter() - t0, True
        time.sleep(min(left, board.poll_s))


class BackupTickets:
    """One worker's side of backup workers: the injected slowdown of its step, cut short once
    N have arrived, then its ticket.

    Args:
        board: the job's arrival board.
        needed: N, the gradients applied per step.
        stragglers: `workqueue.stragglers.Stragglers` or None; index: this worker.

    `t_origin` (perf_counter seconds) is where the straggler model's slow periods are timed
    from: the run's start, set by the runner.

    >>> t = BackupTickets(LocalBoard(), needed=1)
    >>> t.next_step(); t.take(rows=8, compute_s=0.01), t.take(rows=8, compute_s=0.01)
    ((True, 0.0), (False, 0.0))
    """

    def __init__(self, board: ArrivalBoard, needed: int, stragglers=None, index: int = 0) -> None:
        self.board, self.needed, self.stragglers, self.index = board, needed, stragglers, index
        self.t_origin = time.perf_counter()
        self.step_no = 0

    def next_step(self) -> None:
        self.step_no += 1

    def take(self, rows: int, compute_s: float) -> tuple[bool, float]:
        """(applied, seconds slept) for this step's gradient of `rows` rows after `compute_s`
        seconds of compute: the slowdown first, then a ticket. A worker without rows takes
        none: it must not crowd out a gradient."""
        slept, beaten = 0.0, False
        if self.stragglers is not None and rows:
            now = time.perf_counter()
            extra = self.stragglers.work_time(self.index, now - self.t_origin, compute_s) - compute_s
            slept, beaten = straggle_or_beaten(self.board, self.step_no, self.needed, extra)
        return not beaten and rows > 0 and self.board.arrive(self.step_no) <= self.needed, slept
