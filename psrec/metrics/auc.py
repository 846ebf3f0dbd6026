"""Exact AUC and logloss."""
from __future__ import annotations

import numpy as np

__all__ = ["auc", "logloss", "midranks"]


def midranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of x (n,), ties sharing their average rank: (n,) float64."""
    order = np.argsort(x, kind="mergesort")
    s = x[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    ends = np.r_[starts[1:], len(s)]
    r = np.empty(len(x))
    r[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return r


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Exact ROC AUC = P(score_pos > score_neg) + 0.5 P(tie), by the rank-sum (Mann-Whitney) identity.

    labels: (n,) in {0, 1}; scores: (n,) any real. Tied scores get their average rank, so a
    tie between a positive and a negative counts one half. O(n log n).
    Returns nan when only one class is present.
    """
    labels = np.asarray(labels).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if labels.shape != scores.shape:
        raise ValueError(f"labels {labels.shape} and scores {scores.shape} differ in shape")
    pos = labels > 0.5
    n_pos = int(pos.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = midranks(scores)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def logloss(labels: np.ndarray, probs: np.ndarray, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy in nats; probabilities clipped to [eps, 1 - eps]."""
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    p = np.clip(np.asarray(probs, dtype=np.float64).reshape(-1), eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))
