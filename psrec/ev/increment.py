"""Incremental exports (DeepRec's incremental checkpoint): between full exports, only the rows
whose version moved past the base's step, merged back onto the base on restore.

A row's version is the global step of its latest update, and a table's step the largest it
applied, so the rows an increment must hold are exactly those with version > the base
export's step: valid when exports are taken at a quiescent point (no push in flight) and every
later update carries a larger step, as the runs' checkpoints are (local, sync and async PS).
Rows that vanish (eviction) are caught by the increment's `live_keys`, written whenever the
table has ever evicted. Admission-filter state, counters and the step are the increment's own.

    >>> import numpy as np
    >>> from psrec.ev import EmbeddingVariable, EVConfig
    >>> ev = EmbeddingVariable(EVConfig(dim=2), name="t")
    >>> ev.apply_gradients(np.array([1, 2, 3]), np.ones((3, 2), np.float32), step=1)
    >>> base = ev.snapshot()
    >>> ev.apply_gradients(np.array([3, 4]), np.ones((2, 2), np.float32), step=2)
    >>> delta = ev.snapshot(since_step=base.step)
    >>> delta.keys.tolist()
    [3, 4]
    >>> merged = apply_increment(base, delta, base.step)
    >>> bool((merged.values == ev.snapshot().values).all()), merged.keys.tolist()
    (True, [1, 2, 3, 4])
"""
from __future__ import annotations

import dataclasses

import numpy as np

from psrec.ev.export import EVSnapshot

__all__ = ["apply_increment"]


def apply_increment(base: EVSnapshot, delta: EVSnapshot, since_step: int,
                    live_keys: np.ndarray | None = None) -> EVSnapshot:
    """The table `delta` (an increment of rows updated after `since_step`) describes, given its
    base `base` (the whole table at step `since_step`).

    live_keys: (L,) int64 ascending, every key the table held at the increment (None: no row
    was removed since the base). Raises ValueError when the increment does not continue this
    base (another table, a base at another step, incompatible slots)."""
    if (delta.name, delta.dim, delta.optimizer, delta.filter_kind, set(delta.slots)) != \
            (base.name, base.dim, base.optimizer, base.filter_kind, set(base.slots)):
        raise ValueError(f"increment of table {delta.name!r} does not continue the base export of {base.name!r} "
                         "(name, dim, optimizer, filter or slots differ)")
    if base.step != since_step:
        raise ValueError(f"table {delta.name!r}: the increment follows step {since_step}, its base is at step "
                         f"{base.step} (a broken chain)")
    keep = ~np.isin(base.keys, delta.keys, assume_unique=True)  # base rows the increment does not replace
    if live_keys is not None:
        keep &= np.isin(base.keys, live_keys, assume_unique=True)
        missing = ~np.isin(delta.keys, live_keys, assume_unique=True)
        if missing.any():
            raise ValueError(f"table {delta.name!r}: the increment holds key {int(delta.keys[missing][0])}, "
                             "which its live keys do not")
    keys = np.concatenate([base.keys[keep], delta.keys])
    order = np.argsort(keys, kind="stable")

    def merged(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.concatenate([a[keep], b])[order]

    out = dataclasses.replace(
        delta, keys=keys[order], values=merged(base.values, delta.values), freqs=merged(base.freqs, delta.freqs),
        versions=merged(base.versions, delta.versions),
        slots={k: merged(base.slots[k], delta.slots[k]) for k in base.slots})
    out.validate()
    return out
