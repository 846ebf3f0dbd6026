"""Lazy Adam (Kingma and Ba 2015) with global-step bias correction, as TF's LazyAdam and
torch.optim.SparseAdam compute it.

A dense Adam decays every row's moments every step; a sparse ("lazy") one updates the
moments of the rows in the batch only, and corrects them by the global step t: the number of
updates the table has seen, not the row. The per-row variant (DeepRec's AdamAsync) is
`psrec.ev.optim.adam_async`.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from psrec.ev.optim.base import SlotSpec, SparseOptimizer, register_optimizer

__all__ = ["Adam"]


@register_optimizer("adam")
class Adam(SparseOptimizer):
    """Per touched row, at global step t = max(step, 1):
    m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
    w -= lr sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)   (torch.optim.SparseAdam's form).

    Slots: "m", "v" (R, D) float32. t is the `step` of the update, the trainer's global step
    (1 for the first step; a step 0 counts as 1), so every shard of a table corrects alike.
    """

    def slots(self) -> tuple[SlotSpec, ...]:
        return (SlotSpec("m", True, "float32", 0.0), SlotSpec("v", True, "float32", 0.0))

    def update(self, w: np.ndarray, g: np.ndarray, slots: dict[str, np.ndarray], step: int = 1) -> None:
        c = self.cfg
        t = max(int(step), 1)
        # the scalar in double, as SparseAdam computes it, then one float32 multiply per coordinate
        step_size = c.lr * math.sqrt(1.0 - c.beta2 ** t) / (1.0 - c.beta1 ** t)
        tw, tg = torch.from_numpy(w), torch.from_numpy(g)
        m, v = torch.from_numpy(slots["m"]), torch.from_numpy(slots["v"])
        # SparseAdam's operation order: m += (g - m)(1 - b1); v += (g^2 - v)(1 - b2)
        m.add_(tg.sub(m).mul_(1.0 - c.beta1))
        v.add_(tg.mul(tg).sub_(v).mul_(1.0 - c.beta2))
        tw.add_(m.div(v.sqrt().add_(c.eps)).mul_(-step_size))
