"""Backup workers for lockstep collective training (`collective.backup = b`).

Chen et al., "Revisiting Distributed Synchronous SGD" (2016): run N + b workers and let each
step apply the first N gradients to arrive; the b late ones are dropped, so a straggler no
longer sets the step's pace. Here `collective.workers` = N + b ranks each train one batch of
the round's (N + b) x batch_size rows (the interleaved split), and per step:

1. after backward (and after the injected slowdown, which a late gradient must really be
   late for: here, not at the step's end as in the plain step) a rank takes a ticket from
   an arrival board shared by the group (`ArrivalBoard`: the process group's TCP store on
   Ray, a locked counter in process); tickets 1..N are applied, later ones dropped;
2. a rank still busy when N tickets are gone stops (its gradient would be dropped anyway:
   the system moves on without it, as the paper's workers do when they fetch the new step);
3. all ranks all-reduce (applied rows, rows, applied ranks) ("control"), then each scales
   its dense buckets and embedding-row gradients by `rows_r / applied rows` (0 if dropped)
   before the dense all-reduce and the gradient all-to-all: the update is the mean loss
   gradient over the applied ranks' rows, i.e. local training on their union (plain SGD).

Lookups of a dropped rank still happened (its rows were fetched, and created when new);
its gradients and counts are not applied. `StepRecord.dropped_rows` of every rank holds the
step's dropped rows (all ranks agree on it).
"""
from __future__ import annotations

import time

import torch

from collective.dense_sync import BucketedDense, DenseSync
from psrec.core.report import WorkerReport
from psrec.core.step import DenseSeconds
from workqueue.arrivals import ArrivalBoard, BackupTickets, LocalBoard

__all__ = ["ArrivalBoard", "LocalBoard", "StoreBoard", "BackupDense", "board_for", "run_backup"]


class StoreBoard(ArrivalBoard):
    """The board on the process group's key-value store (`store.add` is atomic across ranks)."""

    def __init__(self, store) -> None:
        self.store = store

    def arrive(self, step: int) -> int:
        return int(self.store.add(f"psrec/arrive/{step}", 1))

    def count(self, step: int) -> int:
        return int(self.store.add(f"psrec/arrive/{step}", 0))


def board_for(comm) -> ArrivalBoard:
    """The arrival board of `comm`'s group: its ThreadGroup's (one per group, made on first
    use) or the default torch.distributed group's TCP store."""
    group = getattr(comm, "g", None)
    if group is not None:  # psrec.comm.collectives.ThreadGroup member
        board = group.__dict__.get("_arrivals")
        if board is None:
            board = group.__dict__.setdefault("_arrivals", LocalBoard())
        return board
    import torch.distributed.distributed_c10d as c10d

    # No public accessor for the store the group was formed on (torch 2.x); every rank
    # already holds a connection to it, so it costs no new port or rendezvous.
    return StoreBoard(c10d._get_default_store())


class BackupDense(BucketedDense):
    """The dense hook of a backup-workers rank (module doc).

    Args:
        sync: the rank's DenseSync (built without overlap: buckets are scaled before launch).
        optimizer, net: as `BucketedDense`.
        model: the replica (its training forward tells the hook the batch's rows).
        board: the group's arrival board.
        needed: N, the gradients applied per step.
        stragglers: `workqueue.stragglers.Stragglers` or None; index: this rank.
    """

    def __init__(self, sync: DenseSync, optimizer, net, model, board: ArrivalBoard, needed: int,
                 stragglers=None, index: int = 0) -> None:
        super().__init__(sync, optimizer, net)
        if sync.overlap:
            raise ValueError("backup workers scale the buckets before the all-reduce: build DenseSync without overlap")
        self.tickets = BackupTickets(board, needed, stragglers, index)
        self.rows = 0
        self.factor = 1.0
        self.last = {"applied": True, "dropped_rows": 0, "straggler": 0.0, "applied_ranks": 0}
        model.register_forward_hook(self._on_output)

    def _on_output(self, module, args, output) -> None:
        if torch.is_grad_enabled():
            self.rows = int(output.shape[0])

    def begin(self, weight: float | None) -> None:
        self.tickets.next_step()
        self.sync.scale = 1.0  # each rank's own mean-loss gradient; scaled once the applied rows are known
        self.rows = 0
        self._t_pull = time.perf_counter()

    def after_pull(self) -> None:
        self._t_pull = time.perf_counter()

    def exchange(self) -> DenseSeconds:
        applied, slept = self.tickets.take(self.rows, time.perf_counter() - self._t_pull)
        t0 = time.perf_counter()
        flag = torch.tensor([self.rows if applied else 0, self.rows, int(applied)], dtype=torch.float64)
        self.sync.comm.all_reduce(flag, tag="control")
        applied_rows, rows, ranks = (int(v) for v in flag.tolist())
        self.factor = self.rows / applied_rows if applied and applied_rows else 0.0
        for b in self.sync.buckets:
            for p, v in zip(b.params, b.views):
                if p.grad is None:
                    p.grad = v.zero_()
            b.buffer.mul_(self.factor)
        control = time.perf_counter() - t0
        t = self.sync.finish()
        self.last = {"applied": applied, "dropped_rows": rows - applied_rows, "straggler": slept,
                     "applied_ranks": ranks}
        # the slowdown is compute (the step books the rest of the call as compute)
        return DenseSeconds(t.total + control, t.exposed + control)

    def sparse_scale(self) -> float:
        return self.factor


def run_backup(worker, first: int, stop: int, batch_size: int, base: int, per_epoch: int,
               on_step=None) -> WorkerReport:
    """`CollectiveWorker.run` (interleaved rounds of N + b batches) with the step's outcome
    on each record: `dropped_rows` (every rank: the step's), `straggler` (this rank's)."""
    from psrec.core.ranges import rows_of

    dense: BackupDense = worker.step.dense
    t_run = time.perf_counter()
    if first == 0 or not worker.report.steps:
        dense.tickets.t_origin = t_run
    for r in range(first, stop):
        start, end = rows_of(r, worker.rank, worker.world_size, batch_size, base, per_epoch)
        worker.train_rows(start, end, r + 1)
        rec = worker.report.steps[-1]
        rec.dropped_rows = dense.last["dropped_rows"]
        rec.straggler = dense.last["straggler"]
        rec.applied = dense.last["applied"]
        if on_step is not None:
            on_step()
    worker.report.run_seconds += time.perf_counter() - t_run
    return worker.report
