"""Bounded-memory admission: a counting Bloom filter.

For id spaces too large to count exactly, `CountingBloomFilter` keeps `m` small saturating
counters and `k` hash positions per key (double hashing, Kirsch and Mitzenmacher 2006).
Adding a key adds its count to its k counters; its estimate is the minimum of them, which
never under-counts. Sized for `n` expected distinct keys at false-positive rate `p`:

    m = ceil(-n ln p / (ln 2)^2),   k = round(m / n * ln 2)

(Bloom 1970; Fan et al. 2000 for the counting variant). The false-positive rate is the chance
that a key never added reads as present (estimate >= 1); for a threshold `min_freq` > 1 the
chance that a key is admitted early is lower still. Counters are uint8/uint16/uint32, the
narrowest that holds `min_freq`, so 1% costs about 9.6 bytes per expected key with uint8.

`BloomFilter` is the admission filter (kind "bloom") built on it.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from psrec.ev._mix import as_u64, mix_seed, splitmix64
from psrec.ev.config import FilterConfig
from psrec.ev.filters import AdmissionFilter, register_filter

__all__ = ["CountingBloomFilter", "BloomFilter", "bloom_size"]

_HASH_SALT = 0x2_0000  # separates the filter's hashes from the initializer's


def bloom_size(expected_keys: int, false_positive_rate: float) -> tuple[int, int]:
    """(m counters, k hashes) for `expected_keys` distinct keys at `false_positive_rate`."""
    m = math.ceil(-expected_keys * math.log(false_positive_rate) / math.log(2) ** 2)
    k = max(1, round(m / expected_keys * math.log(2)))
    return m, k


def _counter_dtype(max_needed: int) -> np.dtype:
    for dt in (np.uint8, np.uint16, np.uint32):
        if max_needed <= np.iinfo(dt).max:
            return np.dtype(dt)
    raise ValueError(f"counts up to {max_needed} do not fit a 32-bit counter")


class CountingBloomFilter:
    """`m` saturating counters addressed by `k` hashes of an int64 key.

    Args:
        num_counters: m.
        num_hashes: k.
        seed: seeds the hash positions (same seed, same positions: shards can be merged).
        max_count: the largest count that must be represented; picks the counter width.

    Example:
        >>> f = CountingBloomFilter(*bloom_size(1000, 0.01), seed=0, max_count=3)
        >>> f.add(np.array([5, 5, 9], dtype=np.int64), np.array([1, 1, 1]))
        >>> f.estimate(np.array([5, 9], dtype=np.int64)).tolist()
        [2, 1]
    """

    def __init__(self, num_counters: int, num_hashes: int, seed: int, max_count: int) -> None:
        if num_counters < 1 or num_hashes < 1:
            raise ValueError(f"need num_counters >= 1 and num_hashes >= 1, got {num_counters}, {num_hashes}")
        self.num_counters = int(num_counters)
        self.num_hashes = int(num_hashes)
        self.seed = int(seed)
        self.counters = np.zeros(self.num_counters, dtype=_counter_dtype(max_count))
        self._salt = mix_seed(seed, _HASH_SALT)

    @property
    def nbytes(self) -> int:
        return self.counters.nbytes

    def positions(self, keys: np.ndarray) -> np.ndarray:
        """Counter indices of each key: (N,) int64 -> (N, k) int64."""
        h1 = splitmix64(as_u64(np.ascontiguousarray(keys, dtype=np.int64)) ^ self._salt)
        h2 = splitmix64(h1) | np.uint64(1)  # odd: the k positions differ whenever m is odd or k small
        i = np.arange(self.num_hashes, dtype=np.uint64)
        with np.errstate(over="ignore"):
            pos = h1[:, None] + i[None, :] * h2[:, None]
        return (pos % np.uint64(self.num_counters)).astype(np.int64)

    def add(self, keys: np.ndarray, counts: np.ndarray) -> None:
        """Add `counts` (N,) >= 0 to keys (N,) int64 (duplicates add up); counters saturate."""
        if len(keys) == 0:
            return
        pos = self.positions(keys).ravel()
        inc = np.repeat(np.asarray(counts, dtype=np.float64), self.num_hashes)
        upos, inv = np.unique(pos, return_inverse=True)
        add = np.bincount(inv, weights=inc)  # exact: counts are far below 2**53
        top = np.iinfo(self.counters.dtype).max
        new = np.minimum(self.counters[upos].astype(np.float64) + add, top)
        self.counters[upos] = new.astype(self.counters.dtype)

    def estimate(self, keys: np.ndarray) -> np.ndarray:
        """Upper-bound count of each key: (N,) int64 -> (N,) int64."""
        if len(keys) == 0:
            return np.zeros(0, dtype=np.int64)
        return self.counters[self.positions(keys)].min(axis=1).astype(np.int64)

    def approx_distinct(self) -> float:
        """Estimated distinct keys added, from the fraction of nonzero counters
        (Swamidass and Baldi 2007): -m/k * ln(1 - X/m)."""
        x = int(np.count_nonzero(self.counters))
        if x >= self.num_counters:
            return float("inf")
        return -self.num_counters / self.num_hashes * math.log1p(-x / self.num_counters)

    def merge(self, other: CountingBloomFilter) -> None:
        """Add `other`'s counts into this filter (same m, k, seed): the filter of the union."""
        if (other.num_counters, other.num_hashes, other.seed) != (self.num_counters, self.num_hashes, self.seed):
            raise ValueError("can only merge Bloom filters with the same size, hash count and seed")
        top = np.iinfo(self.counters.dtype).max
        s = self.counters.astype(np.uint64) + other.counters.astype(np.uint64)
        self.counters = np.minimum(s, top).astype(self.counters.dtype)


@register_filter("bloom")
class BloomFilter(AdmissionFilter):
    """Admission by a counting Bloom filter sized from `expected_keys` and `false_positive_rate`.

    `waiting` is an estimate: distinct keys in the filter (from its fill) minus admissions.
    """

    exact = False

    def __init__(self, cfg: FilterConfig, seed: int) -> None:
        super().__init__(cfg, seed)
        m, k = bloom_size(cfg.expected_keys, cfg.false_positive_rate)
        self.sketch = CountingBloomFilter(m, k, seed, max_count=cfg.min_freq)

    def admit(self, keys: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.sketch.add(keys, counts)
        seen = self.sketch.estimate(keys)
        admitted = seen >= self.cfg.min_freq
        self.admitted_total += int(np.count_nonzero(admitted))
        return admitted, seen

    def seen(self, keys: np.ndarray) -> np.ndarray:
        return self.sketch.estimate(keys)

    @property
    def waiting(self) -> int:
        d = self.sketch.approx_distinct()
        return int(max(0.0, round(min(d, 2.0 ** 62) - self.admitted_total)))

    @property
    def nbytes(self) -> int:
        return self.sketch.nbytes

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        meta = {"admitted_total": self.admitted_total, "num_counters": self.sketch.num_counters,
                "num_hashes": self.sketch.num_hashes, "hash_seed": self.sketch.seed,
                "counter_dtype": self.sketch.counters.dtype.name}
        return {"sketch": self.sketch.counters.copy()}, meta

    def restore(self, parts, keep) -> None:
        """Sum the shards' counters: a key's count is never under-estimated after re-sharding,
        but each new shard's filter now holds every shard's keys, so its false-positive rate
        is that of the total key count (size `expected_keys` for it when re-sharding)."""
        fresh = BloomFilter(self.cfg, self.seed).sketch
        self.admitted_total = 0
        for arrays, meta in parts:
            other = CountingBloomFilter(int(meta["num_counters"]), int(meta["num_hashes"]),
                                        int(meta["hash_seed"]), max_count=self.cfg.min_freq)
            if arrays["sketch"].shape != (other.num_counters,):
                raise ValueError("filter state: sketch length does not match its manifest")
            if arrays["sketch"].dtype != other.counters.dtype:
                raise ValueError(f"filter state: sketch dtype {arrays['sketch'].dtype} does not match "
                                 f"min_freq {self.cfg.min_freq} (counter dtype {other.counters.dtype})")
            other.counters = arrays["sketch"].copy()
            fresh.merge(other)
            self.admitted_total += int(meta.get("admitted_total", 0))
        self.sketch = fresh
