"""A PS training worker: pull, compute, push, with every second of a step accounted for.

Plain Python: in-process runs put workers on threads; `psrec.ps.runner` wraps the same class
in a Ray actor. A step:

    data      read the worker's rows
    pull      sparse rows (+ dense slices when dense lives on the PS) from every shard at once
    wait      sync mode: time a shard held the pull until the previous step was applied
    compute   forward and backward
    allreduce hybrid mode: average dense gradients across workers, apply locally
    push      sparse gradients (+ dense gradient slices) to every shard at once
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from psrec.data.base import DataSource
from psrec.embedding.layer import EmbeddingLayer
from psrec.metrics.steps import PhaseSeconds, WorkerSteps, summarize_steps
from psrec.metrics.timers import PhaseTimer
from psrec.models.base import CTRModel
from psrec.ps.client import PSClient
from psrec.ps.dense import AllReduce, flat_grads, set_flat_grads, set_flat_params
from psrec.train.step import SparseStep, make_dense_optimizer, sparse_grads

__all__ = ["PSWorker", "StepRecord", "WorkerReport", "PHASES"]

PHASES = ("data", "pull", "wait", "compute", "allreduce", "push")


@dataclass
class StepRecord(PhaseSeconds):
    """Seconds per phase of one step, plus bytes and emulated network seconds."""

    step: int
    seconds: dict[str, float]
    emulated: float
    bytes_sent: int
    bytes_received: int
    rows: int
    # The pull's share of the traffic (both directions; the rest is the push), for calibration.
    pull_bytes: int = 0
    pull_messages: int = 0
    push_messages: int = 0


@dataclass
class WorkerReport(WorkerSteps):
    """Everything one worker measured (`steps`: StepRecords)."""

    def summary(self) -> dict:
        """Per-phase totals, step-time percentiles and communication fraction (real and emulated)."""
        out = summarize_steps(self.worker, self.steps, PHASES, ("pull", "push", "allreduce"), self.loss_ema)
        if self.steps:
            out["tasks"] = self.tasks
            # Totals over the steps, pull and push apart (`psrec calibrate` fits alpha-beta per phase).
            pull_bytes = sum(r.pull_bytes for r in self.steps)
            out["pull_bytes"] = int(pull_bytes)
            out["push_bytes"] = int(out["bytes_sent"] + out["bytes_received"] - pull_bytes)
            out["pull_messages"] = int(sum(r.pull_messages for r in self.steps))
            out["push_messages"] = int(sum(r.push_messages for r in self.steps))
        return out


class PSWorker:
    """One worker's model replica and its PS client.

    Args:
        index, num_workers: this worker and how many there are.
        model: dense part of the model (its own replica).
        layer: embedding layer for the model's tables.
        client: PSClient over the shards.
        source: where rows come from.
        dense_mode: "ps" or "allreduce" (or "local" for a single worker keeping its own dense params).
        optimizer, lr: the dense optimizer when dense parameters are updated on the worker.
        allreduce: the averaging group for dense_mode "allreduce".
    """

    def __init__(self, index: int, num_workers: int, model: CTRModel, layer: EmbeddingLayer,
                 client: PSClient, source: DataSource, dense_mode: str, optimizer: str = "adam",
                 lr: float = 1e-3, allreduce: AllReduce | None = None, stragglers=None) -> None:
        if dense_mode == "allreduce" and allreduce is None:
            raise ValueError("dense_mode 'allreduce' needs an AllReduce group")
        self.index = index
        self.num_workers = num_workers
        self.model = model
        self.client = client
        self.source = source
        self.dense_mode = dense_mode
        self.allreduce = allreduce
        opt = None if dense_mode == "ps" else make_dense_optimizer(optimizer, model.parameters(), lr)
        self.timer = PhaseTimer()
        self.step = SparseStep(model, layer, client, dense_opt=None, timer=self.timer)
        self.dense_opt = opt
        self.report = WorkerReport(index)
        self.stragglers = stragglers  # workqueue.stragglers.Stragglers or None
        self._t_origin = time.perf_counter()

    def rows_of(self, round_: int, batch_size: int, base: int = 0) -> tuple[int, int]:
        """Rows of this worker in round `round_`: workers interleave, so a round covers
        `num_workers * batch_size` consecutive rows (= one local step of that batch size)."""
        start = base + (round_ * self.num_workers + self.index) * batch_size
        return start, start + batch_size

    def train_rows(self, start: int, end: int, round_: int) -> float:
        """One step on rows [start, end). `round_` is the global step in sync mode."""
        c = self.client
        t_data = time.perf_counter()
        batch = self.source.read(start, end)
        t_data = time.perf_counter() - t_data
        before = c.comm.reset()  # fresh per-step counters
        del before
        c.begin_step(want_dense=self.dense_mode == "ps", next_global_step=not c.sync)
        t0 = time.perf_counter()
        x, res = self.step.layer.lookup(c, batch, train=True)
        t_pull = time.perf_counter() - t0
        pulled = (c.comm.bytes_sent + c.comm.bytes_received, c.comm.messages)
        if self.dense_mode == "ps":
            set_flat_params(self.model, c.dense_values)
        step = round_ if c.sync else c.step
        t0 = time.perf_counter()
        loss = self.step.forward_backward_from(x, res, batch, step)
        t_compute = time.perf_counter() - t0
        if self.stragglers is not None:
            # Injected slowdown, booked as compute: the extra time a slow worker would need.
            extra = self.stragglers.work_time(self.index, t0 - self._t_origin, t_compute) - t_compute
            if extra > 0:
                time.sleep(extra)
                t_compute += extra
        t_ar = 0.0
        dense_grad = None
        if self.dense_mode == "ps":
            dense_grad = flat_grads(self.model)
        else:
            t0 = time.perf_counter()
            if self.dense_mode == "allreduce":
                set_flat_grads(self.model, self.allreduce.mean(flat_grads(self.model)))
            self.dense_opt.step()
            t_ar = time.perf_counter() - t0
        t0 = time.perf_counter()
        c.apply_many(sparse_grads(res), step, dense_grad=dense_grad)
        t_push = time.perf_counter() - t0
        comm = c.comm
        seconds = {"data": t_data, "pull": t_pull - comm.wait_seconds, "wait": comm.wait_seconds,
                   "compute": t_compute, "allreduce": t_ar, "push": t_push}
        self.report.steps.append(StepRecord(step, seconds, comm.emulated_seconds, comm.bytes_sent,
                                            comm.bytes_received, len(batch), pull_bytes=pulled[0],
                                            pull_messages=pulled[1], push_messages=comm.messages - pulled[1]))
        r = self.report
        r.loss_ema = loss if r.loss_ema is None else 0.98 * r.loss_ema + 0.02 * loss
        return loss

    def run_tasks(self, take, batch_size: int) -> WorkerReport:
        """Train on row-range tasks from a work queue until it is finished.

        take(done_task) -> (next task or None, finished): reports the previous task done and
        takes the next in one call.
        """
        task, finished = take(None)
        while not finished or task is not None:
            if task is None:
                time.sleep(0.01)  # others hold the last leases; they may still be re-queued
            else:
                for s in range(task.start, task.end, batch_size):
                    self.train_rows(s, min(s + batch_size, task.end), 0)
                self.report.tasks += 1
            task, finished = take(task)
        return self.report

    def run(self, rounds: int, batch_size: int, base: int = 0, first_round: int = 1) -> WorkerReport:
        """Train `rounds` steps on this worker's interleaved rows."""
        for r in range(rounds):
            start, end = self.rows_of(r, batch_size, base)
            self.train_rows(start, end, first_round + r)
        return self.report
