"""Paired AUC comparison on the same rows: DeLong, DeLong & Clarke-Pearson (1988).

The difference of two models' AUCs on shared evaluation rows, with its standard error from
the structural components (placements) of each positive and negative; the rows' shared
difficulty cancels, so the paired SE is far below either AUC's own.
"""
from __future__ import annotations

import math

import numpy as np

from psrec.metrics.auc import midranks

__all__ = ["delong_diff"]


def _placements(labels: np.ndarray, scores: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """AUC and DeLong's structural components V10 (per positive) and V01 (per negative)."""
    pos = labels > 0.5
    x, y = scores[pos].astype(np.float64), scores[~pos].astype(np.float64)
    m, n = len(x), len(y)
    r_all = midranks(np.r_[x, y])
    v10 = (r_all[:m] - midranks(x)) / n  # share of negatives below each positive (ties 1/2)
    v01 = 1.0 - (r_all[m:] - midranks(y)) / m  # share of positives above each negative
    return float(v10.mean()), v10, v01


def delong_diff(labels: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray) -> tuple[float, float]:
    """AUC(a) - AUC(b) on the same rows and its DeLong standard error (paired: the shared
    rows' difficulty cancels, so the SE is far below either AUC's own SE).

    Example:
        >>> y = np.array([0, 0, 1, 1]); d, se = delong_diff(y, np.array([.1, .2, .3, .4]), np.array([.1, .3, .2, .4]))
        >>> round(d, 4)
        0.25
    """
    a, a10, a01 = _placements(labels, scores_a)
    b, b10, b01 = _placements(labels, scores_b)
    d10, d01 = a10 - b10, a01 - b01
    var = d10.var(ddof=1) / len(d10) + d01.var(ddof=1) / len(d01)
    return a - b, math.sqrt(max(var, 0.0))
