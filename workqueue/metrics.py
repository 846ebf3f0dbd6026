"""Prometheus metrics of the work queue, plus a plain-dict snapshot for results.json.

`QueueMetrics` is a `QueueObserver`: pass it to `WorkQueueCore(observer=...)` and every
take, done, re-queue and duplicate updates the metrics on the registry you passed in (no
global registry, so several queues, and tests, do not collide).
"""
from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from workqueue.queue import QueueObserver
from workqueue.tasks import Task

__all__ = ["QueueMetrics"]


class QueueMetrics(QueueObserver):
    """Queue depth, leases, re-queues and per-worker throughput.

    Args:
        registry: where the metrics are registered (a fresh one if None).
        prefix: metric name prefix.

    Example:
        >>> from prometheus_client import CollectorRegistry
        >>> m = QueueMetrics(CollectorRegistry())
        >>> m.on_done(0, Task(0, 0, 0, 100), lease_seconds=0.5)
        >>> m.snapshot()["workers"]["0"]["rows_per_s"]
        200.0
    """

    def __init__(self, registry: CollectorRegistry | None = None, prefix: str = "workqueue") -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r, p = self.registry, prefix
        self.depth = Gauge(f"{p}_depth", "tasks of opened epochs waiting to be taken", registry=r)
        self.leases = Gauge(f"{p}_leases", "tasks leased to workers now", registry=r)
        self.taken = Counter(f"{p}_taken", "tasks handed out", ["worker"], registry=r)
        self.done = Counter(f"{p}_done", "tasks completed (first report)", ["worker"], registry=r)
        self.rows = Counter(f"{p}_rows_done", "rows completed (first report)", ["worker"], registry=r)
        self.requeues = Counter(f"{p}_requeues", "leased tasks put back in the queue", ["reason"], registry=r)
        self.duplicates = Counter(f"{p}_duplicates", "task completions reported twice", registry=r)
        self.throughput = Gauge(f"{p}_worker_rows_per_second",
                                "rows done / seconds of leases held, per worker", ["worker"], registry=r)
        self._workers: dict[str, dict[str, float]] = {}
        self._requeues: dict[str, int] = {}
        self._dups = 0
        self._state = {"depth": 0, "leases": 0, "max_depth": 0}

    # --- QueueObserver ------------------------------------------------------------------

    def on_take(self, worker: int, task: Task) -> None:
        self.taken.labels(str(worker)).inc()
        self._w(worker)["taken"] += 1

    def on_done(self, worker: int, task: Task, lease_seconds: float | None) -> None:
        w = self._w(worker)
        self.done.labels(str(worker)).inc()
        self.rows.labels(str(worker)).inc(task.rows)
        w["done"] += 1
        w["rows"] += task.rows
        if lease_seconds is not None:
            w["rows_timed"] += task.rows
            w["lease_seconds"] += lease_seconds
        if w["lease_seconds"] > 0:
            w["rows_per_s"] = w["rows_timed"] / w["lease_seconds"]
            self.throughput.labels(str(worker)).set(w["rows_per_s"])

    def on_requeue(self, reason: str, n: int) -> None:
        self.requeues.labels(reason).inc(n)
        self._requeues[reason] = self._requeues.get(reason, 0) + n

    def on_duplicate(self, worker: int, task: Task) -> None:
        self.duplicates.inc()
        self._dups += 1

    def on_state(self, depth: int, leases: int) -> None:
        self.depth.set(depth)
        self.leases.set(leases)
        self._state.update(depth=depth, leases=leases, max_depth=max(self._state["max_depth"], depth))

    # --- export -------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Plain numbers for results.json; worker ids are strings (JSON object keys)."""
        return {**self._state, "requeues": dict(self._requeues), "duplicates": self._dups,
                "workers": {k: dict(v) for k, v in sorted(self._workers.items(), key=lambda kv: int(kv[0]))}}

    def text(self) -> str:
        """The Prometheus exposition text of this registry."""
        return generate_latest(self.registry).decode()

    def _w(self, worker: int) -> dict[str, float]:
        return self._workers.setdefault(str(worker), {"taken": 0, "done": 0, "rows": 0, "rows_timed": 0,
                                                      "lease_seconds": 0.0, "rows_per_s": 0.0})
