"""Adagrad (Duchi, Hazan and Singer 2011), as torch.optim.Adagrad computes it."""
from __future__ import annotations

import numpy as np
import torch
from torch.optim.adagrad import adagrad as _torch_adagrad

from psrec.ev import _kernels
from psrec.ev.optim.base import SlotSpec, SparseOptimizer, register_optimizer

__all__ = ["Adagrad"]


@register_optimizer("adagrad")
class Adagrad(SparseOptimizer):
    """Per coordinate: acc += g^2; w -= lr * g / (sqrt(acc) + eps).

    Slot "accum" (R, D) float32 starts at `initial_accumulator`. `apply_rows` runs the
    fused kernel `psrec.ev._kernels.apply_adagrad` on the rows where they lie (freq, version,
    accumulator and values in one pass); `update`, on a gathered block, runs torch's own
    kernel and is the reference the kernel is tested against.
    """

    def slots(self) -> tuple[SlotSpec, ...]:
        return (SlotSpec("accum", True, "float32", self.cfg.initial_accumulator),)

    def apply_rows(self, values: np.ndarray, slots: dict[str, np.ndarray], meta: np.ndarray,
                   rows: np.ndarray, grads: np.ndarray, counts: np.ndarray, step: int) -> None:
        _kernels.apply_adagrad(values, slots["accum"], meta, rows, grads, counts, int(step), float(self.cfg.lr),
                               float(self.cfg.eps))

    def update(self, w: np.ndarray, g: np.ndarray, slots: dict[str, np.ndarray], step: int = 1) -> None:
        tw, tg, ta = torch.from_numpy(w), torch.from_numpy(g), torch.from_numpy(slots["accum"])
        # lr_decay = 0 makes the step count irrelevant; a throwaway tensor satisfies the API.
        _torch_adagrad([tw], [tg], [ta], [torch.zeros((), dtype=torch.float32)], fused=True,
                       lr=self.cfg.lr, weight_decay=0.0, lr_decay=0.0, eps=self.cfg.eps, maximize=False)
