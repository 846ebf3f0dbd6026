"""Which rank owns each embedding row: row-wise (by key) or table-wise (whole tables).

A sharding maps a table's keys (N,) int64 to owner ranks (N,) int64 in [0, world_size).
Registry by name: `make_sharding("row" | "table", world_size, tables)`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

from psrec.ev.partition import hash_mod_shard

__all__ = ["Sharding", "RowWise", "TableWise", "make_sharding", "SHARDINGS"]


class Sharding(ABC):
    """Owner rank of every key of every table."""

    name: str
    world_size: int

    @abstractmethod
    def owners(self, table: str, keys: np.ndarray) -> np.ndarray:
        """(N,) int64 keys of `table` -> (N,) int64 owner ranks."""

    @abstractmethod
    def holds(self, rank: int, table: str) -> bool:
        """Whether `rank` keeps a shard of `table` (and so an embedding variable for it)."""


class RowWise(Sharding):
    """Every table split by key over all ranks: `hash_mod_shard(key, N)`, the same partition
    the PS path and EV re-sharding use, so a key's owner does not depend on the table.

    Example:
        >>> RowWise(2).owners("emb", np.array([1, 2, 3, 4], dtype=np.int64)).tolist()
        [1, 0, 1, 0]
    """

    name = "row"

    def __init__(self, world_size: int) -> None:
        self.world_size = world_size

    def owners(self, table: str, keys: np.ndarray) -> np.ndarray:
        return hash_mod_shard(keys, self.world_size)

    def holds(self, rank: int, table: str) -> bool:
        return True


class TableWise(Sharding):
    """Every table whole on one rank. Tables are placed greedily, largest first, on the rank
    with the least load so far; a table's load is `dim * len(fields)`, the values per sample
    it serves (TorchRec's table-wise planner balances the same kind of cost).

    Args:
        world_size: ranks.
        tables: (name, dim, number of fields) of every table, in the same order on every rank.

    Example:
        >>> TableWise(2, [("emb", 16, 26), ("linear", 1, 26)]).placement
        {'emb': 0, 'linear': 1}
    """

    name = "table"

    def __init__(self, world_size: int, tables: Sequence[tuple[str, int, int]]) -> None:
        self.world_size = world_size
        load = [0] * world_size
        self.placement: dict[str, int] = {}
        # Stable sort: ties keep the given order, so every rank computes the same placement.
        for name, dim, nfields in sorted(tables, key=lambda t: -t[1] * t[2]):
            r = int(np.argmin(load))
            self.placement[name] = r
            load[r] += dim * nfields

    def owners(self, table: str, keys: np.ndarray) -> np.ndarray:
        return np.full(len(keys), self.placement[table], dtype=np.int64)

    def holds(self, rank: int, table: str) -> bool:
        return self.placement[table] == rank


SHARDINGS = ("row", "table")


def make_sharding(name: str, world_size: int, tables: Sequence) -> Sharding:
    """`name` is "row" or "table"; `tables` are TableSpecs (anything with name, dim, fields)."""
    if name == "row":
        return RowWise(world_size)
    if name == "table":
        return TableWise(world_size, [(t.name, int(t.dim), len(t.fields)) for t in tables])
    raise ValueError(f"unknown sharding {name!r}; known: {', '.join(SHARDINGS)}")
