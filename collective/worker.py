"""A collective training worker (one rank): the one training step (`psrec.core.step`) over
the rank's sharded store and bucketed dense sync, in lockstep with the other ranks.

Plain Python: the in-process runner puts ranks on threads, `collective.jobs` wraps the same
class in a Ray actor. A step's phases, all ranks in lockstep:

    data       read this rank's rows
    wait       the step's first rendezvous (the size all-to-all): time a rank waits for the
               slowest peer to arrive, plus a few bytes; after the run, also its wait at the
               all-reduce for the slowest rank's backward (`psrec.core.lockstep`)
    alltoall   keys out, rows back, gradients out (packing included)
    lookup     EV lookups of the keys this rank owns, for every rank
    compute    dedup, assemble, forward, backward (into the dense gradient buckets)
    allreduce  the exposed part of the dense all-reduce (total and hidden reported apart),
               less that wait for the slowest rank
    apply      dense optimizer step, EV apply of the gradients this rank owns

The phases sum to the step's wall time. Bytes and messages come from the rank's CommLog;
with a network model each step also books, separately from the real time, what its
collectives would have waited on that network: each call replayed on one serial link whose
wire time overlaps the call itself and, for a bucket launched during backward, the work
before its wait (`psrec.comm.nic`).

Rows come either interleaved (`run`: rank r trains batch r of every round) or from the work
queue (`run_tasks`): then each step starts with a small "control" all-reduce of (rows this
rank trains, work left?) that is the step's first rendezvous (booked as `wait`, with the
take round trip to the queue booked as `data`); a rank without rows runs an empty step so
that every collective still matches, and the ranks stop together when none has rows and
the queue is finished.

Pipelined (`train.pipeline`, interleaved rows): once a step's rows are in, the prefetch
thread reads the next batch, dedups it and sends its keys (stale1: fetches its rows too) on
the store's side group; the next step waits only for what is still in flight (booked as
`alltoall`; the rest is `StepRecord.prefetch_hidden`), and on an emulated network the side
exchanges' wire time is charged only where it exceeds the compute it flew behind.

Straggler injection (`workqueue.stragglers`, the PS workers' model, in the one step): after
a step's real work the rank sleeps the extra time its slowdown gives that step's compute,
booked as `compute` (and apart as `StepRecord.straggler`). Its peers then wait for it at the next
step's first rendezvous, which is where `wait` is measured; in lockstep a delay anywhere in
a step delays every rank by the same amount, so where it falls does not change the makespan.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch

from collective.sharded_store import wait_for
from psrec.core.ranges import epoch_of, rows_of
from psrec.core.report import WorkerReport
from psrec.core.step import TrainStep
from psrec.data.base import DataSource
from psrec.data.shuffle import RowOrder

__all__ = ["CollectiveWorker"]


class CollectiveWorker:
    """One rank: its training step (a replica, its shard of the tables, the dense sync) and report.

    Args:
        rank, world_size: this rank and how many there are.
        step: the rank's TrainStep; its store is the `ShardedStore` over this rank's
            collectives, its dense hook a `collective.dense_sync.BucketedDense`.
        source: where rows come from.
        order, per_epoch: the training rows' per-epoch order (`data.shuffle`; None: file
            order) and the rounds of an epoch: global step s reads epoch (s - 1) // per_epoch.
    """

    def __init__(self, rank: int, world_size: int, step: TrainStep, source: DataSource,
                 order: RowOrder | None = None, per_epoch: int = 1, pipeline: str = "off",
                 timeout_s: float = 300.0) -> None:
        self.rank = rank
        self.world_size = world_size
        self.step = step
        self.store = step.store
        self.source = source
        self.order, self.per_epoch = order, max(1, per_epoch)
        self.report = WorkerReport(rank)
        self.pipeline, self.timeout_s = pipeline, timeout_s  # train.pipeline; deadline of its waits
        self._pool: ThreadPoolExecutor | None = None  # the prefetch's thread (a pipelined run)

    @property
    def model(self):
        return self.step.model

    @property
    def layer(self):
        return self.step.layer

    @property
    def dense(self):
        return self.step.dense.sync

    def train_rows(self, start: int, end: int, step: int, weight: float | None = None,
                   before: dict[str, float] | None = None, task: tuple[int, int] | None = None,
                   order: RowOrder | None = None, epoch: int | None = None) -> float | None:
        """One step on rows [start, end) (none when start == end) as global step `step`;
        returns the batch's mean loss (None for an empty step).

        `weight`: this rank's share of the step's rows when ranks train unequal numbers of
        rows (None: N equal batches, the dense sync's 1/N); `before`: seconds already spent
        on the step (the take round trip as "data", the control all-reduce as "wait");
        `order`, `epoch`: whose order and which epoch (default: the rank's, the step's)."""
        order = order if order is not None else self.order
        src = self.source
        if order is not None:
            src = order.view(src, epoch if epoch is not None else epoch_of(step - 1, self.per_epoch))
        loss, rec = self.step.train_rows(src, start, end, step, weight, before)
        rec.task = task
        self.report.add(rec, loss)
        return loss

    def _begin_step(self) -> None:
        """Fresh per-step counters: store seconds and the comm log."""
        self.store.take_seconds()
        self.store.comm.log.take()

    def run(self, first: int, stop: int, batch_size: int, base: int, per_epoch: int,
            on_step: Callable[[], None] | None = None) -> WorkerReport:
        """Train rounds [first, stop) on this rank's interleaved rows, epoch after epoch; global
        step = round + 1. `on_step` is called after every step (progress bars)."""
        t_run = time.perf_counter()
        if first == 0 or not self.report.steps:
            self.step.t_origin = t_run
        def rows(r: int) -> tuple[int, int]:
            return rows_of(r, self.rank, self.world_size, batch_size, base, per_epoch)

        ahead = None
        try:
            for r in range(first, stop):
                if self.pipeline == "off":
                    self.train_rows(*rows(r), r + 1)
                else:
                    ahead = self._train_pipelined(r, rows(r), rows(r + 1) if r + 1 < stop else None, ahead)
                if on_step is not None:
                    on_step()
        finally:
            self.step.after_rows = None
            self.store.in_flight = None
        self.report.run_seconds += time.perf_counter() - t_run
        return self.report

    def _source_for(self, step: int) -> DataSource:
        """The source as global step `step` reads it (its epoch's row order, when shuffled)."""
        if self.order is None:
            return self.source
        return self.order.view(self.source, epoch_of(step - 1, self.per_epoch))

    def _train_pipelined(self, r: int, span: tuple[int, int], next_span: tuple[int, int] | None,
                         ahead: Future | None) -> Future | None:
        """Round r's step, its lookup begun during the previous step (`ahead`: the future of
        (batch, dedup, Prefetched)), and round r + 1's begun during this one's compute (the
        next `ahead`, returned). The first step of a segment has nothing ahead: plain."""
        step_no = r + 1
        t0 = time.perf_counter()
        pre = dedup = None
        if ahead is None:
            batch = self._source_for(step_no).read(*span) if span[1] > span[0] else None
            before = {"data": time.perf_counter() - t0}
        else:
            batch, dedup, pre = wait_for(ahead, self.timeout_s, f"rank {self.rank}: step {step_no}'s prefetch")
            before = {"alltoall": time.perf_counter() - t0}  # the exposed part of the key exchange
            if pre is not None:
                self.store.use(pre)
        nxt: list[Future] = []
        if next_span is not None:
            def launch() -> None:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"prefetch-{self.rank}")
                fut = self._pool.submit(self._prefetch, step_no + 1, next_span)
                self.store.in_flight = fut
                nxt.append(fut)

            self.step.after_rows = launch
        else:
            self.step.after_rows = None
        loss, rec = self.step.train_batch(batch, step_no, None, before, span=span, dedup=dedup)
        if pre is not None:
            rec.prefetch_total = pre.seconds
            rec.prefetch_hidden = max(0.0, pre.seconds - before["alltoall"])
            emulated = pre.traffic.emulated
            # the exchanges flew during the previous step's compute: on an emulated network the
            # wire time that fits in it is hidden, the rest exposed
            window = self.report.steps[-1].seconds["compute"] if self.report.steps else 0.0
            rec.traffic += pre.traffic
            rec.traffic.emulated -= min(emulated, window)
        self.report.add(rec, loss)
        return nxt[0] if nxt else None

    def _prefetch(self, step_no: int, span: tuple[int, int]):
        """On the prefetch thread: read, dedup and send the keys of global step `step_no`'s rows
        (and fetch them, stale). Every rank prefetches every step, an empty one too, so the
        side group's collectives stay matched."""
        batch = self._source_for(step_no).read(*span) if span[1] > span[0] else None
        if batch is not None and len(batch):
            dedup = self.layer.dedup(batch)
            return batch, dedup, self.store.prefetch(dedup[0])
        return batch, None, self.store.prefetch({})

    def run_tasks(self, take: Callable[[object | None], tuple[object | None, bool]], batch_size: int,
                  first_step: int = 1, poll_interval_s: float = 0.01,
                  on_step: Callable[[], None] | None = None) -> WorkerReport:
        """Train on row-range tasks from a work queue, in lockstep with the other ranks.

        Args:
            take: `take(done) -> (task or None, finished)`: reports `done` (a used-up task, or
                None) and takes the next in one call (`WorkQueue`'s `complete_and_take`). A
                task has `start`, `end` (rows), `epoch` and `index`.
            batch_size: rows per step at most; a task's last batch may be shorter (a batch
                never spans two tasks, so a task is done when its last step is applied).
            first_step: global step of the first step (EV versions).
            poll_interval_s: seconds to wait before asking again when no rank has rows but
                the queue is not finished (leases held elsewhere may come back).
            on_step: called after every step (progress bars).

        Every round, on every rank: (1) a rank whose task is used up reports it and takes the
        next; (2) all ranks all-reduce `(rows I train now, 1 if my queue answer said work is
        left)`; (3) if the summed rows R > 0 every rank runs one step, a rank with no task an
        empty one, each weighting its loss by its rows / R; if R = 0 they stop together when
        no rank was told work is left, else poll again. Every collective of a step is issued
        by all ranks, so the group never deadlocks whoever runs out first, and the decision
        to stop is taken on one all-reduced value, so all ranks take it at the same round.
        """
        comm = self.store.comm
        t_run = time.perf_counter()
        self.step.t_origin = t_run
        task, pos, step = None, 0, first_step
        while True:
            self._begin_step()
            t0 = time.perf_counter()
            if task is None or pos >= task.end:
                done = task
                task, finished = take(done)
                if done is not None:
                    self.report.tasks += 1
                pos = task.start if task is not None else 0
            start, end = (pos, min(pos + batch_size, task.end)) if task is not None else (0, 0)
            t_take = time.perf_counter() - t0
            t0 = time.perf_counter()
            flag = torch.tensor([end - start, 0 if finished or task is not None else 1], dtype=torch.int64)
            comm.all_reduce(flag, tag="control")  # the step's first rendezvous: wait for the slowest rank
            t_control = time.perf_counter() - t0
            total, unfinished = (int(v) for v in flag.tolist())
            if total == 0:
                self.report.end_wait += t_control
                if unfinished == 0:
                    break
                time.sleep(poll_interval_s)
                continue
            # shuffled: a task's own rows in a per-epoch block order (they stay in its file slice)
            order = (self.order.within(task.start, task.end, task.index)
                     if task is not None and self.order is not None else None)
            self.train_rows(start, end, step, (end - start) / total, {"data": t_take, "wait": t_control},
                            (task.epoch, task.index) if task is not None else None, order,
                            task.epoch if task is not None else 0)
            pos, step = end, step + 1
            if on_step is not None:
                on_step()
        self.report.run_seconds = time.perf_counter() - t_run
        return self.report

    def evaluate(self, start: int, end: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """(labels, click probabilities) of this rank's share of rows [start, end).

        Batches are dealt round-robin; every rank takes part in every lookup round (a rank
        with no batch left asks for nothing), since the shards answer only together.
        """
        bounds = list(range(start, end, batch_size))
        mine = bounds[self.rank::self.world_size]
        rounds = -(-len(bounds) // self.world_size)
        ys, ps = [], []
        with torch.no_grad():
            for i in range(rounds):
                if i < len(mine):
                    b = self.source.read(mine[i], min(mine[i] + batch_size, end))
                    ps.append(self.step.predict(b))
                    ys.append(b.labels)
                else:
                    self.store.lookup_many({}, train=False)
        self.store.take_seconds()
        self.store.comm.log.take()
        cat = (lambda a, dt: np.concatenate(a) if a else np.zeros(0, dt))
        return cat(ys, np.float32), cat(ps, np.float64)
