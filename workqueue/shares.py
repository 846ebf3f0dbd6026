"""Speed-proportional shares of a fixed global batch (load-balanced BSP).

A synchronous step lasts as long as its slowest worker. Keeping the global batch fixed and
giving each worker a share proportional to its measured speed (rows per busy second,
smoothed) makes every worker finish its part at about the same time, so a 4x straggler
costs the job its lost capacity, not 4x. The update is unchanged when each worker weights
its mean loss by `share / global rows` (the step then averages over the same union of rows).

Pure numpy, deterministic: every worker that feeds the same measurements in the same order
gets the same split, so synchronous workers can each run a replica of this state machine
from one all-reduced vector instead of a round trip to a central queue per step.

Example (4 workers, the second 4x slower; speeds in rows/s):
    >>> s = SpeedShares(4, SharesConfig(smoothing=1.0))
    >>> s.split(1024)                     # nothing measured yet: equal shares
    [256, 256, 256, 256]
    >>> s.observe([256, 256, 256, 256], [1.0, 4.0, 1.0, 1.0]); s.split(1024)
    [315, 79, 315, 315]
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["SharesConfig", "SpeedShares", "apportion"]


@dataclass(frozen=True)
class SharesConfig:
    """How shares follow the workers' measured speeds.

    Args:
        smoothing: weight of a new speed measurement in the exponential moving average
            (1 = the last step only). A step's busy time is noisy on shared cores; 0.3
            follows a change within ~5 steps and damps a one-step blip to a third.
        min_share: the smallest share, as a fraction of the equal share (global / N); it
            keeps a very slow worker measured (a worker with no rows has no speed).

    Example:
        >>> SharesConfig(smoothing=0.5).min_share
        0.05
    """

    smoothing: float = 0.3
    min_share: float = 0.05

    def __post_init__(self) -> None:
        if not 0.0 < self.smoothing <= 1.0:
            raise ValueError(f"shares.smoothing must be in (0, 1], got {self.smoothing}")
        if not 0.0 <= self.min_share <= 1.0:
            raise ValueError(f"shares.min_share must be in [0, 1], got {self.min_share}")


def apportion(total: int, weights: Sequence[float], minimum: int = 0) -> list[int]:
    """Integer shares summing to `total`, proportional to `weights` (largest remainder,
    ties to the lower index), each at least `minimum` (when `minimum * N <= total`).

    >>> apportion(10, [1, 1, 1]), apportion(100, [3, 1], minimum=40)
    ([4, 3, 3], [60, 40])
    """
    n = len(weights)
    if n == 0:
        return []
    w = np.asarray(weights, dtype=np.float64)
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        w = np.ones(n)
    minimum = minimum if minimum * n <= total else total // n
    pinned = np.zeros(n, dtype=bool)  # workers held at the minimum
    while True:  # lift those whose proportional part is below the minimum, share the rest among the others
        free = total - minimum * int(pinned.sum())
        wf = np.where(pinned, 0.0, w)
        exact = free * wf / wf.sum() if wf.sum() > 0 else np.zeros(n)
        low = ~pinned & (exact < minimum)
        if not low.any():
            break
        pinned |= low
    base = np.where(pinned, minimum, np.floor(exact)).astype(np.int64)
    left = total - int(base.sum())
    order = sorted(np.flatnonzero(~pinned).tolist(), key=lambda i: (-(exact[i] - np.floor(exact[i])), i))
    for i in order[:left]:
        base[i] += 1
    return [int(b) for b in base]


class SpeedShares:
    """Smoothed per-worker speeds and the shares of a global batch they give.

    Args:
        workers: N.
        cfg: smoothing and the minimum share.
    """

    def __init__(self, workers: int, cfg: SharesConfig | None = None) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = workers
        self.cfg = cfg or SharesConfig()
        self.speeds = np.full(workers, np.nan)  # (N,) rows per busy second; NaN: not measured yet

    def observe(self, rows: Sequence[float], seconds: Sequence[float]) -> None:
        """Fold in one step: worker w trained `rows[w]` rows in `seconds[w]` busy seconds
        (a worker with no rows or no time is left as it was)."""
        a = self.cfg.smoothing
        for w, (n, t) in enumerate(zip(rows, seconds)):
            if n > 0 and t > 0 and math.isfinite(t):
                v = n / t
                old = self.speeds[w]
                self.speeds[w] = v if np.isnan(old) else (1 - a) * old + a * v

    def weights(self) -> np.ndarray:
        """(N,) relative speeds; a worker not measured yet counts as the mean of the others."""
        s = self.speeds
        if np.all(np.isnan(s)):
            return np.ones(self.workers)
        return np.where(np.isnan(s), np.nanmean(s), s)

    def split(self, total: int) -> list[int]:
        """Rows of each worker in a step of `total` rows (sums to `total`)."""
        minimum = max(1, int(self.cfg.min_share * total / self.workers)) if total >= self.workers else 0
        return apportion(total, self.weights(), minimum)
