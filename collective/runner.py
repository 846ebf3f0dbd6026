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
for us is ten lines (`psrec.comm.collectives.init_torch_group`).

The run goes through the one skeleton (`psrec.core.job.run_job`), so its `RunResult` has
every mode's fields (docs/results.md), plus the collective's own: per-rank shard statistics
(`per_shard`, `shard_imbalance`) in place of per-PS ones, the layout (sharding, buckets,
overlap, backend). Start-up (actors, the group) is timed apart (`startup_seconds`).
"""
from __future__ import annotations

from pathlib import Path

from collective.config import CollectiveConfig, collective_config_for
from collective.dense_sync import plan_buckets
from collective.jobs import CollectiveJob, InProcessJob, RayJob, start_job
from collective.plan import CollectivePlan, plan_collective
from psrec.config import Config
from psrec.core.job import run_job
from psrec.core.result import RunResult
from psrec.data.factory import make_source

__all__ = ["CollectivePlan", "plan_collective", "run_collective", "start_job", "CollectiveJob", "InProcessJob",
           "RayJob"]


def run_collective(cfg: Config, run_dir: Path | None = None, source=None,
                   coll: CollectiveConfig | None = None, resume_from: Path | None = None) -> RunResult:
    """Train with sharded embeddings (all-to-all) and all-reduced dense parameters, evaluate on
    the held-out rows, write results.json and metrics.prom into the run directory.

    Args:
        cfg: the run's configuration (data, model, embedding, train sections).
        run_dir: where to write (default: a new `<run.dir>/<time>-collective-<model>`).
        source: the data source (default: built from `cfg`); every rank trains its rows.
        coll: the collective layout (default: `cfg.collective` when the Config has that
            section, else the shared settings of `cfg.ps`; see `collective_config_for`).
        resume_from: a checkpoint to continue from (`psrec.core.checkpoint`).
    """
    coll = coll or collective_config_for(cfg)
    source = source or make_source(cfg)
    plan = plan_collective(cfg, coll, source)
    layout = {"sharding": coll.sharding, "bucket_bytes": coll.bucket_bytes, "overlap": coll.overlap,
              "transport": coll.transport, "dense_params": int(len(plan.dense_init)),
              "dense_buckets": len(plan_buckets(plan.param_numels, coll.bucket_bytes)), "net": coll.net,
              "data": coll.data}
    return run_job(cfg, "collective", lambda: start_job(plan, source), source, run_dir=run_dir,
                   total_steps=plan.rounds * coll.workers, metrics_port=coll.metrics_port, details=layout,
                   resume_from=resume_from)
