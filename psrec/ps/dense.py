"""Where a PS job's dense parameters live: the step's dense hooks (`DenseUpdate`) of the two placements.

    ps         the flat vector is sliced across the parameter servers; workers pull it with
               the step's sparse pull and push its gradient with the sparse push (`OnPS`)
    allreduce  every worker holds a replica; gradients are averaged with one all-reduce over
               the `psrec.comm` seam (the collective path's collectives and traffic log) and
               each replica applies the same optimizer step (hybrid training, as in Persia:
               `HybridAllReduce`)
"""
from __future__ import annotations

import time

import numpy as np
import torch

from psrec.comm.collectives import Collectives
from psrec.comm.traffic import Traffic
from psrec.core.flat import flat_grads, set_flat_grads, set_flat_params
from psrec.core.step import DenseSeconds, DenseUpdate
from psrec.models.base import CTRModel
from psrec.net import NetConfig
from psrec.ps.client import PSClient

__all__ = ["OnPS", "HybridAllReduce"]


class OnPS(DenseUpdate):
    """Dense parameters on the PS: set from the pull, gradients staged for the push.

    Args:
        model, client: the replica and its PS client.
        workers: the pushes a sync shard averages per step (N): a worker training `weight`
            of the step's rows (speed-proportional shares) scales its gradients, dense and
            sparse, by weight x N, so that the shards' mean is the mean loss gradient over
            the round's rows (local training on their union).
    """

    def __init__(self, model: CTRModel, client: PSClient, workers: int = 1) -> None:
        super().__init__(None)
        self.model, self.client, self.workers = model, client, workers
        self.factor = 1.0

    def begin(self, weight: float | None) -> None:
        self.factor = 1.0 if weight is None else weight * self.workers

    def after_pull(self) -> None:
        set_flat_params(self.model, self.client.dense_values)

    def exchange(self) -> DenseSeconds:
        g = flat_grads(self.model)
        self.client.pending_dense_grad = g * np.float32(self.factor) if self.factor != 1.0 else g
        return DenseSeconds()  # staging is compute; the bytes go with the push

    def sparse_scale(self) -> float:
        return self.factor


class HybridAllReduce(DenseUpdate):
    """Replicated dense parameters: the flat gradient is summed over the workers with one
    all-reduce, divided by their number, and every replica steps its own optimizer.

    Args:
        model: this worker's replica.
        comm: the group of all workers (`psrec.comm`: torch.distributed or a ThreadGroup).
        optimizer: the replica's dense optimizer.
        net: the emulated network (None: real time only).
    """

    def __init__(self, model: CTRModel, comm: Collectives, optimizer: torch.optim.Optimizer,
                 net: NetConfig | None = None) -> None:
        super().__init__(optimizer)
        self.model, self.comm, self.net = model, comm, net

    def exchange(self) -> DenseSeconds:
        t = torch.from_numpy(flat_grads(self.model).copy())
        t0 = time.perf_counter()
        self.comm.all_reduce(t, tag="dense")
        seconds = time.perf_counter() - t0
        set_flat_grads(self.model, (t / self.comm.world_size).numpy())
        return DenseSeconds(seconds, seconds)

    def take_traffic(self) -> Traffic:
        return Traffic.of_records(self.comm.log.take(), self.net)
