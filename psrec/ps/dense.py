"""Dense parameters of a model as one flat vector, and the ways workers keep them in sync.

    ps         the vector is sliced across the parameter servers; workers pull it with the
               step's sparse pull and push its gradient with the sparse push.
    allreduce  every worker holds a replica; gradients are averaged with an all-reduce and
               each replica applies the same optimizer step (hybrid training, as in Persia).
"""
from __future__ import annotations

import threading
from abc import ABC, abstractmethod

import numpy as np
import torch
from torch import nn

__all__ = ["flat_params", "set_flat_params", "flat_grads", "set_flat_grads", "slices",
           "AllReduce", "ThreadAllReduce", "TorchAllReduce"]


def flat_params(model: nn.Module) -> np.ndarray:
    """(P,) float32 copy of every parameter, in `model.parameters()` order."""
    return torch.nn.utils.parameters_to_vector(model.parameters()).detach().numpy().copy()


def set_flat_params(model: nn.Module, flat: np.ndarray) -> None:
    """Copy `flat` into the parameters. (Not `vector_to_parameters`: that makes every
    parameter a view of `flat`, so replicas built from one array would share memory.)"""
    t = torch.as_tensor(np.array(flat, np.float32, copy=True))  # Ray hands out read-only arrays
    pos = 0
    with torch.no_grad():
        for p in model.parameters():
            n = p.numel()
            p.copy_(t[pos:pos + n].view_as(p))
            pos += n
    if pos != t.numel():
        raise ValueError(f"flat vector has {t.numel()} values, model has {pos}")


def flat_grads(model: nn.Module) -> np.ndarray:
    """(P,) float32 gradient of every parameter (zeros where a parameter got none)."""
    parts = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in model.parameters()]
    return torch.cat(parts).numpy() if parts else np.zeros(0, np.float32)


def set_flat_grads(model: nn.Module, flat: np.ndarray) -> None:
    t = torch.from_numpy(np.ascontiguousarray(flat, np.float32))
    pos = 0
    for p in model.parameters():
        n = p.numel()
        p.grad = t[pos:pos + n].view_as(p).clone()
        pos += n


def slices(total: int, parts: int) -> list[tuple[int, int]]:
    """Contiguous, nearly equal [start, end) slices of `total` elements over `parts` holders."""
    bounds = np.linspace(0, total, parts + 1).round().astype(int)
    return [(int(bounds[i]), int(bounds[i + 1])) for i in range(parts)]


class AllReduce(ABC):
    """Averages a flat gradient across all workers of a group."""

    @abstractmethod
    def mean(self, grad: np.ndarray) -> np.ndarray:
        """(P,) float32 -> (P,) float32 average over the group's workers."""


class ThreadAllReduce(AllReduce):
    """For in-process workers running on threads: a barrier-synchronised average.

    Every worker calls `mean` once per step; the call returns when all have contributed.
    """

    def __init__(self, world_size: int) -> None:
        self.world_size = world_size
        self._barrier = threading.Barrier(world_size)
        self._lock = threading.Lock()
        self._acc: np.ndarray | None = None
        self._result: np.ndarray | None = None

    def mean(self, grad: np.ndarray) -> np.ndarray:
        with self._lock:
            self._acc = grad.astype(np.float32).copy() if self._acc is None else self._acc + grad
        if self._barrier.wait() == 0:  # exactly one thread publishes the result
            self._result = self._acc / np.float32(self.world_size)
            self._acc = None
        self._barrier.wait()
        out = self._result
        self._barrier.wait()  # nobody starts the next round before everyone has read this one
        return out.copy()


class TorchAllReduce(AllReduce):
    """`torch.distributed.all_reduce` on an initialised process group (gloo on CPU)."""

    def __init__(self, group=None) -> None:
        import torch.distributed as dist

        self._dist = dist
        self.group = group
        self.world_size = dist.get_world_size(group)

    def mean(self, grad: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(np.ascontiguousarray(grad, np.float32)).clone()
        self._dist.all_reduce(t, op=self._dist.ReduceOp.SUM, group=self.group)
        return (t / self.world_size).numpy()
