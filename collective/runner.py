"""Collective training end to end: start the ranks, train, evaluate, report.

`run_collective(cfg)` runs each rank in a Ray actor (a local Ray starts unless an address
is given) that joins a `torch.distributed` group (gloo on CPU, NCCL with GPUs), or, with
`transport="inprocess"`, on threads over a `ThreadGroup` (tests, debugging). Both run the
same CollectiveWorker, ShardedStore and DenseSync code.

Why plain Ray actors rather than Ray Train's TorchTrainer: the driver must poll every rank
while it trains (progress bar, Prometheus) and then ask the same live ranks to evaluate and
to hand over their shards, with the lifecycle (start, health check, bounded shutdown) and
CPU requests exactly like the PS workers' so that the comparison differs only in the
architecture. TorchTrainer runs one `train_loop_per_worker` that returns only at the end
(progress only through its reporting API, no calls into live ranks afterwards), and adds a
controller, run storage and a worker group of its own to every run, start-up that the
3-minute `psrec compare` budget would pay once per run; the process-group setup it would do
for us is ten lines (`collective.group.init_torch_group`).

results.json has the layout of `run_ps`'s (mode, model, auc, logloss, samples_per_s, the
aggregate phases and fractions, step_p50/p95, bytes_per_step, per_worker), plus the
collective's own: all-to-all and all-reduce seconds (total, exposed, hidden), messages and
bytes per step by kind, and per-rank shard statistics in place of per-PS ones.
`samples_per_s` counts training only (from the first step to the last rank's end), not the
seconds spent starting actors and forming the group (`startup_seconds`).
"""
from __future__ import annotations

import sys
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from collective.config import CollectiveConfig, collective_config_for
from psrec.raysession import ensure_ray
from collective.dense_sync import plan_buckets
from collective.worker import COMM_PHASES, PHASES, CollectiveWorker, WorkerReport
from psrec.config import Config
from psrec.config_io import to_mapping
from psrec.data.factory import make_source
from psrec.embedding.layer import EmbeddingLayer, TableSpec
from psrec.metrics.auc import auc, logloss
from psrec.metrics.prom import JobMetrics
from psrec.models.base import FeatureSpec
from psrec.runs import make_run_dir, write_results
from psrec.train.local import row_ranges
from psrec.train.plan import count_rounds, plan_model
from psrec.train.progress import progress_bar

__all__ = ["CollectivePlan", "plan_collective", "run_collective", "aggregate_collective", "start_job",
           "CollectiveJob", "InProcessJob", "RayJob"]


@dataclass
class CollectivePlan:
    """What every rank needs to build its part of a collective job (picklable)."""

    cfg: Config
    coll: CollectiveConfig
    spec: FeatureSpec
    tables: list[TableSpec]
    ev_configs: dict  # table -> EVConfig
    dense_init: np.ndarray  # (P,) the driver model's initial dense parameters
    param_numels: list[int]  # elements of each trainable dense parameter, registration order
    rounds: int
    batch_size: int
    base_row: int

    def build_worker(self, comm, source=None) -> CollectiveWorker:
        """Rank `comm.rank`'s worker: a replica with the plan's initial parameters, its shard."""
        import torch

        from collective.dense_sync import DenseSync
        from collective.sharded_store import ShardedStore
        from collective.sharding import make_sharding
        from psrec.net import parse_net
        from psrec.ps.dense import set_flat_params

        cfg, c = self.cfg, self.coll
        torch.manual_seed(cfg.train.seed)
        source = source or make_source(cfg)
        model = cfg.build_model(self.spec)
        set_flat_params(model, self.dense_init)
        layer = EmbeddingLayer(source.schema, self.tables, cfg.embedding.pooling)
        dense = DenseSync(model, comm, c.bucket_bytes, c.overlap)
        # DenseSync scales the loss gradient by 1/N at the model's output, so the embedding
        # rows' gradients arrive pre-scaled too: their owners sum them.
        store = ShardedStore(comm, self.ev_configs, make_sharding(c.sharding, comm.world_size, self.tables),
                             average=False)
        return CollectiveWorker(comm.rank, comm.world_size, model, layer, store, dense, source,
                                cfg.train.optimizer, cfg.train.lr, parse_net(c.net) if c.net else None)


def plan_collective(cfg: Config, coll: CollectiveConfig | None = None, source=None) -> CollectivePlan:
    """Resolve model, tables and the work split on the driver (seeded like `build_local`)."""
    from psrec.ps.dense import flat_params

    coll = coll or collective_config_for(cfg)
    mp = plan_model(cfg, source)
    source, spec, model, tables, ev_configs = mp.source, mp.spec, mp.model, mp.tables, mp.ev_configs
    rr = row_ranges(cfg, source)
    bs = cfg.data.batch_size
    rounds = count_rounds(cfg, rr.train_end - rr.train_start, coll.workers)
    numels = [p.numel() for p in model.parameters() if p.requires_grad]
    return CollectivePlan(cfg, coll, spec, tables, ev_configs, flat_params(model), numels, rounds, bs,
                          rr.train_start)


def aggregate_collective(summaries: list[dict]) -> dict[str, Any]:
    """Job-level figures from per-rank summaries (the keys of `psrec.ps.runner.aggregate_reports`,
    plus the collective's own)."""
    live = [s for s in summaries if s.get("steps")]
    phases = {p: float(sum(s["phases"][p] for s in live)) for p in PHASES}
    wall = sum(phases.values())
    comm = sum(phases[p] for p in COMM_PHASES)
    emu = sum(s["emulated_net_seconds"] for s in live)
    steps = max(1, sum(s["steps"] for s in live))
    tags: dict[str, float] = {}
    for s in live:
        for k, v in s["bytes_by_tag"].items():
            tags[k] = tags.get(k, 0) + v / steps
    nan = float("nan")
    return {
        "phases": phases,  # seconds summed over ranks
        "comm_fraction": comm / wall if wall else nan,
        "wait_fraction": phases["wait"] / wall if wall else nan,
        "emulated_comm_fraction": (comm + emu) / (wall + emu) if wall else nan,
        "step_p50": float(np.median([s["step_p50"] for s in live])) if live else nan,
        "step_p95": float(max(s["step_p95"] for s in live)) if live else nan,
        "bytes_per_step": float(sum(s["bytes_sent"] + s["bytes_received"] for s in live) / steps),
        "bytes_per_step_by_kind": tags,  # sizes, keys, rows, grads, dense
        "messages_per_step": float(sum(s["messages"] for s in live) / steps),
        "alltoall_seconds": phases["alltoall"],
        "allreduce_total_seconds": float(sum(s["allreduce_total_seconds"] for s in live)),
        "allreduce_exposed_seconds": phases["allreduce"],
        "allreduce_hidden_seconds": float(sum(s["allreduce_hidden_seconds"] for s in live)),
        "emulated_net_seconds": float(emu),
    }


# ------------------------------------------------------------------------------ jobs
class CollectiveJob(ABC):
    """The ranks of one job, started and set up; every call involves all ranks."""

    plan: CollectivePlan

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

    def __enter__(self) -> "CollectiveJob":
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


class InProcessJob(CollectiveJob):
    """Ranks on threads over a ThreadGroup (same worker code as on Ray)."""

    def __init__(self, plan: CollectivePlan, source=None) -> None:
        from collective.group import ThreadGroup

        self.plan = plan
        self.group = ThreadGroup(plan.coll.workers, timeout_s=plan.coll.timeout_s)
        self.workers = [plan.build_worker(self.group.member(r), source) for r in range(plan.coll.workers)]

    def _on_all(self, fn: Callable[[CollectiveWorker], Any]) -> list:
        out: list = [None] * len(self.workers)
        errors: list[BaseException] = []

        def run(i: int) -> None:
            try:
                out[i] = fn(self.workers[i])
            except BaseException as e:  # surfaced on the caller's thread after join
                errors.append(e)

        threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(self.workers))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        return out

    def train(self, bar=None, metrics=None):
        p = self.plan

        def run(w: CollectiveWorker) -> WorkerReport:
            for r in range(p.rounds):
                w.train_rows(*w.rows_of(r, p.batch_size, p.base_row), r + 1)
                if bar is not None:
                    bar.update(1)
            return w.report

        return self._on_all(run)

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

        def run(self) -> WorkerReport:
            p = self.plan
            return self.worker.run(p.rounds, p.batch_size, p.base_row)

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
        import ray

        runs = [a.run.remote() for a in self.actors]
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
                    _report_worker(metrics, i, x["phases"], x["rows"], x["sent"], x["received"])
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


# ------------------------------------------------------------------------------ run
def _report_worker(metrics: JobMetrics, w: int, phases: dict, rows: int, sent: int, received: int) -> None:
    metrics.worker(w, phases, rows, sent, received)
    total = sum(phases.values())
    # JobMetrics counts pull + push + allreduce; a collective's communication is its
    # all-to-all and all-reduce.
    metrics.comm.labels(str(w)).set(sum(phases.get(p, 0.0) for p in COMM_PHASES) / total if total else 0.0)


def _imbalance(values) -> float:
    v = np.asarray(list(values), dtype=np.float64)
    return float(v.max() / v.mean()) if v.size and v.mean() > 0 else float("nan")


def run_collective(cfg: Config, run_dir: Path | None = None, source=None,
                   coll: CollectiveConfig | None = None) -> dict[str, Any]:
    """Train with sharded embeddings (all-to-all) and all-reduced dense parameters, evaluate on
    the held-out rows, write results.json and metrics.prom into the run directory.

    Args:
        cfg: the run's configuration (data, model, embedding, train sections).
        run_dir: where to write (default: a new `<run.dir>/<time>-collective-<model>`).
        source: the data source (default: built from `cfg`).
        coll: the collective layout (default: `cfg.collective` when the Config has that
            section, else the shared settings of `cfg.ps`; see `collective_config_for`).

    Returns the results dict (the layout of `psrec.ps.runner.run_ps`'s, see module doc).
    """
    coll = coll or collective_config_for(cfg)
    source = source or make_source(cfg)
    plan = plan_collective(cfg, coll, source)
    mode = "collective"
    run_dir = Path(run_dir) if run_dir is not None else make_run_dir(cfg, mode)
    prom = JobMetrics(coll.metrics_port)
    if prom.port is not None:
        print(f"prometheus metrics: http://127.0.0.1:{prom.port}/metrics", file=sys.stderr)
    ar_total = _gauge(prom, "psrec_worker_allreduce_total_seconds", "dense all-reduce in flight (exposed + hidden)")
    ar_hidden = _gauge(prom, "psrec_worker_allreduce_hidden_seconds", "dense all-reduce hidden behind backward")
    shard_rows = _gauge(prom, "psrec_shard_rows", "embedding rows held by a rank's shard", "rank")
    shard_bytes = _gauge(prom, "psrec_shard_bytes_served_total", "row bytes a rank's shard sent to others", "rank")
    t0 = time.perf_counter()
    job = None
    try:
        job = start_job(plan, source)
        startup = time.perf_counter() - t0
        t1 = time.perf_counter()
        with progress_bar(plan.rounds * coll.workers, cfg.train.progress, desc=mode) as bar:
            reports = job.train(bar, prom)
        train_wall = time.perf_counter() - t1
        rr = row_ranges(cfg, source)
        y, p = job.evaluate(rr.eval_start, rr.eval_end, max(cfg.data.batch_size, 4096))
        shards = job.shard_stats()
    finally:
        if job is not None:
            job.close()
    summaries = [r.summary() for r in reports]
    try:
        for s in summaries:
            if s.get("steps"):
                _report_worker(prom, s["worker"], s["phases"], s["rows"], s["bytes_sent"], s["bytes_received"])
                ar_total.labels(str(s["worker"])).set(s["allreduce_total_seconds"])
                ar_hidden.labels(str(s["worker"])).set(s["allreduce_hidden_seconds"])
        for st in shards:
            shard_rows.labels(str(st["rank"])).set(sum(st["rows"].values()))
            shard_bytes.labels(str(st["rank"])).set(st["bytes_served"])
        scrape = prom.scrape()
    finally:
        prom.close()
    rows = sum(s.get("rows", 0) for s in summaries)
    metrics = {"auc": auc(y, p), "logloss": logloss(y, p) if len(y) else float("nan"), "eval_rows": int(len(y))}
    results = {
        "mode": mode,
        "model": cfg.model.name,
        **metrics,
        "samples_per_s": rows / train_wall if train_wall else float("nan"),
        "train_seconds": train_wall,
        "startup_seconds": startup,
        "train_rows": rows,
        "steps": plan.rounds,
        "batch_size": plan.batch_size,
        "workers": coll.workers,
        "sharding": coll.sharding,
        "bucket_bytes": coll.bucket_bytes,
        "overlap": coll.overlap,
        "transport": coll.transport,
        "backend": getattr(job, "backend", "inprocess"),
        "dense_params": int(len(plan.dense_init)),
        "dense_buckets": len(plan_buckets(plan.param_numels, coll.bucket_bytes)),
        "net": coll.net,
        **aggregate_collective(summaries),
        "per_worker": summaries,
        "per_shard": shards,
        "shard_imbalance": {
            "rows": _imbalance(sum(s["rows"].values()) for s in shards),
            "bytes_served": _imbalance(s["bytes_served"] for s in shards),
            "keys_served": _imbalance(s["keys_served"] for s in shards),
        },
        "metrics_port": prom.port,
        "run_dir": str(run_dir),
    }
    write_results(run_dir, results)
    (run_dir / "metrics.prom").write_text(scrape)  # the final scrape, for offline reading
    return results


def _gauge(prom: JobMetrics, name: str, doc: str, label: str = "worker"):
    from prometheus_client import Gauge

    return Gauge(name, doc, [label], registry=prom.registry)

