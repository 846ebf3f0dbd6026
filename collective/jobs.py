"""Running the ranks of a collective job: on threads over a ThreadGroup (tests, debugging)
or in Ray actors joined in a torch.distributed group; both behind `CollectiveJob`.

With `collective.data = "queue"` the ranks take row-range tasks from a work queue: the
`workqueue` Ray actor on Ray, the same state machine (`WorkQueueCore`) behind a lock in
process. One queue per `train()` call; its accounting ends up in `queue_stats`."""
from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import numpy as np

from collective.plan import CollectivePlan
from collective.worker import COMM_PHASES, PHASES, CollectiveWorker, WorkerReport
from psrec.config_io import to_mapping
from psrec.metrics.prom import JobMetrics
from psrec.raysession import ensure_ray
from psrec.threads import on_threads

__all__ = ["CollectiveJob", "InProcessJob", "RayJob", "start_job"]


class CollectiveJob(ABC):
    """The ranks of one job, started and set up; every call involves all ranks."""

    plan: CollectivePlan
    # after a queue-fed `train()`: {"accounting": ..., "stats": ...} of its work queue
    queue_stats: dict | None = None

    @abstractmethod
    def train(self, bar=None, metrics: JobMetrics | None = None) -> list[WorkerReport]:
        """Run `plan.rounds` steps on every rank; returns their reports."""

    @abstractmethod
    def evaluate(self, start: int, end: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """(labels, probabilities) over rows [start, end), shared out among the ranks."""

    @abstractmethod
    def dense(self) -> np.ndarray:
        """(P,) rank 0's dense parameters (every replica holds the same)."""

    @abstractmethod
    def dense_all(self) -> list[np.ndarray]:
        """Every rank's dense parameters (to check that replicas stay identical)."""

    @abstractmethod
    def table_values(self, table: str) -> list[tuple]:
        """Per rank: (keys, values, freqs, versions) of the rows its shard holds."""

    @abstractmethod
    def shard_stats(self) -> list[dict]:
        """Per rank: rows held per table, keys and bytes served, keys applied."""

    @abstractmethod
    def close(self) -> None:
        """Release the ranks (bounded: never hangs on a dead one)."""

    def __enter__(self) -> CollectiveJob:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _progress_of(worker: CollectiveWorker | None) -> dict:
    steps = list(worker.report.steps) if worker else []
    return {"steps": len(steps), "rows": sum(r.rows for r in steps),
            "phases": {p: sum(r.seconds.get(p, 0.0) for r in steps) for p in PHASES},
            "sent": sum(r.bytes_sent for r in steps), "received": sum(r.bytes_received for r in steps)}


def _shard_stats(worker: CollectiveWorker) -> dict:
    return to_mapping(worker.store.stats())


class _LockedQueue:
    """A `WorkQueueCore` shared by the rank threads (the in-process stand-in for the queue
    actor, which serialises calls by being one actor)."""

    def __init__(self, core) -> None:
        self.core = core
        self._lock = threading.Lock()

    def complete_and_take(self, worker: int, task):
        """As the queue actor's: report `task` done (None: nothing to report), take the next."""
        with self._lock:
            if task is not None:
                self.core.done(worker, task)
            return self.core.take(worker), self.core.finished

    def stats(self) -> dict:
        with self._lock:
            return {"accounting": self.core.accounting(), "stats": self.core.stats()}


class InProcessJob(CollectiveJob):
    """Ranks on threads over a ThreadGroup (same worker code as on Ray)."""

    def __init__(self, plan: CollectivePlan, source=None) -> None:
        from collective.group import ThreadGroup

        self.plan = plan
        self.group = ThreadGroup(plan.coll.workers, timeout_s=plan.coll.timeout_s)
        self.workers = [plan.build_worker(self.group.member(r), source) for r in range(plan.coll.workers)]

    def _on_all(self, fn: Callable[[CollectiveWorker], Any]) -> list:
        return on_threads(self.workers, fn)

    def train(self, bar=None, metrics=None):
        p = self.plan
        tick = (lambda: bar.update(1)) if bar is not None else None
        if p.coll.data == "queue":
            from workqueue.queue import WorkQueueCore

            cfg = p.cfg.workqueue
            queue = _LockedQueue(WorkQueueCore(cfg, p.coll.workers, *p.queue_rows))
            out = self._on_all(lambda w: w.run_tasks(lambda done: queue.complete_and_take(w.rank, done),
                                                     p.batch_size, poll_interval_s=cfg.poll_interval_s,
                                                     on_step=tick))
            self.queue_stats = queue.stats()
            return out

        return self._on_all(lambda w: w.run(p.rounds, p.batch_size, p.base_row, on_step=tick))

    def evaluate(self, start, end, batch_size):
        parts = self._on_all(lambda w: w.evaluate(start, end, batch_size))
        return np.concatenate([y for y, _ in parts]), np.concatenate([q for _, q in parts])

    def dense(self):
        from psrec.ps.dense import flat_params

        return flat_params(self.workers[0].model)

    def dense_all(self):
        from psrec.ps.dense import flat_params

        return [flat_params(w.model) for w in self.workers]

    def table_values(self, table):
        return [w.store.table_values(table) for w in self.workers]

    def shard_stats(self):
        return [_shard_stats(w) for w in self.workers]

    def close(self) -> None:
        for w in self.workers:
            w.dense.close()


def _actor_class():
    """The Ray actor class, defined on first use so that importing this module needs no Ray."""
    global _ACTOR
    if _ACTOR is not None:
        return _ACTOR
    import ray

    @ray.remote(max_concurrency=2, max_restarts=0)  # one thread trains, the other answers polls
    class CollectiveWorkerActor:
        """One rank in its own process."""

        def __init__(self, plan: CollectivePlan, rank: int) -> None:
            import torch

            torch.set_num_threads(plan.coll.threads)
            self.plan, self.rank = plan, rank
            self.worker: CollectiveWorker | None = None

        def ping(self) -> int:
            return self.rank

        def node_address(self) -> tuple[str, int]:
            from psrec.metrics.prom import free_port

            return ray.util.get_node_ip_address(), free_port()

        def setup(self, master: tuple[str, int]) -> str:
            """Join the process group (rank 0 listens at `master`) and build the worker."""
            from collective.group import init_torch_group

            c = self.plan.coll
            comm = init_torch_group(master, self.rank, c.workers, c.backend, c.timeout_s)
            self.worker = self.plan.build_worker(comm)
            return comm.backend

        def run(self, queue=None) -> WorkerReport:
            """Train: the interleaved rows, or tasks from the work-queue actor `queue`."""
            p = self.plan
            if queue is None:
                return self.worker.run(p.rounds, p.batch_size, p.base_row)
            r = self.rank
            return self.worker.run_tasks(lambda done: ray.get(queue.complete_and_take.remote(r, done)),
                                         p.batch_size, poll_interval_s=p.cfg.workqueue.poll_interval_s)

        def progress(self) -> dict:
            return _progress_of(self.worker)

        def evaluate(self, start: int, end: int, batch_size: int):
            return self.worker.evaluate(start, end, batch_size)

        def dense(self):
            from psrec.ps.dense import flat_params

            return flat_params(self.worker.model)

        def table_values(self, table: str):
            return self.worker.store.table_values(table)

        def shard_stats(self) -> dict:
            return _shard_stats(self.worker)

        def shutdown(self) -> None:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()

    _ACTOR = CollectiveWorkerActor
    return _ACTOR


_ACTOR = None


class RayJob(CollectiveJob):
    """Ranks in Ray actors forming a torch.distributed group.

    Lifecycle: start the actors, health-check them (`ping`), form the group (`setup`); on
    `close`, leave the group politely within a patience timeout, then `ray.kill` every actor
    whatever happened (a rank stuck in a collective never answers a polite request).
    """

    def __init__(self, plan: CollectivePlan, patience_s: float = 30.0) -> None:
        import ray

        self.plan = plan
        self.patience_s = patience_s
        c = plan.coll
        ensure_ray(c.address)
        cls = _actor_class()
        self.actors = [cls.options(num_cpus=c.worker_cpus).remote(plan, r) for r in range(c.workers)]
        try:
            ray.get([a.ping.remote() for a in self.actors], timeout=c.timeout_s)
            master = ray.get(self.actors[0].node_address.remote(), timeout=c.timeout_s)
            self.backend = ray.get([a.setup.remote(master) for a in self.actors], timeout=c.timeout_s)[0]
        except BaseException:
            self.close()
            raise

    def _get(self, refs, timeout: float | None = None):
        import ray

        return ray.get(refs, timeout=timeout or self.plan.coll.timeout_s)

    def train(self, bar=None, metrics=None):
        p = self.plan
        if p.coll.data != "queue":
            return self._train(None, bar, metrics)
        from workqueue.actor import WorkQueue

        queue = WorkQueue.start(p.cfg.workqueue, p.coll.workers, *p.queue_rows,
                                ready_timeout_s=p.coll.timeout_s)
        try:
            reports = self._train(queue.actor, bar, metrics)
            self.queue_stats = {"accounting": queue.accounting(), "stats": queue.stats()}
        finally:
            queue.shutdown(patience_s=min(self.patience_s, 10.0))
        return reports

    def _train(self, queue, bar, metrics) -> list[WorkerReport]:
        import ray

        runs = [a.run.remote(queue) for a in self.actors]
        done_steps, t0 = 0, time.perf_counter()
        pending = list(runs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=len(pending), timeout=0.5)
            if ready:
                ray.get(ready)  # a failed rank raises here, before the others time out
            prog = self._get([a.progress.remote() for a in self.actors])
            steps = sum(x["steps"] for x in prog)
            tot = {p: sum(x["phases"][p] for x in prog) for p in PHASES}
            wall = sum(tot.values())
            rows = sum(x["rows"] for x in prog)
            if bar is not None:
                bar.update(steps - done_steps, samples_per_s=rows / (time.perf_counter() - t0),
                           comm_pct=100.0 * sum(tot[p] for p in COMM_PHASES) / wall if wall else None)
            done_steps = steps
            if metrics is not None:
                for i, x in enumerate(prog):
                    metrics.worker(i, x["phases"], x["rows"], x["sent"], x["received"])
        return ray.get(runs)

    def evaluate(self, start, end, batch_size):
        parts = self._get([a.evaluate.remote(start, end, batch_size) for a in self.actors])
        return np.concatenate([y for y, _ in parts]), np.concatenate([q for _, q in parts])

    def dense(self):
        return self._get(self.actors[0].dense.remote())

    def dense_all(self):
        return self._get([a.dense.remote() for a in self.actors])

    def table_values(self, table):
        return self._get([a.table_values.remote(table) for a in self.actors])

    def shard_stats(self):
        return self._get([a.shard_stats.remote() for a in self.actors])

    def close(self) -> None:
        import ray

        actors, self.actors = getattr(self, "actors", []), []
        try:
            ray.get([a.shutdown.remote() for a in actors], timeout=self.patience_s)
        except Exception:  # noqa: BLE001 - a dead or stuck rank: killed below either way
            pass
        for a in actors:
            ray.kill(a)


def start_job(plan: CollectivePlan, source=None) -> CollectiveJob:
    """The ranks of `plan`, started and in a group (Ray or in process, per `plan.coll.transport`)."""
    if plan.coll.transport == "inprocess":
        return InProcessJob(plan, source)
    return RayJob(plan)
