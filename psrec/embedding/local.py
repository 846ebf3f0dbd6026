"""In-process embedding store: one EmbeddingVariable per table, no transport.

It takes a batch's raw key draws (`raw_batches`): each variable de-duplicates, probes and
gathers them in one compiled call and sums the per-draw gradients back (`psrec.ev.raw`).

Used by local training, unit tests and the simulator; the PS and collective stores wrap the
same variables behind a transport.
"""
from __future__ import annotations

import os
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from psrec.embedding.store import EmbeddingStore
from psrec.ev import EmbeddingVariable, EVConfig, EvictionReport, EVStats
from psrec.ev.raw import RawBatch

__all__ = ["LocalStore", "table_seed"]


class LocalStore(EmbeddingStore):
    """Named EmbeddingVariables in this process.

    Args:
        tables: table name -> its EVConfig.

    Example:
        >>> store = LocalStore({"user": EVConfig(dim=4)})
        >>> keys = np.array([10, 11], dtype=np.int64)
        >>> store.lookup("user", keys).shape
        (2, 4)
        >>> store.apply_gradients("user", keys, np.ones((2, 4), np.float32), np.array([3, 1]), step=1)
        >>> store.variable("user").metadata(keys)[0].tolist()
        [3, 1]
    """

    def __init__(self, tables: Mapping[str, EVConfig]) -> None:
        if not tables:
            raise ValueError("LocalStore needs at least one table")
        for name, cfg in tables.items():
            if not isinstance(cfg, EVConfig):
                raise TypeError(f"table {name!r}: expected an EVConfig, got {type(cfg).__name__}")
        self._vars = {name: EmbeddingVariable(cfg, name=name) for name, cfg in tables.items()}

    @classmethod
    def from_tables(cls, tables: Sequence[Any], emb: Any, seed: int = 0) -> LocalStore:
        """Tables planned by the embedding layer, configured from the run's [embedding] section.

        tables: objects with `.name` and `.dim` (`psrec.embedding.layer.TableSpec`).
        emb: `psrec.config.EmbeddingConfig` (anything with `ev_config(dim, seed) -> EVConfig`).
        seed: the run's seed. Each table's EV seed mixes in a stable hash of its name, so a
            key's initial row differs between tables (a field table and its linear table
            would otherwise start correlated) yet is the same on every shard of one table.
        """
        return cls({t.name: emb.ev_config(int(t.dim), table_seed(seed, t.name)) for t in tables})

    @classmethod
    def from_variables(cls, variables: Mapping[str, EmbeddingVariable]) -> LocalStore:
        """A store over existing variables (e.g. from `psrec.ev.warm_start`)."""
        store = cls.__new__(cls)
        store._vars = dict(variables)
        return store

    @property
    def table_names(self) -> tuple[str, ...]:
        return tuple(self._vars)

    def variable(self, table: str) -> EmbeddingVariable:
        """The EmbeddingVariable behind `table`."""
        try:
            return self._vars[table]
        except KeyError:
            raise KeyError(f"unknown table {table!r}; tables: {', '.join(self._vars)}") from None

    def dim(self, table: str) -> int:
        return self.variable(table).dim

    def lookup(self, table: str, keys: np.ndarray, train: bool = True) -> np.ndarray:
        return self.variable(table).lookup(keys, train=train)

    def apply_gradients(self, table: str, keys: np.ndarray, grads: np.ndarray,
                        counts: np.ndarray, step: int) -> None:
        self.variable(table).apply_gradients(keys, grads, counts, step)

    raw_batches = True

    def lookup_raw_many(self, keys: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, RawBatch]]:
        out, batches, done = {}, {}, {}
        for t, k in keys.items():
            like = done.get(id(k))
            out[t], batches[t] = self.variable(t).lookup_raw(k, like=like[1] if like is not None else None)
            done.setdefault(id(k), (k, batches[t]))  # k kept alive, so its id is not reused
        return out, batches

    def apply_raw_many(self, handles: dict[str, RawBatch], grads: dict[str, np.ndarray], step: int) -> None:
        for t, g in grads.items():
            self.variable(t).apply_raw(handles[t], g, step)

    def evict(self, step: int | None = None) -> dict[str, EvictionReport]:
        """Run each table's configured eviction; step defaults to each table's latest."""
        return {name: ev.evict(step) for name, ev in self._vars.items()}

    def stats(self) -> dict[str, EVStats]:
        return {name: ev.stats() for name, ev in self._vars.items()}

    def export(self, path: str | os.PathLike, evict: bool = True,
               base: str | os.PathLike | None = None) -> dict[str, EvictionReport | None]:
        """Export every table to `path/<table>/` (format: psrec.ev.export); with `base` (an
        earlier export of this store), only each table's rows updated since `base/<table>/`
        (`psrec.ev.increment`; a table absent there is exported whole)."""
        path = Path(path)
        bases = {name: None if base is None or not (Path(base) / name).is_dir() else Path(base) / name
                 for name in self._vars}
        return {name: ev.export(path / name, evict=evict, base=bases[name]) for name, ev in self._vars.items()}

    def restore(self, path: str | os.PathLike) -> None:
        """Restore every table from `path/<table>/` written by `export`."""
        path = Path(path)
        for name, ev in self._vars.items():
            ev.restore([path / name])


def table_seed(seed: int, name: str) -> int:
    """A per-table seed from the run seed and the table name (CRC32: stable across processes)."""
    return (int(seed) * 0x9E3779B1 + zlib.crc32(name.encode())) % (1 << 63)
