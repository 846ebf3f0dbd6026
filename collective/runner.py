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
import time
from pathlib import Path
from typing import Any

import numpy as np

from collective.config import CollectiveConfig, collective_config_for
from collective.dense_sync import plan_buckets
from collective.jobs import CollectiveJob, InProcessJob, RayJob, start_job
from collective.lockstep import split_peer_wait
from collective.plan import CollectivePlan, plan_collective
from collective.worker import COMM_PHASES, PHASES
from psrec.config import Config
from psrec.data.factory import make_source
from psrec.metrics.auc import auc, logloss
from psrec.metrics.prom import JobMetrics
from psrec.runs import make_run_dir, write_results
from psrec.train.local import row_ranges
from psrec.train.progress import progress_bar

__all__ = ["CollectivePlan", "plan_collective", "run_collective", "aggregate_collective", "start_job",
           "CollectiveJob", "InProcessJob", "RayJob"]


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
        "bytes_per_step_by_kind": tags,  # sizes, keys, rows, grads, dense (+ control with the queue)
        "messages_per_step": float(sum(s["messages"] for s in live) / steps),
        "alltoall_seconds": phases["alltoall"],
        "allreduce_total_seconds": float(sum(s["allreduce_total_seconds"] for s in live)),
        "allreduce_exposed_seconds": phases["allreduce"],
        "allreduce_hidden_seconds": float(sum(s["allreduce_hidden_seconds"] for s in live)),
        "emulated_net_seconds": float(emu),
        # seconds a rank waited for the slowest (lockstep): at the steps' first rendezvous, and
        # at the all-reduce for the slowest backward (peer_wait_seconds: collective.lockstep)
        "sync_wait_seconds": float(sum(s["sync_wait_seconds"] for s in live)),
        "peer_wait_seconds": float(sum(s.get("peer_wait_seconds", 0.0) for s in live)),
        "idle_steps": int(sum(s["idle_steps"] for s in live)),
    }


# ------------------------------------------------------------------------------ run
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
    split_peer_wait(reports)  # a rank's wait for the slowest backward is lockstep wait, not all-reduce
    summaries = [r.summary() for r in reports]
    try:
        for s in summaries:
            if s.get("steps"):
                prom.worker(s["worker"], s["phases"], s["rows"], s["bytes_sent"], s["bytes_received"])
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
        "steps": max((s.get("steps", 0) for s in summaries), default=0),  # the same on every rank: lockstep
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
        "data": coll.data,
        **aggregate_collective(summaries),
        "per_worker": summaries,
        "per_shard": shards,
        "shard_imbalance": {
            "rows": _imbalance(sum(s["rows"].values()) for s in shards),
            "bytes_served": _imbalance(s["bytes_served"] for s in shards),
            "keys_served": _imbalance(s["keys_served"] for s in shards),
        },
        "metrics_port": prom.port,
        "workqueue": job.queue_stats,  # accounting and counters of the queue (collective.data = "queue")
        "run_dir": str(run_dir),
    }
    write_results(run_dir, results)
    (run_dir / "metrics.prom").write_text(scrape)  # the final scrape, for offline reading
    return results


def _gauge(prom: JobMetrics, name: str, doc: str, label: str = "worker"):
    from prometheus_client import Gauge

    return Gauge(name, doc, [label], registry=prom.registry)

