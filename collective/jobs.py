"""Running the ranks of a collective job: on threads over a ThreadGroup (tests, debugging)
or in Ray actors joined in a torch.distributed group; both behind `CollectiveJob`.

With `collective.data = "queue"` the ranks take row-range tasks from a work queue: the
`workqueue` Ray actor on Ray, the same state machine (`WorkQueueCore`) behind a lock in
process. One queue per `train()` call; its accounting ends up in `queue_stats`."""
from __future__ import annotations

import threading
from abc import abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from collective.plan import CollectivePlan
from collective.worker import CollectiveWorker
from psrec.config_io import to_mapping
from psrec.core.job import Job, check_placement, poll_ray_workers
from psrec.core.lockstep import split_peer_wait
from psrec.core.placement import ActorPlacement, actor_nodes
from psrec.core.plan import build_replica
from psrec.core.report import WorkerReport, progress_of
from psrec.core.result import max_over_mean
from psrec.core.step import COMM_PHASES
from psrec.metrics.prom import JobMetrics
from psrec.raysession import ensure_ray
from psrec.threads import on_threads

__all__ = ["CollectiveJob", "InProcessJob", "RayJob", "start_job"]


class CollectiveJob(Job):
    """The ranks of one job, started and set up; every call involves all ranks."""

    plan: CollectivePlan
    # after a queue-fed `train()`: {"accounting": ..., "stats": ...} of its work queue
    queue_stats: dict | None = None

    @property
    def rounds(self) -> int:
        return self.plan.rounds

    @property
    def checkpointable(self) -> bool:
        c = self.plan.coll  # a queue's leases and the speed-proportional shares are not in a checkpoint yet
        return c.data == "interleaved" and not c.backup

    def save_state(self, path: Path, base: Path | None = None) -> dict:
        """Every rank's shard, dense replica, optimizer and RNG (`collective.checkpoint`)."""
        self._ranks_save(path, base)
        return {"tables": [t.name for t in self.plan.tables], "shards": self.plan.coll.workers,
                "ranks": self.plan.coll.workers}

    def load_state(self, path: Path) -> None:
        from collective.checkpoint import check_ranks

        check_ranks(path, self.plan.coll.workers)
        self._ranks_load(path)

    @abstractmethod
    def _ranks_save(self, path: Path, base: Path | None) -> None:
        ...

    @abstractmethod
    def _ranks_load(self, path: Path) -> None:
        ...

    def train(self, bar=None, metrics: JobMetrics | None = None, start: int = 0,
              stop: int | None = None) -> list[WorkerReport]:
        """Run rounds [start, stop) on every rank (or the queue's tasks); returns their reports,
        each rank's wait for the slowest backward moved from all-reduce to wait
        (`psrec.core.lockstep`)."""
        reports = self._train(bar, metrics, start, self.plan.rounds if stop is None else stop)
        split_peer_wait(reports)
        self.shards = self.shard_stats()
        return reports

    @abstractmethod
    def _train(self, bar, metrics, start: int, stop: int) -> list[WorkerReport]:
        ...

    def model_spec(self):
        return self.plan.spec, self.plan.tables

    def save_model(self, path: Path) -> int:
        """Every rank's shard as `tables/shard-<rank>/` and rank 0's dense parameters."""
        from psrec.core.dense_state import save_dense

        self.export_shards(path / "tables")
        model, _ = build_replica(self.plan.cfg, self.plan.spec, self.plan.tables, self.dense(),
                                 self.plan.source.build())
        save_dense(path / "dense", model)
        return self.plan.coll.workers

    @abstractmethod
    def export_shards(self, path: Path) -> None:
        """Rank r's shard of every table it holds into `path/shard-<r>/<table>/`."""

    def details(self) -> dict:
        shards = self.shards
        return {"per_shard": shards, "workqueue": self.queue_stats,
                "backend": getattr(self, "backend", "inprocess"), "actor_nodes": getattr(self, "actor_nodes", None),
                "shard_imbalance": {
                    "rows": max_over_mean(sum(s["rows"].values()) for s in shards),
                    "bytes_served": max_over_mean(s["bytes_served"] for s in shards),
                    "keys_served": max_over_mean(s["keys_served"] for s in shards)}}

    def publish(self, metrics: JobMetrics) -> None:
        for st in self.shards:
            metrics.collective_shard(st["rank"], sum(st["rows"].values()), st["bytes_served"])

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
        from psrec.comm.collectives import ThreadGroup

        self.plan = plan
        self.group = ThreadGroup(plan.coll.workers, timeout_s=plan.coll.timeout_s)
        self.workers = [plan.build_worker(self.group.member(r), source) for r in range(plan.coll.workers)]

    def _on_all(self, fn: Callable[[CollectiveWorker], Any]) -> list:
        return on_threads(self.workers, fn)

    def _train(self, bar, metrics, start, stop):
        p = self.plan
        tick = (lambda: bar.update(1)) if bar is not None else None
        if p.coll.data == "queue":
            from workqueue.queue import WorkQueueCore

            cfg = p.cfg.workqueue
            queue = _LockedQueue(WorkQueueCore(cfg, p.coll.workers, *p.queue_rows, splits=p.queue_splits))
            out = self._on_all(lambda w: w.run_tasks(lambda done: queue.complete_and_take(w.rank, done),
                                                     p.batch_size, poll_interval_s=cfg.poll_interval_s,
                                                     on_step=tick))
            self.queue_stats = queue.stats()
            return out

        return self._on_all(lambda w: p.run_rounds(w, start, stop, on_step=tick))

    def export_shards(self, path):
        for w in self.workers:
            if w.store.local is not None:
                w.store.local.export(path / f"shard-{w.rank}", evict=False)

    def _ranks_save(self, path, base):
        from collective.checkpoint import save_rank

        self._on_all(lambda w: save_rank(w, path, base))

    def _ranks_load(self, path):
        from collective.checkpoint import load_rank

        self._on_all(lambda w: load_rank(w, path))

    def evaluate(self, start, end, batch_size):
        parts = self._on_all(lambda w: w.evaluate(start, end, batch_size))
        return np.concatenate([y for y, _ in parts]), np.concatenate([q for _, q in parts])

    def malformed(self):
        return self.workers[0].source.malformed_lines()  # the ranks share the driver's source

    def dense(self):
        from psrec.core.flat import flat_params

        return flat_params(self.workers[0].model)

    def dense_all(self):
        from psrec.core.flat import flat_params

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
            """Rank 0: open the group's rendezvous on a port bound now, and say where it is."""
            from psrec.comm.collectives import open_rendezvous

            host = ray.util.get_node_ip_address()
            self._store, port = open_rendezvous(host, self.plan.coll.workers, self.plan.coll.timeout_s)
            return host, port

        def setup(self, master: tuple[str, int]) -> str:
            """Join the process group (rank 0's rendezvous at `master`) and build the worker."""
            from psrec.comm.collectives import init_torch_group

            c = self.plan.coll
            comm = init_torch_group(master, self.rank, c.workers, c.backend, c.timeout_s,
                                    store=getattr(self, "_store", None))
            self.worker = self.plan.build_worker(comm)
            return comm.backend

        def run(self, queue=None, start: int = 0, stop: int | None = None) -> WorkerReport:
            """Train: rounds [start, stop) of the interleaved rows, or tasks from the work-queue actor `queue`."""
            p = self.plan
            if queue is None:
                return p.run_rounds(self.worker, start, p.rounds if stop is None else stop)
            r = self.rank
            return self.worker.run_tasks(lambda done: ray.get(queue.complete_and_take.remote(r, done)),
                                         p.batch_size, poll_interval_s=p.cfg.workqueue.poll_interval_s)

        def progress(self) -> dict:
            return progress_of(self.worker.report if self.worker else None)

        def malformed(self) -> list:
            return self.worker.source.malformed_lines() if self.worker else []

        def evaluate(self, start: int, end: int, batch_size: int):
            return self.worker.evaluate(start, end, batch_size)

        def dense(self):
            from psrec.core.flat import flat_params

            return flat_params(self.worker.model)

        def table_values(self, table: str):
            return self.worker.store.table_values(table)

        def export_shard(self, path: str) -> None:
            if self.worker.store.local is not None:
                self.worker.store.local.export(path, evict=False)

        def save_state(self, path: str, base: str | None = None) -> None:
            from collective.checkpoint import save_rank

            save_rank(self.worker, path, base)

        def load_state(self, path: str) -> None:
            from collective.checkpoint import load_rank

            load_rank(self.worker, path)

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
        check_placement([(f"{c.workers} ranks x {c.worker_cpus:g}", c.workers * c.worker_cpus)])
        cls = _actor_class()
        self.placement = ActorPlacement(c.placement, [c.worker_cpus] * c.workers)
        self.actors = [cls.options(num_cpus=c.worker_cpus, **self.placement.options(r)).remote(plan, r)
                       for r in range(c.workers)]
        try:
            ray.get([a.ping.remote() for a in self.actors], timeout=c.timeout_s)
            self.actor_nodes = {"placement": c.placement, "workers": actor_nodes(self.actors)}
            master = ray.get(self.actors[0].node_address.remote(), timeout=c.timeout_s)
            self.backend = ray.get([a.setup.remote(master) for a in self.actors], timeout=c.timeout_s)[0]
        except BaseException:
            self.close()
            raise

    def _get(self, refs, timeout: float | None = None):
        import ray

        return ray.get(refs, timeout=timeout or self.plan.coll.timeout_s)

    def _train(self, bar, metrics, start, stop):
        p = self.plan
        if p.coll.data != "queue":
            return self._run(None, bar, metrics, start, stop)
        from workqueue.actor import WorkQueue

        queue = WorkQueue.start(p.cfg.workqueue, p.coll.workers, *p.queue_rows, splits=p.queue_splits,
                                ready_timeout_s=p.coll.timeout_s)
        try:
            reports = self._run(queue.actor, bar, metrics)
            self.queue_stats = {"accounting": queue.accounting(), "stats": queue.stats()}
        finally:
            queue.shutdown(patience_s=min(self.patience_s, 10.0))
        return reports

    def _run(self, queue, bar, metrics, start=0, stop=None) -> list[WorkerReport]:
        actors = self.actors
        return poll_ray_workers([a.run.remote(queue, start, stop) for a in actors], actors, bar, metrics, COMM_PHASES,
                                self.plan.coll.timeout_s, self.plan.cfg.run.stall_timeout_s)

    def malformed(self):
        return [m for part in self._get([a.malformed.remote() for a in self.actors]) for m in part]

    def export_shards(self, path):
        self._get([a.export_shard.remote(str(path / f"shard-{r}")) for r, a in enumerate(self.actors)])

    def _ranks_save(self, path, base):
        self._get([a.save_state.remote(str(path), None if base is None else str(base)) for a in self.actors])

    def _ranks_load(self, path):
        self._get([a.load_state.remote(str(path)) for a in self.actors])

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

    def actor_names(self) -> dict[str, str]:
        return {a._actor_id.hex(): f"worker {i}" for i, a in enumerate(getattr(self, "actors", []))}

    def close(self) -> None:
        import ray

        actors, self.actors = getattr(self, "actors", []), []
        try:
            ray.get([a.shutdown.remote() for a in actors], timeout=self.patience_s)
        except Exception:  # noqa: BLE001 - a dead or stuck rank: killed below either way
            pass
        for a in actors:
            ray.kill(a)
        if getattr(self, "placement", None) is not None:
            self.placement.remove()


def start_job(plan: CollectivePlan, source=None) -> CollectiveJob:
    """The ranks of `plan`, started and in a group (Ray or in process, per `plan.coll.transport`)."""
    if plan.coll.transport == "inprocess":
        return InProcessJob(plan, source)
    return RayJob(plan)
