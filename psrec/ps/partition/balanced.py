"""Balanced parameter allocation (the design note's remedy for imbalanced PS load).

Hash-mod spreads rows evenly but not *traffic*: under a Zipf key distribution a handful of
hot keys are requested by nearly every batch, and the shards that happen to own them serve
more bytes and requests. The balanced partitioner observes per-key request counts on a
sample, places the hottest keys greedily (longest-processing-time first: each to the
currently least-loaded shard, counting the cold keys' expected hash-mod load as the
starting point), and leaves every other key to hash-mod, which balances the long tail.
"""
from __future__ import annotations

import numpy as np

from psrec.ev.partition import hash_mod_shard
from psrec.ps.partition.base import Partitioner

__all__ = ["BalancedPartitioner"]


class BalancedPartitioner(Partitioner):
    """Hot keys placed by observed load; the rest by hash-mod.

    Args:
        num_shards: M.
        hot_keys: (H,) sorted int64 keys with an explicit placement.
        hot_shards: (H,) int64 shard of each hot key.
    """

    def __init__(self, num_shards: int, hot_keys: np.ndarray, hot_shards: np.ndarray) -> None:
        if num_shards < 1:
            raise ValueError(f"num_shards must be >= 1, got {num_shards}")
        order = np.argsort(hot_keys)
        self.num_shards = num_shards
        self.hot_keys = np.asarray(hot_keys, np.int64)[order]
        self.hot_shards = np.asarray(hot_shards, np.int64)[order]

    @classmethod
    def fit(cls, num_shards: int, keys: np.ndarray, requests: np.ndarray,
            hot_fraction: float = 0.5) -> BalancedPartitioner:
        """Place the keys that carry `hot_fraction` of all observed requests.

        keys, requests: (K,) distinct keys and how many sampled batches requested each.
        """
        keys = np.asarray(keys, np.int64)
        requests = np.asarray(requests, np.float64)
        order = np.argsort(-requests, kind="stable")
        cum = np.cumsum(requests[order])
        n_hot = int(np.searchsorted(cum, hot_fraction * cum[-1])) + 1 if len(cum) else 0
        hot, cold = order[:n_hot], order[n_hot:]
        # Start from the load hash-mod gives the cold keys, then fill the hottest first.
        load = np.bincount(hash_mod_shard(keys[cold], num_shards), weights=requests[cold],
                           minlength=num_shards).astype(np.float64)
        shards = np.empty(n_hot, np.int64)
        for i, k in enumerate(hot):  # H is small (hundreds to thousands): a Python loop is fine here
            s = int(np.argmin(load))
            shards[i] = s
            load[s] += requests[k]
        return cls(num_shards, keys[hot], shards)

    def shard_of(self, keys: np.ndarray) -> np.ndarray:
        keys = np.asarray(keys, np.int64)
        out = hash_mod_shard(keys, self.num_shards)
        if len(self.hot_keys):
            pos = np.searchsorted(self.hot_keys, keys)
            pos = np.minimum(pos, len(self.hot_keys) - 1)
            hit = self.hot_keys[pos] == keys
            out[hit] = self.hot_shards[pos[hit]]
        return out
