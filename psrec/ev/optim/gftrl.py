"""Group FTRL: FTRL with a group-lasso penalty on each embedding row (xDeepInt, Yan and Li 2020).

The l1 term acts on the row's norm instead of each coordinate, so a whole row becomes exactly
zero at once: an unimportant id's embedding vanishes and becomes an eviction candidate.
"""
from __future__ import annotations

import math

import numpy as np

from psrec.ev.optim.base import register_optimizer
from psrec.ev.optim.ftrl import FTRL

__all__ = ["GFTRL"]


@register_optimizer("gftrl")
class GFTRL(FTRL):  # same slots (z, n) and per-coordinate denominator; row-wise threshold
    """Per row i of width d, with alpha = lr and coordinate-wise n, z:
    sigma = (sqrt(n + g^2) - sqrt(n)) / alpha;  z += g - sigma * w;  n += g^2;
    w_i = 0 if ||z_i|| <= l1 sqrt(d) else z_i (l1 sqrt(d) / ||z_i|| - 1) / ((beta + sqrt(n)) / alpha + l2).

    Slots "z" and "n" (R, D) float32, as for FTRL; fresh rows get the z that reproduces their
    initial values.
    """

    def init_slots(self, values: np.ndarray, slots: dict[str, np.ndarray]) -> None:
        # With n equal across the row (true for a fresh row), z = -(w * denom + l1 sqrt(d) w / ||w||)
        # maps back to w through the closed form; a zero row keeps z = 0.
        w = values.astype(np.float64)
        d = self._denom(slots["n"].astype(np.float64))
        norm = np.linalg.norm(w, axis=1, keepdims=True)
        unit = np.divide(w, norm, out=np.zeros_like(w), where=norm > 0)
        slots["z"][...] = -(w * d + self.cfg.l1 * math.sqrt(self.dim) * unit)

    def update(self, w: np.ndarray, g: np.ndarray, slots: dict[str, np.ndarray], step: int = 1) -> None:
        c = self.cfg
        z, n = self._accumulate(w, g, slots)
        thresh = np.float32(c.l1 * math.sqrt(self.dim))
        norm = np.linalg.norm(z, axis=1, keepdims=True)  # (U, 1)
        keep = norm > thresh
        scale = np.where(keep, thresh / np.where(keep, norm, 1) - 1, 0).astype(np.float32)
        w[...] = z * scale / self._denom(n).astype(np.float32)
