"""The partitioner interface and its registry."""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable

import numpy as np

__all__ = ["Partitioner", "make_partitioner", "count_requests"]


class Partitioner(ABC):
    """Maps int64 keys to shard indices in [0, num_shards)."""

    num_shards: int

    @abstractmethod
    def shard_of(self, keys: np.ndarray) -> np.ndarray:
        """keys (N,) int64 -> (N,) int64 shard indices."""

    def __call__(self, keys: np.ndarray) -> np.ndarray:  # usable as an EV re-sharding partition
        return self.shard_of(keys)

    def split(self, keys: np.ndarray) -> list[np.ndarray]:
        """Positions of `keys` owned by each shard: one (n_s,) int64 index array per shard."""
        owner = self.shard_of(keys)
        order = np.argsort(owner, kind="stable")
        bounds = np.searchsorted(owner[order], np.arange(self.num_shards + 1))
        return [order[bounds[s]:bounds[s + 1]] for s in range(self.num_shards)]


def count_requests(batches: Iterable[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per distinct key, in how many batches it was requested (after per-batch dedup).

    A PS serves one row per distinct key per request, so this, not the raw occurrence count,
    is a key's share of the bytes a shard serves. batches: per batch, its keys (any shape).
    Returns (keys (K,), requests (K,)) both int64.
    """
    uniq = [np.unique(np.asarray(b, dtype=np.int64).reshape(-1)) for b in batches]
    if not uniq:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    keys, counts = np.unique(np.concatenate(uniq), return_counts=True)
    return keys, counts.astype(np.int64)


def make_partitioner(name: str, num_shards: int, sample: Iterable[np.ndarray] | None = None,
                     **kw) -> Partitioner:
    """`hash` (DeepRec's default) or `balanced` (fitted on `sample`: batches of keys)."""
    from psrec.ps.partition.balanced import BalancedPartitioner
    from psrec.ps.partition.hash import HashModPartitioner

    if name == "hash":
        return HashModPartitioner(num_shards)
    if name == "balanced":
        if sample is None:
            raise ValueError("the balanced partitioner needs a sample of batches to observe key frequencies")
        keys, requests = count_requests(sample)
        return BalancedPartitioner.fit(num_shards, keys, requests, **kw)
    raise ValueError(f"unknown partitioner {name!r}; known: hash, balanced")
