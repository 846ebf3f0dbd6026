"""Plain SGD: w -= lr * g."""
from __future__ import annotations

import numpy as np

from psrec.ev import _kernels
from psrec.ev.optim.base import SparseOptimizer, register_optimizer

__all__ = ["SGD"]


@register_optimizer("sgd")
class SGD(SparseOptimizer):
    """w <- w - lr * g; no slots. Matches torch.optim.SGD without momentum.

    `apply_rows` runs the fused kernel `psrec.ev._kernels.apply_sgd`; `update` is the same
    math on a gathered block (kept for callers of the block interface and as the reference).
    """

    def apply_rows(self, values: np.ndarray, slots: dict[str, np.ndarray], meta: np.ndarray,
                   rows: np.ndarray, grads: np.ndarray, counts: np.ndarray, step: int) -> None:
        _kernels.apply_sgd(values, meta, rows, grads, counts, int(step), float(self.cfg.lr))

    def update(self, w: np.ndarray, g: np.ndarray, slots: dict[str, np.ndarray], step: int = 1) -> None:
        w -= np.float32(self.cfg.lr) * g
