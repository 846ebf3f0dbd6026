"""A collective training worker (one rank): every second and byte of a step accounted for.

Plain Python: the in-process runner puts ranks on threads, `collective.runner` wraps the same
class in a Ray actor. A step, all ranks in lockstep:

    data       read this rank's rows
    wait       the step's first rendezvous (the size all-to-all): time a rank waits for the
               slowest peer to arrive, plus a few bytes; after the run, also its wait at the
               all-reduce for the slowest rank's backward (`collective.lockstep`)
    alltoall   keys out, rows back, gradients out (packing included)
    lookup     EV lookups of the keys this rank owns, for every rank
    compute    dedup, assemble, forward, backward (into the dense gradient buckets)
    allreduce  the exposed part of the dense all-reduce (total and hidden reported apart),
               less that wait for the slowest rank
    apply      dense optimizer step, EV apply of the gradients this rank owns

The phases sum to the step's wall time (`compute` is what the others leave). Bytes and
messages come from the rank's CommLog; with a network model each collective also books
the time its bytes would take on that network (`psrec.net.transfer_time`), separately from
the real time. The emulation charges the whole all-reduce (it does not credit overlap).

Rows come either interleaved (`run`: rank r trains batch r of every round) or from the work
queue (`run_tasks`): then each step starts with a small "control" all-reduce of (rows this
rank trains, work left?) that is the step's first rendezvous (booked as `wait`, with the
take round trip to the queue booked as `data`); a rank without rows runs an empty step so
that every collective still matches, and the ranks stop together when none has rows and
the queue is finished.

Straggler injection (`workqueue.stragglers`, the PS workers' model): after a step's real
work the rank sleeps the extra time its slowdown gives that step's compute, booked as
`compute` (and apart as `StepRecord.straggler`). Its peers then wait for it at the next
step's first rendezvous, which is where `wait` is measured; in lockstep a delay anywhere in
a step delays every rank by the same amount, so where it falls does not change the makespan.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from collective.dense_sync import DenseSync
from collective.group import CommRecord
from collective.sharded_store import ShardedStore
from psrec.data.base import DataSource
from psrec.embedding.layer import EmbeddingLayer, LookupResult
from psrec.metrics.steps import PhaseSeconds, WorkerSteps, summarize_steps
from psrec.models.base import CTRModel
from psrec.net import NetConfig, transfer_time
from psrec.train.step import SparseStep, make_dense_optimizer, sparse_grads

__all__ = ["CollectiveWorker", "StepRecord", "WorkerReport", "PHASES", "COMM_PHASES", "emulated_seconds"]

PHASES = ("data", "wait", "alltoall", "lookup", "compute", "allreduce", "apply")
COMM_PHASES = ("alltoall", "allreduce")


def emulated_seconds(net: NetConfig | None, records: list[CommRecord]) -> float:
    """Seconds the collectives in `records` would take on `net`: per call, its messages'
    latencies plus the larger of its sent and received bytes over the bandwidth (a NIC
    sends and receives at once)."""
    if net is None:
        return 0.0
    return float(sum(transfer_time(net, max(r.bytes_sent, r.bytes_received), messages=r.messages)
                     for r in records if r.messages))


@dataclass
class StepRecord(PhaseSeconds):
    """One step of one rank: seconds per phase, traffic, and the dense all-reduce."""

    step: int
    seconds: dict[str, float]  # PHASES -> seconds; they sum to the step's wall time
    allreduce_total: float  # seconds some bucket was in flight (exposed + hidden)
    emulated: float  # seconds on the emulated network
    bytes_sent: int
    bytes_received: int
    messages: int
    bytes_by_tag: dict[str, int]  # sizes, keys, rows, grads, dense (, control) -> bytes sent + received
    rows: int
    span: tuple[int, int] = (0, 0)  # rows [start, end) this rank trained; start == end: an empty step
    task: tuple[int, int] | None = None  # (epoch, index) of the work-queue task the rows came from
    straggler: float = 0.0  # seconds of injected slowdown, included in seconds["compute"]
    ready: float = 0.0  # seconds from the rows' arrival (the step's last all-to-all) to the all-reduce's wait
    peer_wait: float = 0.0  # seconds of that wait spent on the slowest rank (`collective.lockstep`), in "wait"


@dataclass
class WorkerReport(WorkerSteps):
    """Everything one rank measured (`steps`: StepRecords)."""

    end_wait: float = 0.0  # seconds in control all-reduces that started no step (the final one, polls)
    run_seconds: float = 0.0  # seconds of `run` / `run_tasks`, first step (or take) to the end

    def summary(self) -> dict:
        """Per-phase totals, percentiles, communication fraction (real and emulated), traffic,
        the all-reduce split into exposed and hidden-behind-backward seconds, and the
        lockstep figures: `sync_wait_seconds` (the `wait` phase: at the steps' first
        rendezvous and, once `collective.lockstep.split_peer_wait` has run, for the slowest
        rank's backward at the all-reduce, `peer_wait_seconds`; plus `end_wait`),
        `idle_steps` (steps with no rows of its own), injected straggler seconds."""
        out = summarize_steps(self.worker, self.steps, PHASES, COMM_PHASES, self.loss_ema)
        if not self.steps:
            return out
        ar_total = float(sum(r.allreduce_total for r in self.steps))
        tags: dict[str, int] = {}
        for r in self.steps:
            for k, v in r.bytes_by_tag.items():
                tags[k] = tags.get(k, 0) + v
        out.update({
            "allreduce_total_seconds": ar_total,
            "allreduce_exposed_seconds": out["phases"]["allreduce"],
            "allreduce_hidden_seconds": max(0.0, ar_total - out["phases"]["allreduce"]),
            "bytes_by_tag": tags,
            "messages": int(sum(r.messages for r in self.steps)),
            "tasks": self.tasks,
            "idle_steps": sum(1 for r in self.steps if r.rows == 0),
            "straggler_seconds": float(sum(r.straggler for r in self.steps)),
            "peer_wait_seconds": float(sum(r.peer_wait for r in self.steps)),
            "end_wait_seconds": self.end_wait,
            "sync_wait_seconds": out["phases"]["wait"] + self.end_wait,
            "run_seconds": self.run_seconds,
        })
        return out


class CollectiveWorker:
    """One rank: a model replica, its shard of the tables, and the dense sync.

    Args:
        rank, world_size: this rank and how many there are.
        model: this rank's replica of the dense part (same initial values on every rank).
        layer: the embedding layer for the model's tables.
        store: the sharded embedding store over this rank's collectives.
        dense: the dense gradient sync over the same collectives.
        source: where rows come from.
        optimizer, lr: the dense optimizer every replica runs on the averaged gradients.
        net: network to emulate (None: real time only).
        stragglers: `workqueue.stragglers.Stragglers` slowing ranks down (None: nobody).
    """

    def __init__(self, rank: int, world_size: int, model: CTRModel, layer: EmbeddingLayer,
                 store: ShardedStore, dense: DenseSync, source: DataSource, optimizer: str = "adam",
                 lr: float = 1e-3, net: NetConfig | None = None, stragglers=None) -> None:
        self.rank = rank
        self.world_size = world_size
        self.model = model
        self.layer = layer
        self.store = store
        self.dense = dense
        self.source = source
        self.net = net
        self.step = SparseStep(model, layer, store, dense_opt=None)
        self.dense_opt = make_dense_optimizer(optimizer, model.parameters(), lr)
        self.report = WorkerReport(rank)
        self.stragglers = stragglers
        self._t_origin = time.perf_counter()  # slow periods are timed from here (reset by run/run_tasks)

    def rows_of(self, round_: int, batch_size: int, base: int = 0) -> tuple[int, int]:
        """Rows of this rank in round `round_`: ranks interleave, so a round covers
        `world_size * batch_size` consecutive rows (= one local step of that batch size),
        the same split as the PS workers'."""
        start = base + (round_ * self.world_size + self.rank) * batch_size
        return start, start + batch_size

    def train_rows(self, start: int, end: int, step: int) -> float:
        """One step on rows [start, end) as global step `step`; returns the batch's mean loss.

        Every rank trains as many rows (the interleaved split), so the dense sync's fixed
        1/N loss-gradient scale makes the summed gradient that of the union's mean loss."""
        self._begin_step()
        return self._step(start, end, step, None, 0.0, 0.0, None)

    def _begin_step(self) -> None:
        """Fresh per-step counters: store seconds and the comm log."""
        self.store.take_seconds()
        self.store.comm.log.take()

    def _step(self, start: int, end: int, step: int, total_rows: int | None, t_take: float,
              t_control: float, task: tuple[int, int] | None) -> float | None:
        """One step on rows [start, end) (none when start == end); returns the mean loss (None
        for an empty step). `total_rows`: rows all ranks train in this step (None: N equal
        batches); `t_take`, `t_control`: seconds already spent on the take round trip and the
        control all-reduce, booked as `data` and `wait`."""
        comm = self.store.comm
        t_step = time.perf_counter()
        loss = None
        if end > start:
            batch = self.source.read(start, end)
            t_data = time.perf_counter() - t_step
            keys, counts, inverse = self.layer.dedup(batch)
            fetched = self.store.lookup_many(keys, train=True)
            t_rows = time.perf_counter()  # every rank leaves this all-to-all together (collective.lockstep)
            rows = {t.name: torch.from_numpy(fetched[t.name]).requires_grad_(True) for t in self.layer.tables}
            x = self.layer.assemble(batch, rows, inverse)
            res = LookupResult(keys, counts, rows)
            if total_rows is not None:
                # Ranks train different numbers of rows: weight this rank's mean loss by its
                # share, n_r / R, so that the summed gradients are those of the mean loss over
                # all R rows of the step (what local training on their union computes).
                self.dense.scale = len(batch) / total_rows
            loss = self.step.forward_backward_from(x, res, batch, step)  # dense gradients land in the buckets
            ready = time.perf_counter() - t_rows
            sync = self.dense.finish()
            t0 = time.perf_counter()
            self.dense_opt.step()
            t_dense_apply = time.perf_counter() - t0
            self.store.apply_many(sparse_grads(res), step)
            n_rows = len(batch)
        else:
            # An empty step: the same collectives in the same order as a training rank's
            # (lookup all-to-alls, dense bucket all-reduces, gradient all-to-all), asking for
            # no rows and contributing zero gradients; the replica still applies the summed
            # gradient, so every replica stays identical.
            t_data = 0.0
            self.store.lookup_many({}, train=True)
            t_rows = time.perf_counter()
            self.dense.attach_grads()  # no forward to do it: zero buckets, .grad -> bucket views
            ready = time.perf_counter() - t_rows
            sync = self.dense.finish()
            t0 = time.perf_counter()
            self.dense_opt.step()
            t_dense_apply = time.perf_counter() - t0
            self.store.apply_many({}, step)
            n_rows = 0
        wall = time.perf_counter() - t_step
        s = self.store.take_seconds()
        seconds = {"data": t_data + t_take, "wait": s["wait"] + t_control, "alltoall": s["alltoall"],
                   "lookup": s["lookup"], "allreduce": sync.exposed, "apply": s["apply"] + t_dense_apply}
        seconds["compute"] = max(0.0, wall - sum(seconds.values()) + t_take + t_control)
        extra = self._straggle(t_step, seconds["compute"]) if n_rows else 0.0
        seconds["compute"] += extra
        records = comm.log.take()
        tags: dict[str, int] = {}
        for r in records:
            tags[r.tag] = tags.get(r.tag, 0) + r.bytes_sent + r.bytes_received
        self.report.steps.append(StepRecord(
            step, {p: seconds[p] for p in PHASES}, sync.total, emulated_seconds(self.net, records),
            sum(r.bytes_sent for r in records), sum(r.bytes_received for r in records),
            sum(r.messages for r in records), tags, n_rows, (start, end), task, extra, ready))
        rep = self.report
        if loss is not None:
            rep.loss_ema = loss if rep.loss_ema is None else 0.98 * rep.loss_ema + 0.02 * loss
        return loss

    def _straggle(self, t_start: float, compute_s: float) -> float:
        """Sleep the extra seconds this rank's slowdown adds to `compute_s` seconds of compute
        begun at `t_start` (perf_counter seconds); returns them (0 without stragglers)."""
        if self.stragglers is None or compute_s <= 0:
            return 0.0
        extra = self.stragglers.work_time(self.rank, t_start - self._t_origin, compute_s) - compute_s
        if extra > 0:
            time.sleep(extra)  # a slow neighbour's time: leaves the core to the others
        return max(0.0, extra)

    def run(self, rounds: int, batch_size: int, base: int = 0, first_round: int = 1,
            on_step: Callable[[], None] | None = None) -> WorkerReport:
        """Train `rounds` steps on this rank's interleaved rows; global step = round.
        `on_step` is called after every step (progress bars)."""
        t_run = self._t_origin = time.perf_counter()
        for r in range(rounds):
            start, end = self.rows_of(r, batch_size, base)
            self.train_rows(start, end, first_round + r)
            if on_step is not None:
                on_step()
        self.report.run_seconds = time.perf_counter() - t_run
        return self.report

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
        self._t_origin = t_run
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
            self._step(start, end, step, total, t_take, t_control,
                       (task.epoch, task.index) if task is not None else None)
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
