"""Assignment policies: which pending task a worker gets next. Found by name in `POLICIES`.

A policy only orders *pending* task keys; leases, re-queues, epochs and accounting belong
to the queue core (`workqueue.queue`), which asks the policy first for nothing but "the next
key for worker w". Re-queued tasks never come back to a policy: the core hands them out
first to whoever asks, whatever the policy.

- `static`: each worker owns a fixed contiguous share of every epoch (the classic "shard
  the files by worker" input pipeline). A worker that runs out of its share waits; a
  straggler's share waits for the straggler. This is the baseline that suffers.
- `dynamic`: one shared queue of small tasks in the epoch's shuffled order. A fast worker
  simply comes back more often; the imbalance left is at most about one task per worker.
- `stealing`: each worker starts from its contiguous share (static's data locality:
  sequential reads of its own block, warm caches), and a worker whose share is empty steals
  one task from the back of the fullest share. Why keep it next to `dynamic`: with a
  central queue the balance is the same as `dynamic`, but a worker reads mostly
  consecutive row ranges, which is what a file-backed source or a per-worker data cache
  wants; and it is the shape a decentralised queue (no central actor) would take.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from typing import Any, ClassVar

from workqueue.tasks import TaskKey, contiguous_shares

__all__ = ["Policy", "StaticPolicy", "DynamicPolicy", "StealingPolicy", "POLICIES", "make_policy"]


class Policy(ABC):
    """Orders pending tasks. Args: num_workers: workers are numbered `0..num_workers-1`."""

    name: ClassVar[str]

    def __init__(self, num_workers: int) -> None:
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        self.num_workers = num_workers

    @abstractmethod
    def add_epoch(self, epoch: int, order: list[int], workers: list[int]) -> None:
        """Take in the tasks of `epoch`; `order` is the epoch's shuffled index order and
        `workers` the live workers that shares are cut for."""

    @abstractmethod
    def next(self, worker: int) -> TaskKey | None:
        """The next pending key for `worker`, removed from the pending set; None if none."""

    @abstractmethod
    def drain(self, worker: int) -> list[TaskKey]:
        """Remove and return the pending keys only `worker` would take (it is gone)."""

    @abstractmethod
    def depth(self) -> int:
        """Pending keys held by the policy."""

    @abstractmethod
    def state(self) -> dict[str, Any]:
        """JSON-friendly pending state, for the queue's checkpoint."""

    @abstractmethod
    def load_state(self, state: dict[str, Any]) -> None:
        """Inverse of `state`."""


def _keys(seq) -> list[list[int]]:
    return [[int(e), int(i)] for e, i in seq]


def _share_keys(epoch: int, order: list[int], workers: list[int]) -> dict[int, list[TaskKey]]:
    """Contiguous index blocks, one per live worker, each in the epoch's shuffled order."""
    rank = {idx: pos for pos, idx in enumerate(order)}
    shares = contiguous_shares(len(order), len(workers))
    return {w: [(epoch, i) for i in sorted(share, key=rank.__getitem__)] for w, share in zip(workers, shares)}


class _PerWorker(Policy):
    """Shared by `static` and `stealing`: one deque of own keys per worker."""

    def __init__(self, num_workers: int) -> None:
        super().__init__(num_workers)
        self._own: list[deque[TaskKey]] = [deque() for _ in range(num_workers)]

    def add_epoch(self, epoch: int, order: list[int], workers: list[int]) -> None:
        for w, keys in _share_keys(epoch, order, workers).items():
            self._own[w].extend(keys)

    def drain(self, worker: int) -> list[TaskKey]:
        keys = list(self._own[worker])
        self._own[worker].clear()
        return keys

    def depth(self) -> int:
        return sum(len(q) for q in self._own)

    def pending_of(self, worker: int) -> int:
        return len(self._own[worker])

    def state(self) -> dict[str, Any]:
        return {"own": [_keys(q) for q in self._own]}

    def load_state(self, state: dict[str, Any]) -> None:
        own = state["own"]
        if len(own) != self.num_workers:
            raise ValueError(f"policy state has {len(own)} workers, expected {self.num_workers}")
        self._own = [deque((int(e), int(i)) for e, i in q) for q in own]


class StaticPolicy(_PerWorker):
    """Each worker only ever gets its own contiguous share."""

    name = "static"

    def next(self, worker: int) -> TaskKey | None:
        q = self._own[worker]
        return q.popleft() if q else None


class StealingPolicy(_PerWorker):
    """Own share first (front); when empty, steal one key from the back of the fullest share.

    Stealing from the back takes the rows the victim would reach last, so the victim keeps
    reading consecutive ranges and the thief's stolen rows never race the victim's next task.
    """

    name = "stealing"

    def __init__(self, num_workers: int) -> None:
        super().__init__(num_workers)
        self.steals = 0

    def next(self, worker: int) -> TaskKey | None:
        q = self._own[worker]
        if q:
            return q.popleft()
        victim = max(range(self.num_workers), key=lambda w: (len(self._own[w]), -w))
        if not self._own[victim]:
            return None
        self.steals += 1
        return self._own[victim].pop()

    def state(self) -> dict[str, Any]:
        return {**super().state(), "steals": self.steals}

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        self.steals = int(state.get("steals", 0))


class DynamicPolicy(Policy):
    """One shared FIFO of the epoch's tasks in shuffled order; any worker takes the head."""

    name = "dynamic"

    def __init__(self, num_workers: int) -> None:
        super().__init__(num_workers)
        self._queue: deque[TaskKey] = deque()

    def add_epoch(self, epoch: int, order: list[int], workers: list[int]) -> None:
        self._queue.extend((epoch, i) for i in order)

    def next(self, worker: int) -> TaskKey | None:
        return self._queue.popleft() if self._queue else None

    def drain(self, worker: int) -> list[TaskKey]:
        return []  # nothing is reserved for a worker

    def depth(self) -> int:
        return len(self._queue)

    def state(self) -> dict[str, Any]:
        return {"queue": _keys(self._queue)}

    def load_state(self, state: dict[str, Any]) -> None:
        self._queue = deque((int(e), int(i)) for e, i in state["queue"])


POLICIES: dict[str, type[Policy]] = {p.name: p for p in (StaticPolicy, DynamicPolicy, StealingPolicy)}


def make_policy(name: str, num_workers: int) -> Policy:
    """The registered policy `name` for `num_workers` workers."""
    try:
        cls = POLICIES[name]
    except KeyError:
        raise KeyError(f"unknown work-queue policy {name!r}; known: {', '.join(sorted(POLICIES))}") from None
    return cls(num_workers)
