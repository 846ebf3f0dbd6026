"""A collective job resolved on the driver: model, tables, buckets and the work split
(picklable, handed to every rank)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from collective.config import CollectiveConfig, collective_config_for
from collective.worker import CollectiveWorker
from psrec.config import Config
from psrec.core.plan import build_replica, plan_model, stragglers_of
from psrec.core.ranges import count_rounds, file_splits, rounds_per_epoch, row_order, row_ranges
from psrec.data.shuffle import RowOrder
from psrec.data.spec import SourceSpec
from psrec.embedding.layer import TableSpec
from psrec.models.base import FeatureSpec

__all__ = ["CollectivePlan", "plan_collective"]


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
    rounds: int  # steps per rank (interleaved, over every epoch); with the queue an estimate, for progress bars
    batch_size: int
    base_row: int
    per_epoch: int  # interleaved rounds in one pass over the training rows
    source: SourceSpec  # how each rank rebuilds the run's data source
    # rows [start, end) of every work-queue epoch (collective.data = "queue"): the whole
    # training range (capped by train.max_steps), its last task shorter when task_rows does
    # not divide it; the interleaved split drops the rows short of a full round instead
    queue_rows: tuple[int, int] = (0, 0)
    order: RowOrder | None = None  # the training rows' per-epoch order (data.shuffle); None: file order
    queue_splits: tuple[int, ...] = ()  # file starts inside queue_rows: the queue's tasks break there

    def run_rounds(self, worker: CollectiveWorker, start: int, stop: int, on_step=None):
        """Train rounds [start, stop) on `worker`: its interleaved batch of each round, or with
        `collective.data = "proportional"` its speed-proportional part of the round's rows."""
        if self.coll.backup:
            from collective.backup import run_backup

            return run_backup(worker, start, stop, self.batch_size, self.base_row, self.per_epoch, on_step)
        if self.coll.data == "proportional":
            from collective.proportional import run_proportional

            return run_proportional(worker, start, stop, self.batch_size, self.base_row, self.per_epoch,
                                    self.cfg.shares, on_step)
        return worker.run(start, stop, self.batch_size, self.base_row, self.per_epoch, on_step=on_step)

    def build_worker(self, comm, source=None) -> CollectiveWorker:
        """Rank `comm.rank`'s worker: a replica with the plan's initial parameters, its shard."""
        from collective.dense_sync import BucketedDense, DenseSync
        from collective.sharded_store import ShardedStore
        from collective.sharding import make_sharding
        from psrec.core.step import TrainStep, make_dense_optimizer
        from psrec.net import parse_net

        cfg, c = self.cfg, self.coll
        source = source or self.source.build()
        model, layer = build_replica(cfg, self.spec, self.tables, self.dense_init, source)
        net = parse_net(c.net) if c.net else None
        # DenseSync scales the loss gradient by 1/N at the model's output, so the embedding
        # rows' gradients arrive pre-scaled too: their owners sum them.
        store = ShardedStore(comm, self.ev_configs, make_sharding(c.sharding, comm.world_size, self.tables),
                             average=False, net=net)
        opt = make_dense_optimizer(cfg.train.optimizer, model.parameters(), cfg.train.lr)
        stragglers = stragglers_of(cfg, c.workers)
        if c.backup:  # the hook injects the slowdown before the gradient arrives, not the step at its end
            from collective.backup import BackupDense, board_for

            dense = BackupDense(DenseSync(model, comm, c.bucket_bytes, overlap=False), opt, net, model,
                                board_for(comm), c.workers - c.backup, stragglers, comm.rank)
            stragglers = None
        else:
            dense = BucketedDense(DenseSync(model, comm, c.bucket_bytes, c.overlap), opt, net)
        store.timeout_s = c.timeout_s
        if cfg.train.pipeline != "off":
            store.enable_prefetch(comm.side(), rows=cfg.train.pipeline == "stale1")
        step = TrainStep(model, layer, store, dense, comm.rank, stragglers)
        step.straggle_before_exchange = c.data == "proportional"  # a slow rank's extra time overlaps its peers'
        return CollectiveWorker(comm.rank, comm.world_size, step, source, self.order, self.per_epoch,
                                pipeline=cfg.train.pipeline, timeout_s=c.timeout_s)


def plan_collective(cfg: Config, coll: CollectiveConfig | None = None, source=None) -> CollectivePlan:
    """Resolve model, tables and the work split on the driver (seeded like `build_local`)."""
    from psrec.core.flat import flat_params

    coll = coll or collective_config_for(cfg)
    if cfg.train.pipeline != "off" and (coll.data != "interleaved" or coll.backup):
        raise ValueError(f"train.pipeline = {cfg.train.pipeline!r} needs collective.data = \"interleaved\" "
                         f"without backup ranks (got data {coll.data!r}, backup {coll.backup})")
    mp = plan_model(cfg, source)
    source, spec, model, tables, ev_configs = mp.source, mp.spec, mp.model, mp.tables, mp.ev_configs
    rr = row_ranges(cfg, source)
    bs = cfg.data.batch_size
    numels = [p.numel() for p in model.parameters() if p.requires_grad]
    queue_rows = (0, 0)
    if coll.data == "queue":
        end = rr.train_end
        if cfg.train.max_steps:
            end = min(end, rr.train_start + cfg.train.max_steps * coll.workers * bs)
        queue_rows = (rr.train_start, end)
        # Every rank trains a batch a step while tasks last: about rows x epochs / (N x batch).
        rounds = max(1, -(-(end - rr.train_start) * cfg.workqueue.epochs // (coll.workers * bs)))
        per_epoch = rounds
    else:
        rounds = count_rounds(cfg, rr.train_end - rr.train_start, coll.workers)
        per_epoch = rounds_per_epoch(cfg, rr.train_end - rr.train_start, coll.workers)
    if cfg.stragglers.factors:
        from workqueue.stragglers import Stragglers

        Stragglers(cfg.stragglers, coll.workers)  # a rank out of range fails here, on the driver
    return CollectivePlan(cfg, coll, spec, tables, ev_configs, flat_params(model), numels, rounds, bs,
                          rr.train_start, per_epoch, source.describe(), queue_rows, row_order(cfg, rr),
                          file_splits(source, *queue_rows))
