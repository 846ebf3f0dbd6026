"""Raw batches: de-duplicate key draws, expand distinct rows back to the draws, sum gradients.

A trainer's batch holds every key occurrence (128K draws of ~34K distinct keys on a Zipf(1.1)
stream). The stores work on distinct keys; these three functions are the way there and back,
each one compiled pass (`psrec.ev._dedup_kernels`), with no sort of the N draws anywhere:

* `unique(keys)` -> `Unique(keys, inverse, counts)`, exactly `np.unique(keys,
  return_inverse=True, return_counts=True)` (distinct keys ascending) but for the inverse's
  dtype (int32): a hash pass over the draws, then a radix sort of the distinct keys only.
* `expand(rows, inverse)`: distinct rows (U, D) -> per-draw rows (N, D).
* `segment_sum(grads, inverse, n)`: per-draw gradients (N, D) -> per-key sums (n, D), the
  adjoint of `expand`, by the same inverse (no second sort).

Example:
    >>> u = unique(np.array([7, 3, 7, 7], dtype=np.int64))
    >>> u.keys.tolist(), u.inverse.tolist(), u.counts.tolist()
    ([3, 7], [1, 0, 1, 1], [1, 3])
    >>> segment_sum(np.ones((4, 2), np.float32), u.inverse, 2).tolist()
    [[1.0, 1.0], [3.0, 3.0]]
"""
from __future__ import annotations

import threading
from typing import NamedTuple

import numpy as np

from psrec.ev import _dedup_kernels

__all__ = ["Unique", "unique", "expand", "segment_sum"]

_MAX_DRAWS = (1 << 31) - 1  # the inverse is int32


class Unique(NamedTuple):
    """A batch's distinct keys: `keys` (U,) int64 ascending; `inverse` (N,) int32 with
    draws == keys[inverse]; `counts` (U,) int64 occurrences of each key."""

    keys: np.ndarray
    inverse: np.ndarray
    counts: np.ndarray


class _Scratch(threading.local):
    """Per-thread scratch of `unique`: the slot map is kept all -1 between calls (each call
    resets only the slots it used), so its cost is paid once per size, not per batch."""

    def __init__(self) -> None:
        self.ids = np.empty(0, np.int32)
        self.n = 0

    def arrays(self, n: int) -> np.ndarray:
        if 2 * n > len(self.ids):
            self.ids = np.full(1 << (2 * n - 1).bit_length(), -1, np.int32)
        if n > self.n:
            self.n = max(n, 2 * self.n)
            self.uniq, self.counts, self.used = (np.empty(self.n, np.int64) for _ in range(3))
        return self.ids


_scratch = _Scratch()


def unique(keys: np.ndarray) -> Unique:
    """Distinct `keys` (N,) int64 with inverse indices and counts (see `Unique`)."""
    if not isinstance(keys, np.ndarray) or keys.dtype != np.int64 or keys.ndim != 1:
        what = f"{keys.dtype} {keys.shape}" if isinstance(keys, np.ndarray) else type(keys).__name__
        raise TypeError(f"unique: keys must be a 1-D int64 numpy array, got {what}")
    n = len(keys)
    if n > _MAX_DRAWS:
        raise ValueError(f"unique: {n} keys; at most {_MAX_DRAWS} per call (int32 inverse)")
    inverse = np.empty(n, np.int32)
    if n == 0:
        return Unique(np.empty(0, np.int64), inverse, np.empty(0, np.int64))
    s = _scratch
    ids = s.arrays(n)
    u = int(_dedup_kernels.unique_first(np.ascontiguousarray(keys), ids, inverse, s.uniq, s.counts, s.used))
    out_keys, out_counts = np.empty(u, np.int64), np.empty(u, np.int64)
    _dedup_kernels.sort_unique(s.uniq[:u], s.counts[:u], inverse, out_keys, out_counts,
                         np.empty(u, np.uint64), np.empty(u, np.int64), s.used[:u])
    return Unique(out_keys, inverse, out_counts)


def _check_inverse(inverse: np.ndarray, n: int, what: str) -> np.ndarray:
    """The kernels index without bounds checks: refuse an inverse that would leave (n, D)."""
    if not isinstance(inverse, np.ndarray) or inverse.dtype != np.int32 or inverse.ndim != 1:
        got = f"{inverse.dtype} {inverse.shape}" if isinstance(inverse, np.ndarray) else type(inverse).__name__
        raise TypeError(f"{what}: inverse must be a 1-D int32 numpy array (from unique), got {got}")
    if len(inverse) and (int(inverse.min()) < 0 or int(inverse.max()) >= n):
        raise ValueError(f"{what}: inverse indices must lie in [0, {n})")
    return np.ascontiguousarray(inverse)


def expand(rows: np.ndarray, inverse: np.ndarray) -> np.ndarray:
    """rows[inverse]: distinct rows (U, D) float32 -> per-draw rows (N, D) float32, new."""
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    if rows.ndim != 2:
        raise ValueError(f"expand: rows must be (U, D), got shape {rows.shape}")
    inverse = _check_inverse(inverse, len(rows), "expand")
    out = np.empty((len(inverse), rows.shape[1]), np.float32)
    _dedup_kernels.expand_rows(rows, inverse, out)
    return out


def segment_sum(grads: np.ndarray, inverse: np.ndarray, n: int) -> np.ndarray:
    """Per-key sums of per-draw `grads` (N, D) float32 -> (n, D) float32, new: row u adds
    grads[i] for every i with inverse[i] == u, in draw order (deterministic)."""
    grads = np.ascontiguousarray(grads, dtype=np.float32)
    if grads.ndim != 2 or len(grads) != len(inverse):
        raise ValueError(f"segment_sum: grads must be ({len(inverse)}, D), got shape {grads.shape}")
    inverse = _check_inverse(inverse, n, "segment_sum")
    out = np.empty((n, grads.shape[1]), np.float32)
    _dedup_kernels.segment_sum(grads, inverse, out)
    return out
