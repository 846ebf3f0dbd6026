"""Parameter-server training end to end: start shards and workers, train, evaluate, report.

`run_ps(cfg)` runs on Ray (PS and workers are actors; a local Ray starts unless
`ps.address` names a cluster) or in process (`ps.transport = "inprocess"`: shards are
objects, workers are threads; for tests and debugging). Both run the same PSShard,
PSClient and PSWorker code.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from psrec.config import Config
from psrec.config_io import to_mapping
from psrec.data.factory import make_source
from psrec.embedding.layer import EmbeddingLayer
from psrec.metrics.auc import auc, logloss
from psrec.metrics.prom import JobMetrics
from psrec.models.base import FeatureSpec
from psrec.net import parse_net
from psrec.ps.client import PSClient
from psrec.ps.dense import ThreadAllReduce, flat_params, set_flat_params, slices
from psrec.ps.partition import make_partitioner
from psrec.ps.shard import DenseSpec, PSShard
from psrec.ps.transport import InProcessTransport, Transport
from psrec.ps.worker import PHASES, PSWorker, WorkerReport
from psrec.runs import make_run_dir, write_results
from psrec.threads import on_threads
from psrec.train.local import row_ranges
from psrec.train.plan import count_rounds, plan_model
from psrec.train.progress import progress_bar

__all__ = ["PSPlan", "plan_ps", "run_ps", "aggregate_reports"]


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
    rounds: int
    batch_size: int
    base_row: int

    @property
    def dims(self) -> dict[str, int]:
        return {t.name: t.dim for t in self.tables}

    def build_worker_parts(self, source=None):
        """A model replica with the plan's initial parameters, its embedding layer, a source."""
        import torch

        torch.manual_seed(self.cfg.train.seed)
        source = source or make_source(self.cfg)
        model = self.cfg.build_model(self.spec)
        set_flat_params(model, self.dense_init)
        return model, EmbeddingLayer(source.schema, self.tables, self.cfg.embedding.pooling), source

    def stragglers(self):
        """The configured straggler model ([stragglers]), or None when nobody is slowed."""
        sc = self.cfg.stragglers
        if not (sc.factors or sc.dist != "none" or sc.period_rate_per_s > 0):
            return None
        from workqueue.stragglers import Stragglers

        return Stragglers(sc, self.cfg.ps.workers)

    def dense_specs(self) -> list[DenseSpec | None]:
        if self.dense_slices is None:
            return [None] * self.cfg.ps.num_ps
        t = self.cfg.train
        return [DenseSpec(self.dense_init[a:b], t.optimizer, t.lr) for a, b in self.dense_slices]


def plan_ps(cfg: Config, source=None) -> PSPlan:
    """Resolve model, tables, placement and the work split on the driver."""
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
    rounds = count_rounds(cfg, rr.train_end - rr.train_start, p.workers)
    return PSPlan(cfg, spec, tables, ev_configs, partitioner, dense_init, dense_slices, rounds, bs, rr.train_start)


def aggregate_reports(summaries: list[dict]) -> dict[str, Any]:
    """Job-level figures from per-worker summaries."""
    live = [s for s in summaries if s.get("steps")]
    phases = {p: float(sum(s["phases"][p] for s in live)) for p in PHASES}
    wall = sum(phases.values())
    comm = phases["pull"] + phases["push"] + phases["allreduce"]
    emu = sum(s["emulated_net_seconds"] for s in live)
    return {
        "phases": phases,  # seconds summed over workers
        "comm_fraction": comm / wall if wall else float("nan"),
        "wait_fraction": phases["wait"] / wall if wall else float("nan"),
        "emulated_comm_fraction": (comm + emu) / (wall + emu) if wall else float("nan"),
        "step_p50": float(np.median([s["step_p50"] for s in live])) if live else float("nan"),
        "step_p95": float(max(s["step_p95"] for s in live)) if live else float("nan"),
        "bytes_per_step": float(sum(s["bytes_sent"] + s["bytes_received"] for s in live)
                                / max(1, sum(s["steps"] for s in live))),
    }


# ------------------------------------------------------------------------------ in process
def _run_inprocess(plan: PSPlan, source, bar) -> tuple[list[WorkerReport], Transport, list[PSWorker]]:
    cfg, p = plan.cfg, plan.cfg.ps
    shards = [PSShard(i, plan.ev_configs, p.workers, p.sync, d) for i, d in enumerate(plan.dense_specs())]
    transport = InProcessTransport(shards)
    net = parse_net(p.net) if p.net else None
    group = ThreadAllReduce(p.workers) if p.dense == "allreduce" else None
    workers = []
    for w in range(p.workers):
        model, layer, src = plan.build_worker_parts(source)
        client = PSClient(transport, plan.partitioner, plan.dims, p.sync, net, plan.dense_slices)
        workers.append(PSWorker(w, p.workers, model, layer, client, src, p.dense,
                                cfg.train.optimizer, cfg.train.lr, group, plan.stragglers()))

    def run(wk: PSWorker) -> None:
        for r in range(plan.rounds):
            wk.train_rows(*wk.rows_of(r, plan.batch_size, plan.base_row), r + 1)
            bar.update(1)

    on_threads(workers, run)
    return [w.report for w in workers], transport, workers


def _evaluate(plan: PSPlan, transport: Transport, source, dense_values: np.ndarray) -> dict[str, float]:
    """AUC/logloss on held-out rows, reading embeddings from the PS (eval lookups count nothing)."""
    import torch

    from psrec.train.step import SparseStep

    cfg = plan.cfg
    model, layer, _ = plan.build_worker_parts(source)
    set_flat_params(model, dense_values)
    client = PSClient(transport, plan.partitioner, plan.dims, False, None, None)
    step = SparseStep(model, layer, client, None)
    rr = row_ranges(cfg, source)
    ys, ps = [], []
    with torch.no_grad():
        for b in source.batches(rr.eval_start, rr.eval_end, max(cfg.data.batch_size, 4096)):
            ps.append(step.predict(b))
            ys.append(b.labels)
    y, pr = np.concatenate(ys), np.concatenate(ps)
    return {"auc": auc(y, pr), "logloss": logloss(y, pr), "eval_rows": int(len(y))}


def _dense_from_ps(transport: Transport, plan: PSPlan) -> np.ndarray:
    replies = transport.broadcast("pull", {}, False, True, 0, False)
    return np.concatenate([r[1] for r in replies])


def run_ps(cfg: Config, run_dir: Path | None = None, source=None) -> dict[str, Any]:
    """Train with parameter servers, evaluate, and write results.json."""
    source = source or make_source(cfg)
    plan = plan_ps(cfg, source)
    p = cfg.ps
    mode = f"ps-{'sync' if p.sync else 'async'}" + ("-hybrid" if p.dense == "allreduce" else "")
    run_dir = run_dir or make_run_dir(cfg, mode)
    total = plan.rounds * p.workers
    prom = JobMetrics(p.metrics_port)
    if prom.port is not None:
        print(f"prometheus metrics: http://127.0.0.1:{prom.port}/metrics", file=sys.stderr)
    t0 = time.perf_counter()
    try:
        with progress_bar(total, cfg.train.progress, desc=mode) as bar:
            queue_stats = None
            if p.transport == "inprocess":
                if p.data == "queue":
                    raise ValueError("ps.data=queue needs the Ray transport (the queue is a Ray actor)")
                reports, transport, workers = _run_inprocess(plan, source, bar)
                dense = (_dense_from_ps(transport, plan) if p.dense == "ps" else flat_params(workers[0].model))
                shard_stats = [to_mapping(e.stats(True)) for e in transport.endpoints]
            else:
                from psrec.ps.ray_runner import run_on_ray

                reports, transport, dense, shard_stats, queue_stats = run_on_ray(plan, bar, prom)
        wall = time.perf_counter() - t0
        for r in reports:
            s = r.summary()
            if s.get("steps"):
                prom.worker(r.worker, s["phases"], s["rows"], s["bytes_sent"], s["bytes_received"])
        for st in shard_stats:
            prom.shard(st["shard"], st["bytes_out"], st["requests"], sum(st["rows"].values()))
        scrape = prom.scrape()
    finally:
        prom.close()
    try:
        metrics = _evaluate(plan, transport, source, dense)
    finally:
        transport.shutdown()
    summaries = [r.summary() for r in reports]
    rows = sum(s.get("rows", 0) for s in summaries)
    # Training time: the slowest worker's summed step time (excludes starting Ray and actors).
    train_s = max((sum(s["phases"].values()) for s in summaries if s.get("steps")), default=float("nan"))
    results = {
        "mode": mode,
        "model": cfg.model.name,
        **metrics,
        "samples_per_s": rows / train_s if train_s else float("nan"),
        "train_seconds": train_s,
        "job_seconds": wall,  # including start-up
        "train_rows": rows,
        "steps": plan.rounds,
        "batch_size": plan.batch_size,  # rows per worker step
        "dense_params": int(len(plan.dense_init)),
        "workers": p.workers,
        "num_ps": p.num_ps,
        "net": p.net,
        **aggregate_reports(summaries),
        "per_worker": summaries,
        "per_ps": shard_stats,
        "ps_imbalance": _imbalance(shard_stats),
        "metrics_port": prom.port,
        "workqueue": queue_stats,
        "run_dir": str(run_dir),
    }
    write_results(run_dir, results)
    (Path(run_dir) / "metrics.prom").write_text(scrape)  # the final scrape, for offline reading
    return results


def _imbalance(shard_stats: list[dict]) -> dict[str, float]:
    """max/mean over PS of rows held, bytes served and requests (1.0 = perfectly even)."""
    def ratio(values):
        v = np.asarray(values, dtype=np.float64)
        return float(v.max() / v.mean()) if v.size and v.mean() > 0 else float("nan")

    return {
        "rows": ratio([sum(s["rows"].values()) for s in shard_stats]),
        "bytes_served": ratio([s["bytes_out"] for s in shard_stats]),
        "requests": ratio([s["requests"] for s in shard_stats]),
    }
