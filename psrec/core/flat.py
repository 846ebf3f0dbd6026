"""A model's dense parameters as one flat float32 vector: how PS shards slice them, how the
hybrid and collective paths all-reduce their gradients, and how replicas start identical.

Order is `model.parameters()` order everywhere, so a vector moves between replicas of one
model unchanged.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

__all__ = ["flat_params", "set_flat_params", "flat_grads", "set_flat_grads", "slices"]


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
