"""Plain SGD: w -= lr * g."""
from __future__ import annotations

import numpy as np

from psrec.ev.optim.base import SparseOptimizer, register_optimizer

__all__ = ["SGD"]


@register_optimizer("sgd")
class SGD(SparseOptimizer):
    """w <- w - lr * g; no slots. Matches torch.optim.SGD without momentum."""

    def update(self, w: np.ndarray, g: np.ndarray, slots: dict[str, np.ndarray]) -> None:
        w -= np.float32(self.cfg.lr) * g
