"""The work queue's state machine: plain Python, no Ray, so it is tested directly.

Life of a task `(epoch, index)`:

    pending (in the policy) --take--> leased --done--> done
                  ^                      |
                  |  lease expires, or   |
    re-queued <---+--worker_lost---------+

- `take(worker)` hands out re-queued tasks first (oldest work, whoever asks), then the
  policy's next key for that worker. When neither has anything and epochs remain, the next
  epoch is opened (its tasks given to the policy): epochs flow into each other with no
  barrier, so a straggler finishing epoch e does not hold the others back from e+1.
- `done(worker, task)` counts the task the first time, whoever reports it (the original
  holder after its lease expired, or the worker that took the re-queued copy). A second
  report is a duplicate: counted once, flagged in `duplicates`.
- `expire()` (run on every take/done) re-queues leases older than `lease_timeout_s`;
  `worker_lost(w)` re-queues w's leases at once, and hands w's reserved share (static,
  stealing) to the others.

Exactly-once holds in the accounting by construction: each epoch keeps a map index ->
worker of the first completion, and an epoch is complete when every index is in it.
`checkpoint()` / `restore()` carry that state; a restored queue re-queues the tasks that
were leased at checkpoint time (their workers' results died with the old incarnation;
if one still arrives, it counts, and the re-queued copy becomes a flagged duplicate).
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from workqueue.config import WorkQueueConfig
from workqueue.policies import make_policy
from workqueue.tasks import Task, TaskKey, epoch_order, split_tasks

__all__ = ["WorkQueueCore", "QueueObserver", "CHECKPOINT_VERSION"]

CHECKPOINT_VERSION = 1


class QueueObserver:
    """Event hooks the core calls; all no-ops. `workqueue.metrics.QueueMetrics` implements them."""

    def on_take(self, worker: int, task: Task) -> None:
        pass

    def on_done(self, worker: int, task: Task, lease_seconds: float | None) -> None:
        pass

    def on_requeue(self, reason: str, n: int) -> None:
        pass

    def on_duplicate(self, worker: int, task: Task) -> None:
        pass

    def on_state(self, depth: int, leases: int) -> None:
        pass


@dataclass
class _Lease:
    worker: int
    since: float  # clock seconds at take
    deadline: float  # clock seconds


class WorkQueueCore:
    """Tasks of rows `[start_row, end_row)`, `config.epochs` times, for `num_workers` workers.

    Args:
        config: task size, epochs, shuffle, policy, lease timeout.
        num_workers: workers are numbered `0..num_workers-1`.
        start_row, end_row: the row range every epoch covers.
        splits: rows where tasks must break (where each file of a multi-file source starts),
            so a task reads one file's slice; `Task.part` says which.
        clock: seconds, monotonic; injected by tests to expire leases without sleeping.
        observer: event hooks (metrics); default none.

    Example:
        >>> q = WorkQueueCore(WorkQueueConfig(task_rows=4, shuffle=False), 2, 0, 10)
        >>> t = q.take(0); t
        Task(epoch=0, index=0, start=0, end=4, part=0)
        >>> q.done(0, t)
        True
        >>> while (t := q.take(1)) is not None: _ = q.done(1, t)
        >>> q.finished, q.accounting()["exactly_once"]
        (True, True)
    """

    def __init__(self, config: WorkQueueConfig, num_workers: int, start_row: int, end_row: int, *,
                 splits: tuple[int, ...] = (), clock: Callable[[], float] = time.monotonic,
                 observer: QueueObserver | None = None) -> None:
        self.config = config
        self.num_workers = num_workers
        self.start_row, self.end_row = start_row, end_row
        self._bounds = split_tasks(start_row, end_row, config.task_rows, tuple(splits))  # (start, end, part)
        self.splits = tuple(sorted({int(x) for x in splits if start_row < x < end_row}))
        self.tasks_per_epoch = len(self._bounds)
        self._clock = clock
        self._obs = observer or QueueObserver()
        self._policy = make_policy(config.policy, num_workers)
        self._opened = 0  # epochs whose tasks were given to the policy
        self._requeue: dict[TaskKey, str] = {}  # insertion-ordered; value = why it came back
        self._leases: dict[TaskKey, _Lease] = {}
        self._done: list[dict[int, int]] = [{} for _ in range(config.epochs)]  # index -> first worker
        self._duplicates: list[dict[str, int]] = []
        self._lost: set[int] = set()
        self._counts = {"taken": 0, "done": 0, "duplicates": 0, "requeued_expired": 0,
                        "requeued_lost": 0, "requeued_restored": 0, "reassigned": 0}
        self._rows = [0] * num_workers  # rows first-completed per worker
        self._tasks = [0] * num_workers
        self._lease_s = [0.0] * num_workers  # seconds between take and done, own leases

    # --- the protocol -------------------------------------------------------------------

    def take(self, worker: int) -> Task | None:
        """The next task for `worker`, now leased to it; None if nothing can be handed out
        now (all done, or the rest is leased to others and may still come back)."""
        self._check_worker(worker)
        self.expire()
        self._lost.discard(worker)  # a worker that asks is alive again
        key = self._next_key(worker)
        while key is None and self._opened < self.config.epochs:
            self._open_next_epoch()
            key = self._next_key(worker)
        if key is None:
            self._notify_state()
            return None
        now = self._clock()
        self._leases[key] = _Lease(worker, now, now + self.config.lease_timeout_s)
        task = self._task(key)
        self._counts["taken"] += 1
        self._obs.on_take(worker, task)
        self._notify_state()
        return task

    def done(self, worker: int, task: Task) -> bool:
        """Report `task` finished by `worker`. True if it counted, False if it was already
        done (a duplicate: counted once, flagged in `duplicates`)."""
        self._check_worker(worker)
        key = self._check_task(task)
        e, i = key
        lease = self._leases.get(key)
        first = self._done[e].get(i)
        if first is not None:
            if lease is not None and lease.worker == worker:
                del self._leases[key]
            self._duplicates.append({"epoch": e, "index": i, "worker": worker, "first_worker": first})
            self._counts["duplicates"] += 1
            self._obs.on_duplicate(worker, task)
            self.expire()
            self._notify_state()
            return False
        self._done[e][i] = worker
        lease_s = None
        if lease is not None:
            # If another worker holds the (re-queued) copy, its lease ends here; its own
            # report, when it comes, is the flagged duplicate.
            del self._leases[key]
            if lease.worker == worker:
                lease_s = self._clock() - lease.since
                self._lease_s[worker] += lease_s
        self._requeue.pop(key, None)
        self._rows[worker] += task.rows
        self._tasks[worker] += 1
        self._counts["done"] += 1
        self._obs.on_done(worker, task, lease_s)
        self.expire()
        self._notify_state()
        return True

    def expire(self) -> int:
        """Re-queue every lease past its deadline; returns how many."""
        now = self._clock()
        expired = [k for k, lease in self._leases.items() if lease.deadline <= now]
        for k in expired:
            del self._leases[k]
            self._requeue[k] = "expired"
        if expired:
            self._counts["requeued_expired"] += len(expired)
            self._obs.on_requeue("expired", len(expired))
        return len(expired)

    def heartbeat(self, worker: int) -> int:
        """Extend `worker`'s leases by a full timeout (for tasks longer than the timeout)."""
        deadline = self._clock() + self.config.lease_timeout_s
        n = 0
        for lease in self._leases.values():
            if lease.worker == worker:
                lease.deadline = deadline
                n += 1
        return n

    def worker_lost(self, worker: int) -> int:
        """`worker` died: re-queue its leases now (not at expiry) and hand its reserved
        pending share to the others. Returns the number of leases re-queued."""
        self._check_worker(worker)
        keys = [k for k, lease in self._leases.items() if lease.worker == worker]
        for k in keys:
            del self._leases[k]
            self._requeue[k] = "lost"
        if keys:
            self._counts["requeued_lost"] += len(keys)
            self._obs.on_requeue("lost", len(keys))
        share = self._policy.drain(worker)
        for k in share:
            self._requeue.setdefault(k, "reassigned")
        self._counts["reassigned"] += len(share)
        self._lost.add(worker)
        self._notify_state()
        return len(keys)

    # --- state --------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self._opened == self.config.epochs and all(
            len(d) == self.tasks_per_epoch for d in self._done)

    @property
    def depth(self) -> int:
        """Tasks of opened epochs waiting to be taken (policy + re-queued)."""
        return self._policy.depth() + len(self._requeue)

    @property
    def epoch(self) -> int:
        """The oldest epoch with a task not done (`epochs` when finished)."""
        for e, d in enumerate(self._done):
            if len(d) < self.tasks_per_epoch:
                return e
        return self.config.epochs

    @property
    def duplicates(self) -> list[dict[str, int]]:
        return list(self._duplicates)

    def leases(self) -> dict[int, list[Task]]:
        """worker -> the tasks it holds now."""
        out: dict[int, list[Task]] = {}
        for k, lease in self._leases.items():
            out.setdefault(lease.worker, []).append(self._task(k))
        return out

    def done_by(self, epoch: int) -> dict[int, int]:
        """Task index -> the worker whose report counted, for one epoch."""
        return dict(self._done[epoch])

    def accounting(self) -> dict[str, Any]:
        """Per epoch: tasks and rows done against the epoch's total; `exactly_once` is True
        when every epoch has every row done once (duplicates are counted once)."""
        epochs = []
        total_rows = self.end_row - self.start_row
        for e, d in enumerate(self._done):
            rows = sum(self._task((e, i)).rows for i in d)
            epochs.append({"epoch": e, "tasks": self.tasks_per_epoch, "tasks_done": len(d),
                           "rows": total_rows, "rows_done": rows,
                           "complete": len(d) == self.tasks_per_epoch and rows == total_rows})
        return {"epochs": epochs, "duplicates": len(self._duplicates),
                "exactly_once": all(ep["complete"] for ep in epochs)}

    def stats(self) -> dict[str, Any]:
        """Counters and per-worker totals (JSON-friendly)."""
        s: dict[str, Any] = dict(self._counts)
        s.update(depth=self.depth, leases=len(self._leases), epoch=self.epoch,
                 opened_epochs=self._opened, finished=self.finished, lost=sorted(self._lost),
                 requeues=self._counts["requeued_expired"] + self._counts["requeued_lost"]
                 + self._counts["requeued_restored"],
                 steals=getattr(self._policy, "steals", 0),
                 rows_by_worker=list(self._rows), tasks_by_worker=list(self._tasks),
                 lease_seconds_by_worker=list(self._lease_s))
        return s

    def checkpoint(self) -> dict[str, Any]:
        """Everything needed to continue the job: a JSON-friendly dict."""
        return {
            "version": CHECKPOINT_VERSION,
            "config": dataclasses.asdict(self.config),
            "num_workers": self.num_workers,
            "start_row": self.start_row,
            "end_row": self.end_row,
            "splits": list(self.splits),
            "opened": self._opened,
            "policy": self._policy.state(),
            "requeue": [[e, i, why] for (e, i), why in self._requeue.items()],
            "leases": [[lease.worker, e, i] for (e, i), lease in self._leases.items()],
            "done": [sorted([i, w] for i, w in d.items()) for d in self._done],
            "duplicates": list(self._duplicates),
            "lost": sorted(self._lost),
            "counts": dict(self._counts),
            "rows_by_worker": list(self._rows),
            "tasks_by_worker": list(self._tasks),
            "lease_seconds_by_worker": list(self._lease_s),
        }

    @classmethod
    def restore(cls, state: dict[str, Any], *, clock: Callable[[], float] = time.monotonic,
                observer: QueueObserver | None = None) -> WorkQueueCore:
        """A queue continuing from `checkpoint()`'s dict. Tasks leased at checkpoint time
        are re-queued (first in line), counted as `requeued_restored`."""
        if state.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"checkpoint version {state.get('version')!r}, expected {CHECKPOINT_VERSION}")
        q = cls(WorkQueueConfig(**state["config"]), int(state["num_workers"]), int(state["start_row"]),
                int(state["end_row"]), splits=tuple(state.get("splits", ())), clock=clock, observer=observer)
        q._opened = int(state["opened"])
        q._policy.load_state(state["policy"])
        for _, e, i in state["leases"]:
            q._requeue[(int(e), int(i))] = "restored"
        for e, i, why in state["requeue"]:
            q._requeue.setdefault((int(e), int(i)), str(why))
        q._done = [{int(i): int(w) for i, w in d} for d in state["done"]]
        q._duplicates = [dict(d) for d in state["duplicates"]]
        q._lost = {int(w) for w in state["lost"]}
        q._counts.update({k: int(v) for k, v in state["counts"].items()})
        q._counts["requeued_restored"] += len(state["leases"])
        q._rows = [int(x) for x in state["rows_by_worker"]]
        q._tasks = [int(x) for x in state["tasks_by_worker"]]
        q._lease_s = [float(x) for x in state["lease_seconds_by_worker"]]
        if state["leases"]:
            q._obs.on_requeue("restored", len(state["leases"]))
        q._notify_state()
        return q

    # --- helpers ------------------------------------------------------------------------

    def _next_key(self, worker: int) -> TaskKey | None:
        while self._requeue:
            key = next(iter(self._requeue))
            del self._requeue[key]
            if not self._is_done(key):
                return key
        while (key := self._policy.next(worker)) is not None:
            # A key can be done while still pending only after a restore (a result from the
            # old incarnation arrived); skip it rather than train the rows twice.
            if not self._is_done(key):
                return key
        return None

    def _open_next_epoch(self) -> None:
        e = self._opened
        order = epoch_order(self.tasks_per_epoch, e, self.config.seed, self.config.shuffle)
        live = [w for w in range(self.num_workers) if w not in self._lost] or list(range(self.num_workers))
        self._policy.add_epoch(e, order, live)
        self._opened += 1

    def _is_done(self, key: TaskKey) -> bool:
        return key[1] in self._done[key[0]]

    def _task(self, key: TaskKey) -> Task:
        s, e, part = self._bounds[key[1]]
        return Task(key[0], key[1], s, e, part)

    def _check_worker(self, worker: int) -> None:
        if not 0 <= worker < self.num_workers:
            raise ValueError(f"worker {worker} is not in 0..{self.num_workers - 1}")

    def _check_task(self, task: Task) -> TaskKey:
        e, i = task.epoch, task.index
        if not (0 <= e < self._opened and 0 <= i < self.tasks_per_epoch) or self._task((e, i)) != task:
            raise ValueError(f"{task} is not a task this queue handed out")
        return (e, i)

    def _notify_state(self) -> None:
        self._obs.on_state(self.depth, len(self._leases))
