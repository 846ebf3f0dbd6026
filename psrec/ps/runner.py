"""Parameter-server training end to end, through the one run skeleton (`psrec.core.job`).

`run_ps(cfg)` runs on Ray (PS and workers are actors; a local Ray starts unless
`ps.address` names a cluster: `psrec.ps.ray_runner`) or in process (`ps.transport =
"inprocess"`: shards are objects, workers are threads; for tests and debugging). Both run
the same PSShard, PSClient, TrainStep and PSWorker code, on the rows of the source the run
was given (each Ray worker rebuilds it from `PSPlan.source`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from psrec.comm.collectives import ThreadGroup
from psrec.config import Config
from psrec.config_io import to_mapping
from psrec.core.flat import flat_params, slices
from psrec.core.job import Job, run_job
from psrec.core.local import predict_range
from psrec.core.lockstep import split_peer_wait
from psrec.core.plan import build_replica, plan_model, stragglers_of
from psrec.core.ranges import count_rounds, file_splits, rounds_per_epoch, row_order, row_ranges
from psrec.core.result import RunResult, max_over_mean
from psrec.core.step import DenseUpdate, TrainStep, make_dense_optimizer
from psrec.data.shuffle import RowOrder
from psrec.data.spec import SourceSpec
from psrec.embedding.layer import EmbeddingLayer
from psrec.metrics.prom import JobMetrics
from psrec.models.base import FeatureSpec
from psrec.net import parse_net
from psrec.ps.client import PSClient
from psrec.ps.dense import HybridAllReduce, OnPS
from psrec.ps.partition import make_partitioner
from psrec.ps.shard import DenseSpec, PSShard
from psrec.ps.transport import InProcessTransport, Transport
from psrec.ps.worker import PSWorker
from psrec.threads import on_threads
from workqueue.arrivals import LocalBoard
from workqueue.round_shares import RoundShares

__all__ = ["PSPlan", "plan_ps", "run_ps", "ps_mode", "InProcessPSJob", "ps_imbalance"]


@dataclass
class PSPlan:
    """What every process needs to build its part of a PS job (picklable)."""

    cfg: Config
    spec: FeatureSpec
    tables: list  # TableSpec
    ev_configs: dict  # table -> EVConfig
    partitioner: Any
    dense_init: np.ndarray  # (P,) the driver model's initial dense parameters
    dense_slices: list[tuple[int, int]] | None
    rounds: int  # steps per worker, over every epoch
    per_epoch: int  # rounds in one pass over the training rows
    batch_size: int
    base_row: int
    source: SourceSpec  # how each worker rebuilds the run's data source
    order: RowOrder | None = None  # the training rows' per-epoch order (data.shuffle); None: file order
    file_starts: tuple[int, ...] = ()  # first rows of the files inside the training rows (file_splits)

    @property
    def dims(self) -> dict[str, int]:
        return {t.name: t.dim for t in self.tables}

    @property
    def queue_rows(self) -> tuple[int, int]:
        """Rows [start, end) the work queue hands out (ps.data = "queue"): the whole rounds of
        one pass (capped by train.max_steps); the queue's own `workqueue.epochs` repeat it."""
        rounds = min(self.rounds, self.per_epoch)
        return self.base_row, self.base_row + rounds * self.cfg.ps.workers * self.batch_size

    @property
    def queue_splits(self) -> tuple[int, ...]:
        """Rows inside `queue_rows` where a file starts: the queue's tasks break there, so each
        task is one file's slice."""
        a, b = self.queue_rows
        return tuple(x for x in self.file_starts if a < x < b)

    def build_worker(self, index: int, transport: Transport, allreduce=None, source=None, board=None) -> PSWorker:
        """Worker `index`: a replica with the plan's initial parameters, its client and step.
        `allreduce`: its member of the workers' group (`psrec.comm`) for hybrid dense;
        `board`: the job's arrival board (`workqueue.arrivals`) for backup workers."""
        cfg, p = self.cfg, self.cfg.ps
        source = source or self.source.build()
        model, layer = build_replica(cfg, self.spec, self.tables, self.dense_init, source)
        net = parse_net(p.net) if p.net else None
        client = PSClient(transport, self.partitioner, self.dims, p.sync, net, self.dense_slices, p.staleness)
        if p.dense == "ps":
            dense: DenseUpdate = OnPS(model, client, p.workers)
        else:
            opt = make_dense_optimizer(cfg.train.optimizer, model.parameters(), cfg.train.lr)
            dense = HybridAllReduce(model, allreduce, opt, net) if p.dense == "allreduce" else DenseUpdate(opt)
        stragglers = stragglers_of(cfg, p.workers)
        backup = None
        if p.backup:  # the hook injects the slowdown before the ticket, not the step at its end
            from psrec.ps.backup import PSBackup

            dense = backup = PSBackup(model, client, board, p.workers - p.backup, stragglers, index, p.backup)
            stragglers = None
        step = TrainStep(model, layer, client, dense, index, stragglers)
        step.straggle_before_exchange = p.data == "proportional"  # a slow worker's extra time overlaps its peers'
        return PSWorker(index, p.workers, step, source, self.order, backup)

    def dense_specs(self) -> list[DenseSpec | None]:
        if self.dense_slices is None:
            return [None] * self.cfg.ps.num_ps
        t = self.cfg.train
        return [DenseSpec(self.dense_init[a:b], t.optimizer, t.lr) for a, b in self.dense_slices]


def plan_ps(cfg: Config, source=None) -> PSPlan:
    """Resolve model, tables, placement and the work split on the driver."""
    if cfg.train.pipeline != "off":
        raise ValueError(f"train.pipeline = {cfg.train.pipeline!r} is for collective runs; PS runs take \"off\"")
    mp = plan_model(cfg, source)
    source, spec, model, tables, ev_configs = mp.source, mp.spec, mp.model, mp.tables, mp.ev_configs
    p = cfg.ps
    rr = row_ranges(cfg, source)
    bs = cfg.data.batch_size
    sample = None
    if p.partitioner == "balanced":
        layer = EmbeddingLayer(source.schema, tables)
        n = min(p.partition_sample_batches, max(1, (rr.train_end - rr.train_start) // bs))
        sample = [layer.dedup(source.read(rr.train_start + i * bs, rr.train_start + (i + 1) * bs))[0][tables[0].name]
                  for i in range(n)]
    partitioner = make_partitioner(p.partitioner, p.num_ps, sample)
    dense_init = flat_params(model)
    dense_slices = slices(len(dense_init), p.num_ps) if p.dense == "ps" else None
    n_train = rr.train_end - rr.train_start
    return PSPlan(cfg, spec, tables, ev_configs, partitioner, dense_init, dense_slices,
                  count_rounds(cfg, n_train, p.workers), rounds_per_epoch(cfg, n_train, p.workers), bs,
                  rr.train_start, source.describe(), row_order(cfg, rr),
                  file_splits(source, rr.train_start, rr.train_end))


def ps_mode(cfg: Config) -> str:
    """ps-sync / ps-async, "-hybrid" when dense parameters are all-reduced."""
    p = cfg.ps
    return f"ps-{'sync' if p.sync else 'async'}" + ("-hybrid" if p.dense == "allreduce" else "")


def ps_imbalance(shard_stats: list[dict]) -> dict[str, float]:
    """max/mean over PS of rows held, bytes served and requests (1.0 = perfectly even)."""
    return {
        "rows": max_over_mean(sum(s["rows"].values()) for s in shard_stats),
        "bytes_served": max_over_mean(s["bytes_out"] for s in shard_stats),
        "requests": max_over_mean(s["requests"] for s in shard_stats),
    }


class _PSJob(Job):
    """What both PS jobs share: evaluation over the shards, shard figures, dense values, and
    their state: every shard's tables, dense slice and step counters (`PSShard.export`) and,
    when dense parameters live on the workers, worker 0's replica and optimizer (all equal)."""

    plan: PSPlan
    transport: Transport
    shard_stats: list[dict]
    queue_stats: dict | None = None

    @property
    def rounds(self) -> int:
        return self.plan.rounds

    @property
    def checkpointable(self) -> bool:
        p = self.plan.cfg.ps  # a queue's leases, the arrival board and the shares are not in the checkpoint yet
        return p.data == "interleaved" and not p.backup

    def model_spec(self):
        return self.plan.spec, self.plan.tables

    def _export_shards(self, path: Path, base: Path | None = None) -> None:
        n = self.transport.num_shards
        self.transport.call_all("export", [(str(path / "tables" / f"shard-{i}"),) if base is None else
                                           (str(path / "tables" / f"shard-{i}"), str(base / "tables" / f"shard-{i}"))
                                           for i in range(n)])

    def save_model(self, path: Path) -> int:
        from psrec.core.dense_state import save_dense

        self._export_shards(path)
        model, _ = build_replica(self.plan.cfg, self.plan.spec, self.plan.tables, self.dense(), self.eval_source)
        save_dense(path / "dense", model)
        return self.transport.num_shards

    def save_state(self, path: Path, base: Path | None = None) -> dict:
        self._export_shards(path, base)
        if self.plan.cfg.ps.dense != "ps":
            self._save_replica(path / "dense")
        return {"tables": [t.name for t in self.plan.tables], "shards": self.transport.num_shards,
                "dense": self.plan.cfg.ps.dense}

    def load_state(self, path: Path) -> None:
        n = self.transport.num_shards
        found = sorted((path / "tables").glob("shard-*"))
        if len(found) != n:
            from psrec.core.checkpoint import CheckpointError

            raise CheckpointError(f"checkpoint {path}: {len(found)} PS shards, this run has {n} (ps.num_ps)")
        self.transport.call_all("restore", [(str(path / "tables" / f"shard-{i}"),) for i in range(n)])
        if self.plan.cfg.ps.dense != "ps":
            self._load_replicas(path / "dense")

    def _save_replica(self, path: Path) -> None:
        raise NotImplementedError

    def _load_replicas(self, path: Path) -> None:
        raise NotImplementedError

    def dense(self) -> np.ndarray:
        """(P,) the trained dense parameters: from the PS slices, or worker 0's replica."""
        replies = self.transport.broadcast("pull", {}, False, True, 0, False)
        return np.concatenate([r[1] for r in replies])

    def evaluate(self, start, end, batch_size):
        """Predictions with the trained parameters, embeddings read from the PS (eval lookups count nothing)."""
        import torch

        plan = self.plan
        model, layer = build_replica(plan.cfg, plan.spec, plan.tables, self.dense(), self.eval_source)
        client = PSClient(self.transport, plan.partitioner, plan.dims, False, None, None)
        with torch.no_grad():
            return predict_range(TrainStep(model, layer, client), self.eval_source, start, end, batch_size)

    def details(self):
        return {"per_ps": self.shard_stats, "ps_imbalance": ps_imbalance(self.shard_stats),
                "workqueue": self.queue_stats}

    def publish(self, metrics: JobMetrics) -> None:
        for st in self.shard_stats:
            metrics.shard(st["shard"], st["bytes_out"], st["requests"], sum(st["rows"].values()))

    def close(self) -> None:
        self.transport.shutdown()


class InProcessPSJob(_PSJob):
    """Shards as objects, workers on threads (`ps.transport = "inprocess"`)."""

    def __init__(self, plan: PSPlan, source) -> None:
        p = plan.cfg.ps
        if p.data == "queue":
            raise ValueError("ps.data=queue needs the Ray transport (the queue is a Ray actor)")
        self.plan, self.eval_source = plan, source
        # with backup workers a step is applied once the first workers - backup pushes are in
        shards = [PSShard(i, plan.ev_configs, p.workers - p.backup, p.sync, d, p.staleness)
                  for i, d in enumerate(plan.dense_specs())]
        self.transport = InProcessTransport(shards)
        group = ThreadGroup(p.workers) if p.dense == "allreduce" else None
        board = LocalBoard() if p.backup else None
        self.shares = RoundShares(p.workers, p.workers * plan.batch_size, plan.cfg.shares) \
            if p.data == "proportional" else None
        self.workers = [plan.build_worker(w, self.transport, group and group.member(w), source, board)
                        for w in range(p.workers)]

    def train(self, bar, metrics, start=0, stop=None):
        plan = self.plan
        stop = plan.rounds if stop is None else stop
        tick = (lambda: bar.update(1)) if bar is not None else None
        if self.shares is not None:
            reports = on_threads(self.workers, lambda wk: wk.run_proportional(
                self.shares, start, stop, plan.batch_size, plan.base_row, plan.per_epoch, on_step=tick))
        else:
            reports = on_threads(self.workers, lambda wk: wk.run(start, stop, plan.batch_size, plan.base_row,
                                                                 plan.per_epoch, on_step=tick))
        if plan.cfg.ps.dense == "allreduce":
            split_peer_wait(reports)  # a hybrid worker's wait for the slowest at the all-reduce
        self.shard_stats = [to_mapping(e.stats(True)) for e in self.transport.endpoints]
        return reports

    def dense(self):
        if self.plan.cfg.ps.dense == "ps":
            return super().dense()
        return flat_params(self.workers[0].model)

    def _save_replica(self, path):
        from psrec.core.dense_state import save_dense

        w = self.workers[0]
        save_dense(path, w.model, w.step.dense.optimizer)

    def _load_replicas(self, path):
        from psrec.core.dense_state import load_dense

        for w in self.workers:
            load_dense(path, w.model, w.step.dense.optimizer)


def run_ps(cfg: Config, run_dir: Path | None = None, source=None, resume_from: Path | None = None) -> RunResult:
    """Train with parameter servers on `source` (default: the configured one), evaluate on
    the held-out rows, and write the run directory; returns the `RunResult`."""
    from psrec.data.factory import make_source

    source = source or make_source(cfg)
    plan = plan_ps(cfg, source)
    p = cfg.ps
    if run_dir is None:  # made here, not by run_job: the PS are told it (Export/Restore over gRPC stay inside)
        from psrec.runs import make_run_dir

        run_dir = make_run_dir(cfg, ps_mode(cfg))
    inside = str(Path(run_dir).resolve()), "" if resume_from is None else str(Path(resume_from).resolve().parent)

    def start() -> Job:
        if p.transport == "inprocess":
            return InProcessPSJob(plan, source)
        from psrec.ps.ray_runner import RayPSJob

        return RayPSJob(plan, source, *inside)

    layout = {"dense_params": int(len(plan.dense_init)), "num_ps": p.num_ps, "net": p.net,
              "transport": p.transport, "data": p.data}
    return run_job(cfg, ps_mode(cfg), start, source, run_dir=run_dir, total_steps=plan.rounds * p.workers,
                   metrics_port=p.metrics_port, details=layout, resume_from=resume_from)
