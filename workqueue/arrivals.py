"""Arrival tickets for backup workers: per step, who got its gradient in first.

Chen et al., "Revisiting Distributed Synchronous SGD" (2016): N + b workers, each step
applies the first N gradients to arrive. A worker takes a ticket once its gradient is ready
(`ArrivalBoard.arrive`); tickets 1..N are applied, later ones dropped. A worker still busy
when N tickets are gone stops (`straggle_or_beaten`): its gradient would be dropped anyway.

Boards: `LocalBoard` (workers on threads), `RayBoard` over the `ArrivalsActor` (PS workers,
one actor per job); the collective path keeps its own on the process group's store
(`collective.backup.StoreBoard`).
"""
from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod

__all__ = ["ArrivalBoard", "LocalBoard", "ArrivalsActor", "RayBoard", "straggle_or_beaten"]


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


try:
    import ray
except ImportError:  # pragma: no cover - ray is a dependency; the local board needs none
    ray = None

if ray is not None:
    @ray.remote(num_cpus=0)
    class ArrivalsActor(LocalBoard):
        """A job's board as a Ray actor (its calls are serialised: the counter stays exact)."""
else:  # pragma: no cover
    ArrivalsActor = None


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
