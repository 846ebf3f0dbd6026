"""Feature admission: a key earns a row only after `min_freq` occurrences in updates.

Until then lookups return zeros, its gradients are dropped and only a counter is kept (a few
bytes, not a row of D floats plus optimizer slots). The update in which the count reaches
`min_freq` admits the key: its row is created and that update's gradient applies to it.

Filters by name (`FilterConfig.kind`): "none", "counter" (exact counts per waiting key,
here) and "bloom" (a counting Bloom filter with bounded memory, `psrec.ev.bloom`). Each is a
small class found through `make_filter`.

A filter only ever sees keys that have no row. Once admitted, a key's counter is dropped
(counter filter) or left in place (Bloom filter, which cannot enumerate or delete keys):
after eviction the first re-admits only after `min_freq` new occurrences, the second at once.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from psrec.ev.config import FilterConfig
from psrec.ev.hashtable import HashTable

__all__ = ["AdmissionFilter", "NoFilter", "CounterFilter", "register_filter", "make_filter",
           "filter_kinds"]

_REGISTRY: dict[str, type[AdmissionFilter]] = {}


def register_filter(kind: str):
    """Class decorator: make an AdmissionFilter subclass available as `FilterConfig.kind`."""

    def deco(cls: type[AdmissionFilter]) -> type[AdmissionFilter]:
        if kind in _REGISTRY and _REGISTRY[kind] is not cls:
            raise ValueError(f"filter kind {kind!r} is registered twice")
        cls.kind = kind
        _REGISTRY[kind] = cls
        return cls

    return deco


def make_filter(cfg: FilterConfig, seed: int) -> AdmissionFilter:
    """The filter `cfg.kind` configured by `cfg`; `seed` seeds any hashing it does."""
    import psrec.ev.bloom  # noqa: F401  (registers "bloom")

    try:
        cls = _REGISTRY[cfg.kind]
    except KeyError:
        raise ValueError(f"filter.kind: unknown {cfg.kind!r}; known: {', '.join(sorted(_REGISTRY))}") from None
    return cls(cfg, seed)


def filter_kinds() -> list[str]:
    import psrec.ev.bloom  # noqa: F401

    return sorted(_REGISTRY)


class AdmissionFilter(ABC):
    """Counts occurrences of keys that have no row and decides when they get one.

    Args:
        cfg: the filter section of the table's EVConfig.
        seed: the table's seed.
    """

    kind: ClassVar[str] = ""
    exact: ClassVar[bool] = True  # False when `waiting` is an estimate

    def __init__(self, cfg: FilterConfig, seed: int) -> None:
        self.cfg = cfg
        self.seed = seed
        self.admitted_total = 0  # keys this filter let through since creation (or restore)

    @abstractmethod
    def admit(self, keys: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Record `counts` (M,) int64 for distinct row-less `keys` (M,) int64.

        Returns (admitted (M,) bool, seen (M,) int64): which keys reach `min_freq` with this
        update, and each key's occurrences so far including this update (the freq an admitted
        key starts with; an upper-bound estimate for approximate filters).
        """

    @abstractmethod
    def seen(self, keys: np.ndarray) -> np.ndarray:
        """Occurrences recorded so far for row-less `keys` (N,) -> (N,) int64 (no update)."""

    @property
    @abstractmethod
    def waiting(self) -> int:
        """Keys seen but not admitted yet (an estimate when `exact` is False)."""

    @property
    def nbytes(self) -> int:
        """Memory the filter holds, in bytes."""
        return 0

    @abstractmethod
    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """(arrays, JSON-able metadata) that `restore` reads back bit-exactly."""

    @abstractmethod
    def restore(self, parts: list[tuple[dict[str, np.ndarray], dict[str, Any]]],
                keep: Callable[[np.ndarray], np.ndarray]) -> None:
        """Replace this filter's state with the union of `parts` (one per exported shard),
        keeping only the keys for which `keep(keys)` is True (where keys are enumerable)."""


@register_filter("none")
class NoFilter(AdmissionFilter):
    """Every key is admitted on its first update."""

    def admit(self, keys: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.admitted_total += len(keys)
        return np.ones(len(keys), dtype=bool), counts.astype(np.int64, copy=True)

    def seen(self, keys: np.ndarray) -> np.ndarray:
        return np.zeros(len(keys), dtype=np.int64)

    @property
    def waiting(self) -> int:
        return 0

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        return {}, {"admitted_total": self.admitted_total}

    def restore(self, parts, keep) -> None:
        self.admitted_total = sum(int(m.get("admitted_total", 0)) for _, m in parts)


@register_filter("counter")
class CounterFilter(AdmissionFilter):
    """Exact counts for waiting keys: a key -> slot hash table and an int64 count per slot.

    About 40 bytes per waiting key (16-byte hash slots at load <= 0.5, plus the count),
    against `4 * D` bytes of values plus optimizer slots for a row.
    """

    def __init__(self, cfg: FilterConfig, seed: int) -> None:
        super().__init__(cfg, seed)
        self._table = HashTable()
        self._counts = np.zeros(1024, dtype=np.int64)  # indexed by the table's rows

    def admit(self, keys: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = self._table.find(keys)
        known = rows >= 0
        seen = counts.astype(np.int64, copy=True)
        seen[known] += self._counts[rows[known]]
        admitted = seen >= self.cfg.min_freq
        self._table.delete(keys[known & admitted])
        stay = known & ~admitted
        self._counts[rows[stay]] = seen[stay]
        fresh = ~known & ~admitted
        new_rows = self._table.insert(keys[fresh])
        self._grow(self._table.high_water)
        self._counts[new_rows] = seen[fresh]
        self.admitted_total += int(np.count_nonzero(admitted))
        return admitted, seen

    def seen(self, keys: np.ndarray) -> np.ndarray:
        rows = self._table.find(keys)
        return np.where(rows >= 0, self._counts[np.maximum(rows, 0)], 0)

    @property
    def waiting(self) -> int:
        return len(self._table)

    @property
    def nbytes(self) -> int:
        return self._table.nbytes + self._counts.nbytes

    def waiting_items(self) -> tuple[np.ndarray, np.ndarray]:
        """(keys (W,) int64 sorted, counts (W,) int64) of every waiting key."""
        keys, rows = self._table.items()
        order = np.argsort(keys, kind="stable")
        return keys[order], self._counts[rows[order]]

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        keys, counts = self.waiting_items()
        return {"keys": keys, "counts": counts}, {"admitted_total": self.admitted_total,
                                                  "waiting": len(keys)}

    def restore(self, parts, keep) -> None:
        keys = [a["keys"] for a, _ in parts if "keys" in a]
        counts = [a["counts"] for a, _ in parts if "counts" in a]
        self._table = HashTable()
        self._counts = np.zeros(1024, dtype=np.int64)
        self.admitted_total = sum(int(m.get("admitted_total", 0)) for _, m in parts)
        if not keys:
            return
        k = np.concatenate(keys).astype(np.int64, copy=False)
        c = np.concatenate(counts).astype(np.int64, copy=False)
        mine = keep(k)
        k, c = k[mine], c[mine]
        if len(np.unique(k)) != len(k):
            raise ValueError("filter state: the same waiting key appears in two exports")
        rows = self._table.insert(k)
        self._grow(self._table.high_water)
        self._counts[rows] = c

    def _grow(self, n: int) -> None:
        if n > len(self._counts):
            grown = np.zeros(max(n, 2 * len(self._counts)), dtype=np.int64)
            grown[:len(self._counts)] = self._counts
            self._counts = grown
