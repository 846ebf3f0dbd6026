"""Hash-mod partitioning: DeepRec's default placement of embedding keys on PS shards."""
from __future__ import annotations

import numpy as np

from psrec.ev.partition import hash_mod_shard
from psrec.ps.partition.base import Partitioner

__all__ = ["HashModPartitioner"]


class HashModPartitioner(Partitioner):
    """shard = mix(key) mod M. Evens out *rows*; hot keys land wherever their hash says.

    Example:
        >>> HashModPartitioner(4).shard_of(np.arange(6)).tolist()  # doctest: +SKIP
    """

    def __init__(self, num_shards: int) -> None:
        if num_shards < 1:
            raise ValueError(f"num_shards must be >= 1, got {num_shards}")
        self.num_shards = num_shards

    def shard_of(self, keys: np.ndarray) -> np.ndarray:
        return hash_mod_shard(keys, self.num_shards)
