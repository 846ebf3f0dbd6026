"""Ray transport for the work queue: the central queue actor and the worker actors.

- `WorkQueue` starts the queue actor (a `WorkQueueCore` plus its metrics), checks its
  health, and shuts it down bounded: a final checkpoint within a patience, then `ray.kill`.
  The actor runs one call at a time (Ray's default), so the core needs no lock.
- `WorkerGroup` starts N worker actors around a caller-supplied work function
  `work(start, end) -> rows_done` (picklable; an optional `setup()` runs once inside the
  actor before the clock starts), launches their take/work/done loops together, waits for
  them, and tells the queue at once when one dies (`worker_lost`), so its lease is re-queued
  without waiting for the timeout. Stragglers are applied inside the worker as extra time
  after the real compute: `Stragglers.work_time(w, t, compute_seconds) - compute_seconds`.

The worker reports a task done in the same call that takes the next one
(`complete_and_take`): one round trip per task instead of two.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

import ray
from prometheus_client import CollectorRegistry
from ray.exceptions import GetTimeoutError, RayActorError

from workqueue.config import WorkQueueConfig
from workqueue.metrics import QueueMetrics
from workqueue.queue import WorkQueueCore
from workqueue.stragglers import StragglerConfig, Stragglers
from workqueue.tasks import Task

__all__ = ["WorkQueue", "WorkerGroup", "WorkFn", "StraggleMode"]

WorkFn = Callable[[int, int], int]  # work(start, end) -> rows done
StraggleMode = Literal["sleep", "spin"]


@ray.remote
class _QueueActor:
    def __init__(self, config: WorkQueueConfig, num_workers: int, start_row: int, end_row: int,
                 state: dict | None, splits: tuple[int, ...] = ()) -> None:
        self._metrics = QueueMetrics(CollectorRegistry())
        if state is not None:
            self._core = WorkQueueCore.restore(state, observer=self._metrics)
        else:
            self._core = WorkQueueCore(config, num_workers, start_row, end_row, splits=splits,
                                       observer=self._metrics)
        self._born = time.monotonic()

    def health(self) -> dict[str, Any]:
        c = self._core
        return {"ok": True, "pid": os.getpid(), "uptime_s": time.monotonic() - self._born,
                "finished": c.finished, "epoch": c.epoch, "depth": c.depth,
                "leases": sum(len(v) for v in c.leases().values())}

    def take(self, worker: int) -> tuple[Task | None, bool]:
        return self._core.take(worker), self._core.finished

    def complete_and_take(self, worker: int, task: Task | None) -> tuple[Task | None, bool]:
        if task is not None:
            self._core.done(worker, task)
        return self._core.take(worker), self._core.finished

    def done(self, worker: int, task: Task) -> bool:
        return self._core.done(worker, task)

    def heartbeat(self, worker: int) -> int:
        return self._core.heartbeat(worker)

    def worker_lost(self, worker: int) -> int:
        return self._core.worker_lost(worker)

    def leases(self) -> dict[int, list[Task]]:
        return self._core.leases()

    def done_by(self, epoch: int) -> dict[int, int]:
        return self._core.done_by(epoch)

    def stats(self) -> dict[str, Any]:
        return self._core.stats()

    def accounting(self) -> dict[str, Any]:
        return self._core.accounting()

    def duplicates(self) -> list[dict[str, int]]:
        return self._core.duplicates

    def checkpoint(self) -> dict[str, Any]:
        return self._core.checkpoint()

    def restore(self, state: dict[str, Any]) -> None:
        self._core = WorkQueueCore.restore(state, observer=self._metrics)

    def metrics_snapshot(self) -> dict[str, Any]:
        return self._metrics.snapshot()

    def metrics_text(self) -> str:
        return self._metrics.text()


def _kill_bounded(actors: Sequence[Any], patience_s: float) -> None:
    """Ask each actor to exit after its queued calls, wait up to `patience_s`, then kill."""
    refs = []
    for a in actors:
        try:
            refs.append(a.__ray_terminate__.remote())
        except RayActorError:
            pass
    if refs:
        ray.wait(refs, num_returns=len(refs), timeout=patience_s)
    for a in actors:
        try:
            ray.kill(a, no_restart=True)
        except (RayActorError, ValueError):
            pass


class WorkQueue:
    """Handle on the central queue actor. Start it with `WorkQueue.start(...)`.

    Args (of `start`):
        config: the queue's configuration.
        num_workers: workers are numbered `0..num_workers-1`.
        start_row, end_row: the row range of every epoch.
        state: a `checkpoint()` dict to continue from, instead of a fresh queue.
        splits: rows where tasks break (each file's first row): one task, one file's slice.
        num_cpus: Ray CPU request (fractional: the actor mostly waits).
        ready_timeout_s: how long `start` waits for the first health check.

    Example (needs a running Ray):
        >>> q = WorkQueue.start(WorkQueueConfig(task_rows=10), 2, 0, 100)  # doctest: +SKIP
        >>> q.take(0)  # doctest: +SKIP
        Task(epoch=0, index=..., start=..., end=...)
        >>> q.shutdown()  # doctest: +SKIP
    """

    def __init__(self, actor: Any, config: WorkQueueConfig, num_workers: int, timeout_s: float = 30.0) -> None:
        self.actor = actor
        self.config = config
        self.num_workers = num_workers
        self.timeout_s = timeout_s  # bound on every blocking call from the driver

    @classmethod
    def start(cls, config: WorkQueueConfig, num_workers: int, start_row: int, end_row: int, *,
              state: dict | None = None, splits: tuple[int, ...] = (), num_cpus: float = 0.25,
              ready_timeout_s: float = 60.0) -> WorkQueue:
        actor = _QueueActor.options(num_cpus=num_cpus).remote(config, num_workers, start_row, end_row, state,
                                                              tuple(splits))
        q = cls(actor, config, num_workers)
        try:
            q.health(timeout_s=ready_timeout_s)
        except BaseException:
            ray.kill(actor, no_restart=True)
            raise
        return q

    def _get(self, ref, timeout_s: float | None = None):
        return ray.get(ref, timeout=timeout_s if timeout_s is not None else self.timeout_s)

    def health(self, timeout_s: float | None = None) -> dict[str, Any]:
        """Ping the actor; raises `GetTimeoutError` or `RayActorError` when it is not healthy."""
        return self._get(self.actor.health.remote(), timeout_s)

    def take(self, worker: int) -> Task | None:
        return self._get(self.actor.take.remote(worker))[0]

    def done(self, worker: int, task: Task) -> bool:
        return self._get(self.actor.done.remote(worker, task))

    def worker_lost(self, worker: int) -> int:
        return self._get(self.actor.worker_lost.remote(worker))

    def leases(self) -> dict[int, list[Task]]:
        return self._get(self.actor.leases.remote())

    def done_by(self, epoch: int) -> dict[int, int]:
        return self._get(self.actor.done_by.remote(epoch))

    def stats(self) -> dict[str, Any]:
        return self._get(self.actor.stats.remote())

    def accounting(self) -> dict[str, Any]:
        return self._get(self.actor.accounting.remote())

    def duplicates(self) -> list[dict[str, int]]:
        return self._get(self.actor.duplicates.remote())

    def checkpoint(self) -> dict[str, Any]:
        return self._get(self.actor.checkpoint.remote())

    def restore(self, state: dict[str, Any]) -> None:
        self._get(self.actor.restore.remote(state))

    def metrics_snapshot(self) -> dict[str, Any]:
        return self._get(self.actor.metrics_snapshot.remote())

    def metrics_text(self) -> str:
        return self._get(self.actor.metrics_text.remote())

    def shutdown(self, patience_s: float = 5.0) -> dict[str, Any] | None:
        """Final checkpoint (None if the actor does not answer within `patience_s`), then
        terminate, and `ray.kill` whatever is still alive after the patience."""
        final = None
        try:
            final = self._get(self.actor.checkpoint.remote(), patience_s)
        except (GetTimeoutError, RayActorError):
            pass
        _kill_bounded([self.actor], patience_s)
        return final


@ray.remote
class _WorkerActor:
    def __init__(self, worker: int, work: WorkFn, stragglers: StragglerConfig | None, num_workers: int,
                 straggle: StraggleMode) -> None:
        self._worker = worker
        self._work = work
        self._stragglers = Stragglers(stragglers, num_workers) if stragglers is not None else None
        self._straggle = straggle

    def prepare(self) -> dict[str, Any]:
        t = time.perf_counter()
        setup = getattr(self._work, "setup", None)
        if callable(setup):
            setup()
        return {"worker": self._worker, "pid": os.getpid(), "setup_s": time.perf_counter() - t}

    def ping(self) -> int:
        return self._worker

    def run(self, queue: Any, t0: float, poll_interval_s: float) -> dict[str, Any]:
        """Take, work, report until the queue is finished. Times are seconds; `t_*` are
        relative to `t0` (a shared `time.time()` instant all workers wait for)."""
        w = self._worker
        wait = t0 - time.time()
        if wait > 0:
            time.sleep(wait)
        records: list[dict[str, Any]] = []
        polls, poll_take_s, prev = 0, 0.0, None
        while True:
            a = time.perf_counter()
            task, finished = ray.get(queue.complete_and_take.remote(w, prev))
            take_s = time.perf_counter() - a
            prev = None
            if task is None:
                polls += 1
                poll_take_s += take_s
                if finished:
                    break
                time.sleep(poll_interval_s)
                continue
            t_start = time.time() - t0
            c = time.perf_counter()
            rows = int(self._work(task.start, task.end))
            compute_s = time.perf_counter() - c
            extra_s = 0.0
            slowdown = 1.0
            if self._stragglers is not None:
                slowdown = self._stragglers.slowdown(w, t_start)
                extra_s = self._stragglers.work_time(w, t_start, compute_s) - compute_s
                self._pause(extra_s)
            t_end = time.time() - t0
            records.append({"worker": w, "epoch": task.epoch, "index": task.index, "start_row": task.start,
                            "end_row": task.end, "rows": rows, "take_s": take_s, "t_start": t_start,
                            "t_end": t_end, "compute_s": compute_s, "extra_s": extra_s,
                            "slowdown_at_start": slowdown})
            prev = task
        return {"worker": w, "tasks": records, "polls": polls, "poll_take_s": poll_take_s,
                "t_finish": time.time() - t0}

    def _pause(self, seconds: float) -> None:
        if seconds <= 0:
            return
        if self._straggle == "sleep":
            time.sleep(seconds)
            return
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:  # burn the core like a noisy neighbour would
            pass


class WorkerGroup:
    """N worker actors that drain a `WorkQueue`.

    The same actors can run several jobs one after another (`reset()` between them runs
    each work function's `setup()` again for fresh state): starting processes that import
    torch costs far more than the model build on a small shared machine.

    Args:
        work: one work function for all workers, or one per worker.
        stragglers: the straggler model applied inside each worker (None: none).
        num_cpus: Ray CPU request per worker actor.
        straggle: how extra time is spent: `sleep` (leaves the core to others) or `spin`.

    Example (needs a running Ray):
        >>> g = WorkerGroup(lambda s, e: e - s, 2)  # doctest: +SKIP
        >>> g.start(); g.launch(q); out = g.wait(); g.shutdown()  # doctest: +SKIP
    """

    def __init__(self, work: WorkFn | Sequence[WorkFn], num_workers: int, *,
                 stragglers: StragglerConfig | None = None, num_cpus: float = 0.25,
                 straggle: StraggleMode = "sleep") -> None:
        works = list(work) if isinstance(work, (list, tuple)) else [work] * num_workers
        if len(works) != num_workers:
            raise ValueError(f"{len(works)} work functions for {num_workers} workers")
        if straggle not in ("sleep", "spin"):
            raise ValueError(f"straggle must be sleep or spin, got {straggle!r}")
        self.queue: WorkQueue | None = None
        self.num_workers = num_workers
        self._spec = (works, stragglers, num_cpus, straggle)
        self.actors: list[Any] = []
        self._running: dict[Any, int] = {}

    def start(self, timeout_s: float = 120.0, setup: bool = True) -> list[Any]:
        """Create the actors and wait until each answers: with `setup`, each work function's
        `setup()` has run (returns their reports), else a ping (returns worker ids)."""
        works, stragglers, num_cpus, straggle = self._spec
        self.actors = [_WorkerActor.options(num_cpus=num_cpus).remote(w, works[w], stragglers, self.num_workers,
                                                                      straggle)
                       for w in range(self.num_workers)]
        try:
            return ray.get([a.prepare.remote() if setup else a.ping.remote() for a in self.actors],
                           timeout=timeout_s)
        except BaseException:
            self.shutdown(patience_s=1.0)
            raise

    def reset(self, timeout_s: float = 120.0) -> list[dict[str, Any]]:
        """Run every work function's `setup()` again (fresh model state for the next job)."""
        return ray.get([a.prepare.remote() for a in self.actors], timeout=timeout_s)

    def health(self, timeout_s: float = 5.0) -> list[bool]:
        """Per worker: did it answer a ping within `timeout_s`? (A busy worker, in `run`, does
        not answer until its loop ends: check health before `launch` or after `wait`.)"""
        refs = {a.ping.remote(): w for w, a in enumerate(self.actors)}
        ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=timeout_s)
        ok = [False] * self.num_workers
        for r in ready:
            try:
                ray.get(r)
                ok[refs[r]] = True
            except RayActorError:
                pass
        return ok

    def launch(self, queue: WorkQueue, start_delay_s: float = 0.5) -> float:
        """Start every worker's loop on `queue` at the same instant `t0 = now + start_delay_s`
        (`time.time()` seconds, returned)."""
        if queue.num_workers != self.num_workers:
            raise ValueError(f"queue is for {queue.num_workers} workers, the group has {self.num_workers}")
        self.queue = queue
        t0 = time.time() + start_delay_s
        poll = queue.config.poll_interval_s
        self._running = {a.run.remote(self.queue.actor, t0, poll): w for w, a in enumerate(self.actors)}
        return t0

    def wait(self, timeout_s: float | None = None) -> dict[str, Any]:
        """Wait for every loop to end. A worker that died is reported to the queue at once
        (its leases are re-queued for the others). Returns `{"results": {worker: run() dict},
        "lost": [workers], "timed_out": bool}`."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        results: dict[int, dict[str, Any]] = {}
        lost: list[int] = []
        pending = dict(self._running)
        while pending:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=left)
            if not ready:
                break
            for ref in ready:
                w = pending.pop(ref)
                try:
                    results[w] = ray.get(ref)
                except RayActorError:
                    lost.append(w)
                    self.queue.worker_lost(w)
        self._running = pending
        return {"results": results, "lost": lost, "timed_out": bool(pending)}

    def kill(self, worker: int) -> None:
        """Fault injection: kill one worker actor now (no restart)."""
        ray.kill(self.actors[worker], no_restart=True)

    def shutdown(self, patience_s: float = 5.0) -> None:
        """Terminate every worker actor; `ray.kill` those still alive after `patience_s`."""
        _kill_bounded(self.actors, patience_s)
        self.actors = []
        self._running = {}
