"""Backup workers for synchronous PS training (`ps.backup = b`).

Chen et al., "Revisiting Distributed Synchronous SGD" (2016), on parameter servers: run
N + b workers, each training one batch of the round's (N + b) x batch_size interleaved rows;
the shards apply a step once N pushes for it are in (`PSShard(num_workers=N)`). Per step, on
a worker, after backward and after the injected slowdown (which a late gradient must really
be late for):

1. take a ticket from the job's arrival board (`workqueue.arrivals`: a Ray actor, or a
   locked counter in process); tickets 1..N push, later ones drop their gradient;
2. a worker still busy when N tickets are gone stops (its gradient would be dropped anyway);
3. a dropped worker sends no push, and its next pull still waits for the step (the first
   N's mean) to be applied, as every sync pull does.

Only workers holding tickets push, so every shard applies the same N workers' gradients:
the update is the mean loss gradient over their rows, i.e. local training on their union
(plain SGD). A dropped worker's lookups still happened (its rows were fetched, and created
when new). The ticket's round trip is booked as compute (one small actor call).
"""
from __future__ import annotations

import time

import torch

from psrec.core.flat import flat_grads
from psrec.core.step import DenseSeconds
from psrec.ps.dense import OnPS
from workqueue.arrivals import ArrivalBoard, BackupTickets

__all__ = ["PSBackup"]


class PSBackup(OnPS):
    """The dense hook of a backup-workers PS worker (module doc): dense parameters on the PS.

    Args:
        model, client: as `OnPS`.
        board: the job's arrival board.
        needed: N, the gradients applied per step.
        stragglers: `workqueue.stragglers.Stragglers` or None; index: this worker.
        backup: b (the step's dropped rows are b x this worker's rows: interleaved batches
            are all the same size).
    """

    def __init__(self, model, client, board: ArrivalBoard, needed: int, stragglers=None, index: int = 0,
                 backup: int = 1) -> None:
        super().__init__(model, client)
        self.tickets = BackupTickets(board, needed, stragglers, index)
        self.backup = backup
        self.rows = 0
        self._t_pull = time.perf_counter()
        self.last = {"applied": True, "dropped_rows": 0, "straggler": 0.0}
        model.register_forward_hook(self._on_output)

    def _on_output(self, module, args, output) -> None:
        if torch.is_grad_enabled():
            self.rows = int(output.shape[0])

    def begin(self, weight: float | None) -> None:
        self.tickets.next_step()
        self.rows = 0

    def after_pull(self) -> None:
        super().after_pull()
        self._t_pull = time.perf_counter()

    def exchange(self) -> DenseSeconds:
        applied, slept = self.tickets.take(self.rows, time.perf_counter() - self._t_pull)
        if applied:
            self.client.pending_dense_grad = flat_grads(self.model)
        else:
            self.client.drop_push = True
        self.last = {"applied": applied, "dropped_rows": self.backup * self.rows, "straggler": slept}
        return DenseSeconds()  # slowdown and ticket are compute, as the step books the call
