"""A raw batch (every key draw, duplicates included) looked up and updated without a sort.

`EmbeddingVariable.lookup_raw(keys)` de-duplicates the N draws in a hash pass, probes the
table once per distinct key and gathers each draw's row straight into the (N, D) output,
one compiled call (`psrec.ev._raw_kernels`); it returns those rows and a `RawBatch` that
remembers the distinct keys (in order of first occurrence, not sorted: nothing downstream
needs the order), their counts and rows, and each draw's index into them (the inverse).
`EmbeddingVariable.apply_raw(batch, grads)` sums the (N, D) per-draw gradients by that
inverse, in draw order, and updates the distinct rows it resolved, without probing again
while no key was inserted or deleted in between.

The result is that of `unique` + `lookup` + `expand` forward and `segment_sum` +
`apply_gradients` backward, bit for bit: each row's gradient is summed in the same order,
new keys get their rows in key order either way, and the optimizers update rows
independently of the order they are listed in.

Example:
    >>> from psrec.ev import EmbeddingVariable, EVConfig
    >>> ev = EmbeddingVariable(EVConfig(dim=2), name="t")
    >>> out, batch = ev.lookup_raw(np.array([7, 3, 7], dtype=np.int64))
    >>> out.shape, batch.keys.tolist(), batch.inverse.tolist(), batch.counts.tolist()
    ((3, 2), [7, 3], [0, 1, 0], [2, 1])
    >>> ev.apply_raw(batch, np.ones((3, 2), np.float32), step=1)
    >>> ev.metadata(np.array([3, 7], dtype=np.int64))[0].tolist()
    [1, 2]
"""
from __future__ import annotations

import threading
from typing import NamedTuple

import numpy as np

__all__ = ["RawBatch", "scratch"]


class RawBatch(NamedTuple):
    """What `lookup_raw` resolved for a batch of N draws, for its `apply_raw`.

    keys (U,) int64 distinct, in order of first occurrence; inverse (N,) int32 with draws ==
    keys[inverse]; counts (U,) int64 occurrences; rows (U,) int64 (-1: absent at lookup),
    valid while `source` (the variable's hash table) has this `generation`; `init` the
    initial rows the lookup gave the absent keys, which their creation at apply reuses.
    """

    keys: np.ndarray
    inverse: np.ndarray
    counts: np.ndarray
    rows: np.ndarray
    missing: int
    source: object
    generation: int
    init: np.ndarray | None = None  # (M, D) float32 initial rows of the M absent keys, in their order in `keys`


class _Scratch(threading.local):
    """Per-thread scratch of the lookup kernel: the slot map of the de-duplication pass, kept
    all -1 between calls (the kernel resets only the slots it used), and the block of
    distinct rows; allocated once per size, not per batch."""

    def __init__(self) -> None:
        self.ids = np.empty(0, np.int32)
        self.block = np.empty(0, np.float32)


_scratch = _Scratch()


def scratch(n: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    """This thread's scratch for a batch of `n` draws of width `d`: (the all -1 int32 slot map
    (P,), P a power of two >= 2n; a float32 block (n, d))."""
    s = _scratch
    if 2 * n > len(s.ids):
        s.ids = np.full(1 << max(4, (2 * n - 1).bit_length()), -1, np.int32)
    if n * d > len(s.block):
        s.block = np.empty(max(n * d, 2 * len(s.block)), np.float32)
    return s.ids, s.block[:n * d].reshape(n, d)
