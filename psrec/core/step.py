"""THE training step: one for local, PS and collective training, with every second of it
booked in one phase vocabulary.

    data       read the step's rows
    wait       waiting for peers: a sync PS holding a pull until the last step is applied,
               a collective's first rendezvous (and, after the run, its lockstep wait)
    pull       PS: sparse rows (+ dense slices) from the shards
    alltoall   collective: keys out, rows back, gradients out
    lookup     EV lookups (local tables; a collective rank's own shard)
    compute    dedup, assembly, forward, backward (+ injected straggler time)
    allreduce  the exposed dense all-reduce (hybrid PS, collective)
    push       PS: sparse gradients (+ dense gradient slices) to the shards
    apply      optimizer steps on this worker (dense, and the EV apply of local or owned rows)

The step is the same everywhere; what differs is where rows live (the `EmbeddingStore`: it
books its calls' seconds and traffic) and how dense gradients become an update (the
`DenseUpdate` hook). Phases sum to the step's wall time.

A non-finite loss raises `NonFiniteLoss` before anything is applied, so a bad batch never
reaches the stored parameters.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from psrec.comm.traffic import Traffic
from psrec.data.base import Batch, DataSource
from psrec.embedding.layer import EmbeddingLayer, LookupResult
from psrec.embedding.store import EmbeddingStore
from psrec.metrics.auc import auc
from psrec.models.base import CTRModel

__all__ = ["PHASES", "COMM_PHASES", "WAIT_PHASES", "NonFiniteLoss", "DenseUpdate", "DenseSeconds", "StepRecord",
           "TrainStep", "make_dense_optimizer"]

PHASES = ("data", "wait", "pull", "alltoall", "lookup", "compute", "allreduce", "push", "apply")
COMM_PHASES = ("pull", "alltoall", "allreduce", "push")
WAIT_PHASES = ("wait",)


class NonFiniteLoss(FloatingPointError):
    """The loss of a batch was NaN or infinite; nothing was applied."""


def make_dense_optimizer(name: str, params, lr: float) -> torch.optim.Optimizer:
    """torch optimizer for the model's dense parameters.

    `params` may be parameters or torch parameter groups (dicts), e.g. to give some weights
    their own FTRL l1/l2 (`psrec.experiments.zoo.xdeepint_dense_groups`).

    "ftrl" is FTRL-Proximal (`psrec.optim.FTRL`) with beta = 0, n0 = 1e-6 and no l1/l2 unless
    a group sets them: with our batch-mean loss, gradients are 1/batch_size of a summed loss's,
    and McMahan's beta = 1 (sized for per-example gradients) would pin the per-coordinate rate
    at lr for the whole run; with beta ~ 0 the rate lr / sqrt(n) is scale-free like Adagrad's.
    """
    params = list(params)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    if name == "adagrad":
        return torch.optim.Adagrad(params, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    if name == "ftrl":
        from psrec.optim import FTRL

        return FTRL(params, lr=lr, beta=0.0, l1=0.0, l2=0.0, initial_accumulator_value=1e-6)
    raise ValueError(f"unknown dense optimizer {name!r}")


@dataclass(frozen=True)
class DenseSeconds:
    """One step's dense gradient exchange: seconds in flight (total) and blocking the step (exposed)."""

    total: float = 0.0
    exposed: float = 0.0


class DenseUpdate:
    """The dense hook: how a replica's dense gradients become an update.

    This base class is local training: the replica's optimizer steps on its own gradients.
    The PS (dense slices on the shards), hybrid (flat all-reduce) and collective (bucketed,
    overlapped all-reduce) paths override the parts they change.

    Args:
        optimizer: steps the replica's dense parameters; None when they are updated elsewhere.
    """

    def __init__(self, optimizer: torch.optim.Optimizer | None) -> None:
        self.optimizer = optimizer

    def begin(self, weight: float | None) -> None:
        """Before the step. `weight`: this worker's share of the step's rows when workers
        train unequal shares (None: equal shares)."""

    def after_pull(self) -> None:
        """After the sparse lookup (the PS hands out dense parameters with it)."""

    def empty_backward(self) -> None:
        """A step without rows (a collective rank with no task): zero gradients in place of backward."""

    def exchange(self) -> DenseSeconds:
        """Make the gradients the update's (average them across workers, or stage them for a push)."""
        return DenseSeconds()

    def take_traffic(self) -> Traffic:
        """Bytes and messages of the exchanges since the last call."""
        return Traffic()

    def sparse_scale(self) -> float:
        """Factor on this step's embedding-row gradients, known after `exchange` (backup
        workers: this rank's rows / the applied rows; 0 drops them, counts included)."""
        return 1.0

    def apply(self) -> None:
        if self.optimizer is not None:
            self.optimizer.step()


@dataclass
class StepRecord:
    """One step of one worker: seconds per phase (they sum to its wall time), its traffic, rows.

    `allreduce_total` is the dense all-reduce's time in flight (exposed + hidden behind
    backward); `ready` the seconds from the point every rank leaves together to the dense
    exchange (the lockstep split, `psrec.core.lockstep`), `peer_wait` that split's share moved
    into `wait`; `straggler` injected slowdown included in `compute`; `span` the rows
    [start, end) trained (start == end: an empty step); `task` the work-queue task's
    (epoch, index) the rows came from; `applied` False when backup workers dropped this
    worker's gradient.
    """

    step: int
    seconds: dict[str, float]
    rows: int
    traffic: Traffic = field(default_factory=Traffic)
    allreduce_total: float = 0.0
    ready: float = 0.0
    peer_wait: float = 0.0
    straggler: float = 0.0
    span: tuple[int, int] = (0, 0)
    task: tuple[int, int] | None = None
    t_start: float = 0.0  # time.time() seconds at the step's start (its data read included): one axis for all processes
    loss: float | None = None  # the batch's mean loss (None: an empty step)
    applied: bool = True
    dropped_rows: int = 0  # backup workers: rows of the step's late gradients, dropped (collective.backup)
    # a pipelined step (`collective.pipeline`): seconds its lookup was in flight ahead of it,
    # and the part of them hidden behind the previous step (not waited for)
    prefetch_total: float = 0.0
    prefetch_hidden: float = 0.0
    # progressive validation (McMahan et al., KDD 2013): the AUC of the batch's predictions
    # made before it was trained on; None for an empty step or a batch of one class
    auc: float | None = None

    @property
    def total(self) -> float:
        return sum(self.seconds.values())

    # the traffic's figures, read as a record's own (reports and the Prometheus exporter)
    @property
    def bytes_sent(self) -> int:
        return self.traffic.bytes_sent

    @property
    def bytes_received(self) -> int:
        return self.traffic.bytes_received

    @property
    def emulated(self) -> float:
        return self.traffic.emulated

    @property
    def messages(self) -> int:
        return self.traffic.messages

    @property
    def bytes_by_tag(self) -> dict[str, int]:
        return self.traffic.bytes_by_tag


class TrainStep:
    """Train and predict a CTR model whose embeddings live in an `EmbeddingStore`.

    Args:
        model: the CTR model (dense parameters only).
        layer: the EmbeddingLayer for the model's tables.
        store: where embedding rows live (local EVs, parameter servers, collective shards).
        dense: how dense gradients become an update (default: a local optimizer step).
        index: this worker's index (straggler injection slows workers by index).
        stragglers: `workqueue.stragglers.Stragglers` or None (nobody is slowed).

    Example (local tables, plain SGD):
        >>> from psrec.core.local import build_local
        >>> from psrec.config import load_config
        >>> setup = build_local(load_config(None, ["synthetic.num_fields=6", "synthetic.num_dense=2"]))
        >>> loss, rec = setup.step.train_rows(setup.source, 0, 64, step=1)
        >>> rec.rows, sorted(rec.seconds) == sorted(PHASES), rec.total > 0
        (64, True, True)
    """

    def __init__(self, model: CTRModel, layer: EmbeddingLayer, store: EmbeddingStore,
                 dense: DenseUpdate | None = None, index: int = 0, stragglers=None) -> None:
        self.model = model
        self.layer = layer
        self.store = store
        self.dense = dense if dense is not None else DenseUpdate(None)
        self.index = index
        self.stragglers = stragglers
        self.t_origin = time.perf_counter()  # slow periods of the straggler model are timed from here
        # Raw key draws to a store that takes them (local tables); False forces the distinct-key
        # path there too (the baseline of benchmarks/local_step_bench.py).
        self.raw = store.raw_batches
        # Called once the step's rows are in, before its forward (`collective.pipeline`).
        self.after_rows = None
        # Where injected slowdown goes: after the step (default) or right after backward, before
        # the dense exchange. In plain lockstep either delays every rank alike; where ranks
        # train speed-proportional shares it must overlap the peers' compute, as a slow
        # machine's own slow compute would (collective.data = "proportional" sets it).
        self.straggle_before_exchange = False
        self._exchange_exit: float | None = None  # perf_counter when the last dense exchange returned
        self.last_auc: float | None = None  # the last batch's progressive AUC (StepRecord.auc)

    def loss_and_grads(self, batch: Batch, x, step: int) -> float:
        """Forward, batch-mean BCE loss and backward; returns the loss.

        Dense gradients land in `model.parameters()` (or the dense hook's buckets), sparse ones
        in the looked-up rows' `.grad`."""
        self.model.train()
        self.model.zero_grad(set_to_none=True)
        logits = self.model(x)
        loss = F.binary_cross_entropy_with_logits(logits, torch.from_numpy(batch.labels))
        if not torch.isfinite(loss):
            raise NonFiniteLoss(f"loss is {loss.item()} at step {step}, rows [{batch.start}, "
                                f"{batch.start + len(batch)}); no update was applied")
        loss.backward()
        a = auc(batch.labels, logits.detach().numpy())  # ~60 us at 1024 rows: rank-based, no sigmoid
        self.last_auc = a if a == a else None
        return float(loss.detach())

    def train_rows(self, source: DataSource, start: int, end: int, step: int, weight: float | None = None,
                   before: dict[str, float] | None = None) -> tuple[float | None, StepRecord]:
        """One step on rows [start, end) as global step `step`; start == end is an empty step
        (no rows, the same calls: collective ranks keep every collective matched).

        Args:
            weight: this worker's share of the step's rows (unequal shares), or None.
            before: seconds already spent on this step (e.g. taking a task: "data"), added in.

        Returns the batch's mean loss (None for an empty step) and the step's record.
        """
        t0 = time.perf_counter()
        batch = source.read(start, end) if end > start else None
        before = dict(before or {})
        before["data"] = before.get("data", 0.0) + time.perf_counter() - t0
        return self.train_batch(batch, step, weight, before, span=(start, end))

    def train_batch(self, batch: Batch | None, step: int, weight: float | None = None,
                    before: dict[str, float] | None = None,
                    span: tuple[int, int] | None = None, dedup: tuple | None = None) -> tuple[float | None, StepRecord]:
        """`train_rows` on a batch already read (None: an empty step); `span` its rows;
        `dedup` the batch's `layer.dedup` when done already (a pipelined step's prefetch)."""
        store, dense, sec = self.store, self.dense, dict.fromkeys(PHASES, 0.0)
        for k, v in (before or {}).items():
            sec[k] += v
        t_step = t = time.perf_counter()
        loss = None
        if batch is not None and not len(batch):
            batch = None  # every row of the range was malformed: an empty step, not a crash
        if span is None:
            span = (batch.start, batch.start + len(batch)) if batch is not None else (0, 0)
        store.begin_step()
        dense.begin(weight)
        raw = batch is not None and self.raw
        handles = inverse = counts = None
        if raw:
            keys = self.layer.raw_keys(batch)
            fetched, handles = store.lookup_raw_many(keys)  # dedup inside: booked as the store's lookup
        elif batch is not None:
            keys, counts, inverse = dedup if dedup is not None else self.layer.dedup(batch)
            t = self._book(sec, "compute", t)
            fetched = store.lookup_many(keys, train=True)
        else:
            fetched = store.lookup_many({}, train=True)
        dense.after_pull()
        t = self._book_store(sec, store.pull_phase, t)
        t_rows = t  # every collective rank leaves the lookup's last all-to-all together
        if self.after_rows is not None:
            self.after_rows()  # a pipelined step launches the next batch's lookup, to fly during this compute
        step = store.global_step(step)
        self.last_auc = None
        if batch is not None:
            rows = self.layer.leaves(fetched)
            x = self.layer.assemble(batch, rows, inverse)
            res = LookupResult(keys, counts, rows, handles)
            loss = self.loss_and_grads(batch, x, step)
            t = self._book(sec, "compute", t)
        else:
            res = None
            dense.empty_backward()
            t = self._book(sec, "compute", t)
        extra = 0.0
        if self.straggle_before_exchange and batch is not None:
            extra = self._straggle(t_step, sec["compute"])
            t = self._book(sec, "compute", t)
        # `ready` counts from where every rank left together: the lookup's last all-to-all for
        # a store that meets there, else the previous step's dense exchange (a hybrid worker's
        # pull is its own, unsynchronised); the first step from its own start
        if store.meets_at_lookup:
            ready = t - t_rows
        else:
            first = t_step - sum((before or {}).values())
            ready = t - (self._exchange_exit if self._exchange_exit is not None else first)
        ex = dense.exchange()
        t = self._book(sec, "allreduce", t)
        self._exchange_exit = t
        # the exchange's exposed seconds are all-reduce; the rest of the call (staging a PS
        # push's dense gradient, copying buckets back) is compute
        sec["compute"] += max(0.0, sec["allreduce"] - ex.exposed)
        sec["allreduce"] = min(sec["allreduce"], ex.exposed)
        dense.apply()
        t = self._book(sec, "apply", t)
        if res is not None:
            res.push(store, step, dense.sparse_scale())
        else:
            store.apply_many({}, step)
        t = self._book_store(sec, store.push_phase, t)
        # Injected slowdown last, booked as compute: peers meet it at the next step's first
        # rendezvous (their `wait`), not inside this step's exchanges (overlapped all-reduces
        # are already launched by then, so they would see it as communication).
        if not self.straggle_before_exchange and batch is not None:
            extra = self._straggle(t_step, sec["compute"])
            if extra:
                self._book(sec, "compute", t)
        traffic = store.take_traffic()
        traffic += dense.take_traffic()
        rec = StepRecord(step, sec, len(batch) if batch is not None else 0, traffic, allreduce_total=ex.total,
                         ready=ready, straggler=extra, span=span, loss=loss, auc=self.last_auc,
                         t_start=time.time() - (time.perf_counter() - t_step) - sum((before or {}).values()))
        return loss, rec

    def _book(self, sec: dict[str, float], phase: str, since: float) -> float:
        now = time.perf_counter()
        sec[phase] += now - since
        return now

    def _book_store(self, sec: dict[str, float], phase: str, since: float) -> float:
        """Book a store call: the seconds the store attributes (wait, all-to-all, lookup, ...)
        to their phases, the rest of the call to `phase`."""
        now = time.perf_counter()
        split = self.store.take_seconds()
        for k, v in split.items():
            sec[k] += v
        sec[phase] += max(0.0, now - since - sum(split.values()))
        return now

    def _straggle(self, t_start: float, compute_s: float) -> float:
        """Sleep the extra seconds this worker's slowdown adds to `compute_s` seconds of
        compute begun at `t_start` (perf_counter seconds); returns them (0 without stragglers)."""
        if self.stragglers is None:
            return 0.0
        extra = self.stragglers.work_time(self.index, t_start - self.t_origin, compute_s) - compute_s
        if extra > 0:
            time.sleep(extra)
            return extra
        return 0.0

    @torch.no_grad()
    def predict(self, batch: Batch) -> np.ndarray:
        """Click probabilities (B,) float64; evaluation lookups count nothing."""
        self.model.eval()
        x, _ = self.layer.lookup(self.store, batch, train=False)
        return torch.sigmoid(self.model(x)).double().numpy()
