"""FTRL-Proximal, per coordinate (McMahan et al. 2013, "Ad Click Prediction", Algorithm 1)."""
from __future__ import annotations

import numpy as np

from psrec.ev.optim.base import SlotSpec, SparseOptimizer, register_optimizer

__all__ = ["FTRL"]


@register_optimizer("ftrl")
class FTRL(SparseOptimizer):
    """Per coordinate, with alpha = lr:
    sigma = (sqrt(n + g^2) - sqrt(n)) / alpha;  z += g - sigma * w;  n += g^2;
    w = 0 if |z| <= l1 else -(z - sign(z) l1) / ((beta + sqrt(n)) / alpha + l2).

    Slots "z" and "n" (R, D) float32; n starts at `initial_accumulator`. A fresh row's z is
    set so that the closed form reproduces its initial values (McMahan starts from w = 0,
    which would leave embeddings in a factorised model without gradient).
    """

    def slots(self) -> tuple[SlotSpec, ...]:
        return (SlotSpec("z", True, "float32", 0.0), SlotSpec("n", True, "float32", self.cfg.initial_accumulator))

    def _denom(self, n: np.ndarray) -> np.ndarray:
        c = self.cfg
        return (c.ftrl_beta + np.sqrt(n)) / c.lr + c.l2

    def init_slots(self, values: np.ndarray, slots: dict[str, np.ndarray]) -> None:
        # Invert the closed form: z = -(w * denom + sign(w) * l1) gives back w exactly where w != 0.
        d = self._denom(slots["n"].astype(np.float64))
        w = values.astype(np.float64)
        slots["z"][...] = -(w * d + np.sign(w) * self.cfg.l1)

    def _accumulate(self, w: np.ndarray, g: np.ndarray, slots: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """sigma = (sqrt(n + g^2) - sqrt(n)) / alpha; z += g - sigma * w; n += g^2 (in place);
        returns the updated (z, n). Shared by FTRL and G-FTRL, which differ only in the shrink."""
        z, n = slots["z"], slots["n"]
        n_new = n + g * g
        sigma = (np.sqrt(n_new) - np.sqrt(n)) / np.float32(self.cfg.lr)
        z += g - sigma * w
        n[...] = n_new
        return z, n

    def update(self, w: np.ndarray, g: np.ndarray, slots: dict[str, np.ndarray], step: int = 1) -> None:
        c = self.cfg
        z, n = self._accumulate(w, g, slots)
        shrunk = z - np.sign(z) * np.float32(c.l1)
        w[...] = np.where(np.abs(z) <= c.l1, np.float32(0.0), -shrunk / self._denom(n).astype(np.float32))
