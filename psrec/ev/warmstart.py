"""Warm start (incremental training): initialise a new configuration from an older export.

Embedding tables (`warm_start`): for each table of the new configuration that the old export
also has, this shard's keys are copied with their freq and version. A changed width copies
the overlapping columns and fills the rest from the new initializer (columns are drawn per
(seed, key, column), so the filled columns are those the key would have had anyway).
Optimizer slots are copied when the optimizer and the width are unchanged, otherwise they
start fresh from the copied values. Tables only in the new configuration start empty; tables
only in the old export are dropped. A `WarmStartReport` lists all of it.

Dense parameters (`warm_start_dense`): tensors of a torch model whose name and shape match
the old state_dict are copied; the rest keep their fresh initialisation and are reported.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from psrec.ev.config import EVConfig
from psrec.ev.export import EVSnapshot, load_snapshot
from psrec.ev.filters import make_filter
from psrec.ev.initializers import initial_rows
from psrec.ev.optim import make_optimizer
from psrec.ev.partition import Partition, hash_mod_partition
from psrec.ev.variable import EmbeddingVariable

__all__ = ["TableMigration", "WarmStartReport", "warm_start", "warm_start_variable",
           "DenseWarmStartReport", "warm_start_dense"]

Source = EVSnapshot | str | os.PathLike
KeyPredicate = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class TableMigration:
    """How one table was carried over (counts are for this shard).

    Args:
        table: table name.
        old_dim, new_dim: row widths before and after.
        rows_copied: keys copied from the old export.
        rows_dropped: this shard's old keys rejected by the `keep` predicate (removed fields).
        columns_copied: min(old_dim, new_dim) leading columns copied per row.
        columns_initialised: columns per row filled by the new initializer.
        slots: "copied" or "reset" (optimizer or width changed).
        filter_state: "copied", "reset" (kind or size changed) or "none".
    """

    table: str
    old_dim: int
    new_dim: int
    rows_copied: int
    rows_dropped: int
    columns_copied: int
    columns_initialised: int
    slots: str
    filter_state: str


@dataclass(frozen=True)
class WarmStartReport:
    """What a warm start migrated, dropped and created.

    Args:
        migrated: one TableMigration per table present in both configurations.
        dropped_tables: tables of the old export absent from the new configuration.
        new_tables: tables of the new configuration absent from the old export (start empty).
    """

    migrated: tuple[TableMigration, ...]
    dropped_tables: tuple[str, ...]
    new_tables: tuple[str, ...]

    def summary(self) -> str:
        lines = [f"{m.table}: {m.rows_copied} rows copied, {m.rows_dropped} dropped, dim {m.old_dim}->"
                 f"{m.new_dim} ({m.columns_initialised} new columns), slots {m.slots}, filter {m.filter_state}"
                 for m in self.migrated]
        lines += [f"{t}: dropped (not in the new configuration)" for t in self.dropped_tables]
        lines += [f"{t}: new (freshly initialised)" for t in self.new_tables]
        return "\n".join(lines)


def warm_start_variable(config: EVConfig, sources: Sequence[Source], name: str, shard_index: int = 0,
                        num_shards: int = 1, partition: Partition | None = None,
                        keep: KeyPredicate | None = None) -> tuple[EmbeddingVariable, TableMigration]:
    """A new variable for `config`, shard `shard_index` of `num_shards`, from old exports.

    sources: the old table's exports (one per old shard, any number of them).
    partition: keys -> shard index; default `hash_mod_partition(num_shards)`.
    keep: keys (K,) -> (K,) bool; False drops a key (e.g. a removed field's keys). Default all.
    """
    part = partition or hash_mod_partition(num_shards)
    snaps = [s if isinstance(s, EVSnapshot) else load_snapshot(Path(s)) for s in sources]
    if not snaps:
        raise ValueError(f"table {name!r}: warm start needs at least one source")
    old_dim = snaps[0].dim
    if any(s.dim != old_dim for s in snaps):
        raise ValueError(f"table {name!r}: old exports disagree on dim")
    dim = config.dim
    ncopy = min(old_dim, dim)
    same_opt = snaps[0].optimizer == config.optimizer.name and old_dim == dim
    opt = make_optimizer(config.optimizer, dim)
    fresh_filter_arrays, fresh_filter_meta = make_filter(config.filter, config.seed).state()
    filter_ok = all(_filter_compatible(s, config, fresh_filter_arrays, fresh_filter_meta) for s in snaps)
    copied = dropped = 0
    migrated = []
    for s in snaps:
        mine = np.asarray(part(s.keys)) == shard_index
        kept = mine & (np.asarray(keep(s.keys), dtype=bool) if keep is not None else True)
        dropped += int(np.count_nonzero(mine & ~kept))
        copied += int(np.count_nonzero(kept))
        keys = s.keys[kept]
        values = np.empty((len(keys), dim), dtype=np.float32)
        values[:, :ncopy] = s.values[kept, :ncopy]
        if dim > ncopy:
            values[:, ncopy:] = initial_rows(config.initializer, config.seed, keys, dim, np.arange(ncopy, dim))
        if same_opt:
            slots = {k: a[kept] for k, a in s.slots.items()}
        else:
            slots = {sp.name: np.full(sp.shape(len(keys), dim), sp.init, dtype=sp.dtype) for sp in opt.slots()}
            opt.init_slots(values, slots)
        farrays, fmeta = (s.filter_arrays, s.filter_meta) if filter_ok else (fresh_filter_arrays, fresh_filter_meta)
        migrated.append(EVSnapshot(name=name, dim=dim, step=s.step, optimizer=config.optimizer.name,
                                   keys=keys, values=values, freqs=s.freqs[kept], versions=s.versions[kept],
                                   slots=slots, filter_kind=config.filter.kind, filter_arrays=farrays,
                                   filter_meta=fmeta))
    ev = EmbeddingVariable(config, name=name)
    ev.restore(migrated, shard_index=shard_index, num_shards=num_shards, partition=part)
    filter_state = "none" if config.filter.kind == "none" else "copied" if filter_ok else "reset"
    report = TableMigration(table=name, old_dim=old_dim, new_dim=dim, rows_copied=copied, rows_dropped=dropped,
                            columns_copied=ncopy, columns_initialised=dim - ncopy,
                            slots="copied" if same_opt else "reset", filter_state=filter_state)
    return ev, report


def _filter_compatible(s: EVSnapshot, config: EVConfig, fresh_arrays: dict, fresh_meta: dict) -> bool:
    """Whether the old filter state can be restored into the new filter."""
    if s.filter_kind != config.filter.kind or config.filter.kind == "none":
        return False
    if config.filter.kind == "bloom":
        same = ("num_counters", "num_hashes", "hash_seed", "counter_dtype")
        return all(s.filter_meta.get(k) == fresh_meta.get(k) for k in same)
    return True


def warm_start(tables: Mapping[str, EVConfig], old: Mapping[str, Sequence[Source]], shard_index: int = 0,
               num_shards: int = 1, partition: Partition | None = None,
               keep: Mapping[str, KeyPredicate] | None = None) -> tuple[dict[str, EmbeddingVariable], WarmStartReport]:
    """Variables for every table in `tables`, warm-started from `old` where it has the table.

    old: table name -> that table's exports (one per old shard).
    keep: optional per-table key predicate (see `warm_start_variable`).
    """
    out: dict[str, EmbeddingVariable] = {}
    migrated = []
    for name, cfg in tables.items():
        if name in old:
            ev, m = warm_start_variable(cfg, old[name], name, shard_index, num_shards, partition,
                                        (keep or {}).get(name))
            out[name] = ev
            migrated.append(m)
        else:
            out[name] = EmbeddingVariable(cfg, name=name)
    report = WarmStartReport(migrated=tuple(migrated),
                             dropped_tables=tuple(sorted(set(old) - set(tables))),
                             new_tables=tuple(sorted(set(tables) - set(old))))
    return out, report


@dataclass(frozen=True)
class DenseWarmStartReport:
    """What `warm_start_dense` did to a model's state_dict entries.

    Args:
        copied: names copied from the old state_dict.
        mismatched: (name, old shape, new shape) of same-named entries left fresh.
        new: names only in the model (left fresh).
        dropped: names only in the old state_dict (ignored).
    """

    copied: tuple[str, ...]
    mismatched: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...]
    new: tuple[str, ...]
    dropped: tuple[str, ...]


def warm_start_dense(model: torch.nn.Module, old_state_dict: Mapping[str, torch.Tensor]) -> DenseWarmStartReport:
    """Copy into `model` every old tensor whose name and shape match (parameters and buffers)."""
    current = model.state_dict()
    copied, mismatched = [], []
    update = {}
    for name, tensor in current.items():
        if name not in old_state_dict:
            continue
        src = old_state_dict[name]
        if tuple(src.shape) == tuple(tensor.shape):
            update[name] = src.to(dtype=tensor.dtype)
            copied.append(name)
        else:
            mismatched.append((name, tuple(src.shape), tuple(tensor.shape)))
    model.load_state_dict(update, strict=False)
    return DenseWarmStartReport(copied=tuple(copied), mismatched=tuple(mismatched),
                                new=tuple(n for n in current if n not in old_state_dict),
                                dropped=tuple(n for n in old_state_dict if n not in current))
