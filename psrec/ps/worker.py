"""A PS training worker: the one training step (`psrec.core.step.TrainStep`) over a PS client.

Plain Python: in-process runs put workers on threads; `psrec.ps.ray_runner` wraps the same
class in a Ray actor. Its rows come interleaved (`run`: worker w trains batch w of every
round, epoch after epoch) or as row-range tasks from the work queue (`run_tasks`).
"""
from __future__ import annotations

import time

from psrec.core.ranges import epoch_of, rows_of
from psrec.core.report import WorkerReport
from psrec.core.step import TrainStep
from psrec.data.base import DataSource
from psrec.data.shuffle import RowOrder

__all__ = ["PSWorker"]


class PSWorker:
    """One worker's training step and report.

    Args:
        index, num_workers: this worker and how many there are.
        step: the worker's TrainStep (its store is a `PSClient`; its dense hook says where
            dense parameters live: `psrec.ps.dense`).
        source: where rows come from.
        order: the training rows' per-epoch order (`data.shuffle`); None: file order.
        backup: the step's backup-workers hook (`psrec.ps.backup.PSBackup`), whose outcome
            each step's record takes (dropped rows, applied, slowdown); None: no backups.
    """

    def __init__(self, index: int, num_workers: int, step: TrainStep, source: DataSource,
                 order: RowOrder | None = None, backup=None) -> None:
        self.index = index
        self.backup = backup
        self.num_workers = num_workers
        self.step = step
        self.source = source
        self.order = order
        self.report = WorkerReport(index)

    @property
    def model(self):
        return self.step.model

    def train_rows(self, start: int, end: int, round_: int, epoch: int = 0, order: RowOrder | None = None,
                   weight: float | None = None) -> float:
        """One step on rows [start, end) of `epoch` in `order` (default: the worker's).
        `round_` is the global step in sync mode; `weight` this worker's share of the step's
        rows (speed-proportional shares; None: equal shares)."""
        order = order if order is not None else self.order
        src = order.view(self.source, epoch) if order is not None else self.source
        loss, rec = self.step.train_rows(src, start, end, round_, weight)
        if self.backup is not None:
            out = self.backup.last
            rec.dropped_rows, rec.applied, rec.straggler = out["dropped_rows"], out["applied"], out["straggler"]
        self.report.add(rec, loss)
        return loss

    def run_tasks(self, take, batch_size: int) -> WorkerReport:
        """Train on row-range tasks from a work queue until it is finished.

        take(done_task) -> (next task or None, finished): reports the previous task done and
        takes the next in one call.
        """
        self.step.t_origin = time.perf_counter()
        task, finished = take(None)
        while not finished or task is not None:
            if task is None:
                time.sleep(0.01)  # others hold the last leases; they may still be re-queued
            else:
                # shuffled: the task's own rows in a per-epoch block order (they stay in its file slice)
                order = self.order.within(task.start, task.end, task.index) if self.order is not None else None
                for s in range(task.start, task.end, batch_size):
                    self.train_rows(s, min(s + batch_size, task.end), 0, task.epoch, order)
                self.report.tasks += 1
            task, finished = take(task)
        return self.report

    def run_proportional(self, shares, start: int, stop: int, batch_size: int, base: int, per_epoch: int,
                         on_step=None) -> WorkerReport:
        """Train rounds [start, stop) on this worker's speed-proportional part of each round's
        N x batch_size rows, as the job's coordinator cuts it (`shares.take`:
        `workqueue.round_shares`), reporting each step's rows and busy seconds back to it;
        the step's gradients are weighted by part / round rows (`OnPS`).

        Busy is the step less its barrier wait: a PS worker's pull and push are its own calls,
        not a rendezvous, and grow with a small share's fixed costs like its compute does (a
        4x straggler at a fifth of the rows measured 17.8 ms of pull + push against 12.9 ms
        for its peers; counting compute alone left it the last to push)."""
        if start == 0 or not self.report.steps:
            self.step.t_origin = time.perf_counter()
        total = self.num_workers * batch_size
        last_rows, last_busy = 0.0, 0.0
        for r in range(start, stop):
            a, b = shares.take(r, self.index, last_rows, last_busy)
            first = base + (r % per_epoch) * total
            self.train_rows(first + a, first + b, r + 1, epoch_of(r, per_epoch), weight=(b - a) / total)
            rec = self.report.steps[-1]
            last_rows, last_busy = float(rec.rows), rec.total - rec.seconds["wait"]
            if on_step is not None:
                on_step()
        return self.report

    def run(self, start: int, stop: int, batch_size: int, base: int, per_epoch: int, on_step=None) -> WorkerReport:
        """Train rounds [start, stop) (global steps start+1..stop) on this worker's interleaved rows."""
        if start == 0 or not self.report.steps:
            self.step.t_origin = time.perf_counter()
            if self.backup is not None:  # its slowdown is injected there: one clock for the straggler model
                self.backup.tickets.t_origin = self.step.t_origin
        for r in range(start, stop):
            self.train_rows(*rows_of(r, self.index, self.num_workers, batch_size, base, per_epoch), r + 1,
                            epoch_of(r, per_epoch))
            if on_step is not None:
                on_step()
        return self.report
