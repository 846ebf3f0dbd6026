"""A collective training worker (one rank): every second and byte of a step accounted for.

Plain Python: the in-process runner puts ranks on threads, `collective.runner` wraps the same
class in a Ray actor. A step, all ranks in lockstep:

    data       read this rank's rows
    wait       the step's first rendezvous (the size all-to-all): time a rank waits for the
               slowest peer to arrive, plus a few bytes
    alltoall   keys out, rows back, gradients out (packing included)
    lookup     EV lookups of the keys this rank owns, for every rank
    compute    dedup, assemble, forward, backward (into the dense gradient buckets)
    allreduce  the exposed part of the dense all-reduce (total and hidden reported apart)
    apply      dense optimizer step, EV apply of the gradients this rank owns

The phases sum to the step's wall time (`compute` is what the others leave). Bytes and
messages come from the rank's CommLog; with a network model each collective also books
the time its bytes would take on that network (`psrec.net.transfer_time`), separately from
the real time. The emulation charges the whole all-reduce (it does not credit overlap).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from collective.dense_sync import DenseSync
from collective.group import CommRecord
from collective.sharded_store import ShardedStore
from psrec.data.base import DataSource
from psrec.embedding.layer import EmbeddingLayer, LookupResult
from psrec.metrics.steps import summarize_steps
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
class StepRecord:
    """One step of one rank: seconds per phase, traffic, and the dense all-reduce."""

    step: int
    seconds: dict[str, float]  # PHASES -> seconds; they sum to the step's wall time
    allreduce_total: float  # seconds some bucket was in flight (exposed + hidden)
    emulated: float  # seconds on the emulated network
    bytes_sent: int
    bytes_received: int
    messages: int
    bytes_by_tag: dict[str, int]  # sizes, keys, rows, grads, dense -> bytes sent + received
    rows: int

    @property
    def total(self) -> float:
        return sum(self.seconds.values())


@dataclass
class WorkerReport:
    """Everything one rank measured."""

    worker: int
    steps: list[StepRecord] = field(default_factory=list)
    loss_ema: float | None = None

    def summary(self) -> dict:
        """Per-phase totals, percentiles, communication fraction (real and emulated), traffic,
        and the all-reduce split into exposed and hidden-behind-backward seconds."""
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
    """

    def __init__(self, rank: int, world_size: int, model: CTRModel, layer: EmbeddingLayer,
                 store: ShardedStore, dense: DenseSync, source: DataSource, optimizer: str = "adam",
                 lr: float = 1e-3, net: NetConfig | None = None) -> None:
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

    def rows_of(self, round_: int, batch_size: int, base: int = 0) -> tuple[int, int]:
        """Rows of this rank in round `round_`: ranks interleave, so a round covers
        `world_size * batch_size` consecutive rows (= one local step of that batch size),
        the same split as the PS workers'."""
        start = base + (round_ * self.world_size + self.rank) * batch_size
        return start, start + batch_size

    def train_rows(self, start: int, end: int, step: int) -> float:
        """One step on rows [start, end) as global step `step`; returns the batch's mean loss."""
        comm = self.store.comm
        self.store.take_seconds()
        comm.log.take()
        t_step = time.perf_counter()
        batch = self.source.read(start, end)
        t_data = time.perf_counter() - t_step
        keys, counts, inverse = self.layer.dedup(batch)
        fetched = self.store.lookup_many(keys, train=True)
        rows = {t.name: torch.from_numpy(fetched[t.name]).requires_grad_(True) for t in self.layer.tables}
        x = self.layer.assemble(batch, rows, inverse)
        res = LookupResult(keys, counts, rows)
        loss = self.step.forward_backward_from(x, res, batch, step)  # dense gradients land in the buckets
        sync = self.dense.finish()
        t0 = time.perf_counter()
        self.dense_opt.step()
        t_dense_apply = time.perf_counter() - t0
        self.store.apply_many(sparse_grads(res), step)
        wall = time.perf_counter() - t_step
        s = self.store.take_seconds()
        seconds = {"data": t_data, "wait": s["wait"], "alltoall": s["alltoall"], "lookup": s["lookup"],
                   "allreduce": sync.exposed, "apply": s["apply"] + t_dense_apply}
        seconds["compute"] = max(0.0, wall - sum(seconds.values()))
        records = comm.log.take()
        tags: dict[str, int] = {}
        for r in records:
            tags[r.tag] = tags.get(r.tag, 0) + r.bytes_sent + r.bytes_received
        self.report.steps.append(StepRecord(
            step, {p: seconds[p] for p in PHASES}, sync.total, emulated_seconds(self.net, records),
            sum(r.bytes_sent for r in records), sum(r.bytes_received for r in records),
            sum(r.messages for r in records), tags, len(batch)))
        rep = self.report
        rep.loss_ema = loss if rep.loss_ema is None else 0.98 * rep.loss_ema + 0.02 * loss
        return loss

    def run(self, rounds: int, batch_size: int, base: int = 0, first_round: int = 1) -> WorkerReport:
        """Train `rounds` steps on this rank's interleaved rows; global step = round."""
        for r in range(rounds):
            start, end = self.rows_of(r, batch_size, base)
            self.train_rows(start, end, first_round + r)
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
