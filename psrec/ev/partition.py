"""Which shard owns a key: the default partition used when an export is re-sharded.

A partition function maps int64 keys (N,) to shard indices (N,) int64 in [0, num_shards).
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from psrec.ev._mix import as_u64, splitmix64

__all__ = ["Partition", "hash_mod_shard", "hash_mod_partition"]

Partition = Callable[[np.ndarray], np.ndarray]


def hash_mod_shard(keys: np.ndarray, num_shards: int) -> np.ndarray:
    """Shard of each key: `splitmix64(key) % num_shards`, (N,) int64 -> (N,) int64.

    A well-mixed hash rather than `key % num_shards`: keys carry a field index in their top
    bits and often dense ids below, which a plain modulus would spread unevenly.
    """
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    keys = np.ascontiguousarray(keys, dtype=np.int64)
    return (splitmix64(as_u64(keys)) % np.uint64(num_shards)).astype(np.int64)


def hash_mod_partition(num_shards: int) -> Partition:
    """The default partition function for `num_shards` shards (see `hash_mod_shard`)."""
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")

    def partition(keys: np.ndarray) -> np.ndarray:
        return hash_mod_shard(keys, num_shards)

    return partition
