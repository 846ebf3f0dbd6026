"""Lazy Adam with a step count per row: DeepRec's AdamAsync.

Each row corrects its moments by its own number of updates, so a rare key's first update is
a full-size step however late it comes. For a row touched every step this is exactly
torch.optim.Adam; the standard sparse Adam (global step) is `psrec.ev.optim.adam`.
"""
from __future__ import annotations

import numpy as np
import torch

from psrec.ev.optim.base import SlotSpec, SparseOptimizer, register_optimizer

__all__ = ["AdamAsync"]


@register_optimizer("adam_async")
class AdamAsync(SparseOptimizer):
    """Per row r touched for the t-th time:
    m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
    w -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)   (torch.optim.Adam's order).

    Slots: "m", "v" (R, D) float32 and "step" (R,) int64.
    """

    def slots(self) -> tuple[SlotSpec, ...]:
        return (SlotSpec("m", True, "float32", 0.0), SlotSpec("v", True, "float32", 0.0),
                SlotSpec("step", False, "int64", 0))

    def update(self, w: np.ndarray, g: np.ndarray, slots: dict[str, np.ndarray], step: int = 1) -> None:
        c = self.cfg
        count = slots["step"]  # the rows' own counts; the global `step` is not used
        count += 1
        t = count.astype(np.float64)
        bc1 = 1.0 - c.beta1 ** t  # (U,) float64, as torch computes the scalar in double
        bc2_sqrt = np.sqrt(1.0 - c.beta2 ** t)
        tw, tg = torch.from_numpy(w), torch.from_numpy(g)
        m, v = torch.from_numpy(slots["m"]), torch.from_numpy(slots["v"])
        m.lerp_(tg, 1.0 - c.beta1)
        v.mul_(c.beta2).addcmul_(tg, tg, value=1.0 - c.beta2)
        denom = (v.sqrt() / torch.from_numpy(bc2_sqrt.astype(np.float32))[:, None]).add_(c.eps)
        step_size = torch.from_numpy((c.lr / bc1).astype(np.float32))[:, None]  # (U, 1)
        tw.sub_(step_size * (m / denom))
