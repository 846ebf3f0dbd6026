"""The embedding variable (EV): a hash-keyed, growable embedding table with per-key metadata.

Semantics follow DeepRec's EmbeddingVariable:

* `lookup` reads rows and changes nothing. A key without a row reads as its deterministic
  initial row, or as zeros while an admission filter holds it back. Frequencies are counted
  from the `counts` given to `apply_gradients`, so evaluation and serving lookups never
  count and a retried pull never double-counts; `train` is accepted for the store interface.
* `apply_gradients` creates the rows of new keys (after admission), adds each key's
  occurrences to its `freq`, sets its `version` to the global step and runs the sparse
  optimizer on the touched rows only. Duplicate keys have their gradients summed first.
* Eviction (TTL on versions, L2 norm of values) runs on demand and before an export.
* `snapshot` / `export` / `restore` give consistent, bit-exact, re-shardable copies.

All public methods take one lock, so a parameter-server actor may serve pulls and pushes on
threads and a snapshot never mixes values and slots of different moments.
"""
from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from psrec.ev import _kernels
from psrec.ev._memory import aligned_empty
from psrec.ev.config import EVConfig
from psrec.ev.dedup import segment_sum, unique
from psrec.ev.export import EVSnapshot, export_step, load_snapshot, save_snapshot
from psrec.ev.filters import make_filter
from psrec.ev.hashtable import HashTable
from psrec.ev.initializers import initial_rows
from psrec.ev.optim import make_optimizer
from psrec.ev.partition import Partition, hash_mod_partition
from psrec.ev.raw import RawBatch, scratch
from psrec.ev.reports import EvictionReport, EVStats

__all__ = ["EmbeddingVariable", "EvictionReport", "EVStats"]

_FREQ, _VERSION = 0, 1  # columns of the (R, 2) int64 metadata array


@dataclass(frozen=True)
class _Resolved:
    """Rows a training lookup resolved: `keys` (N,) int64 (a private copy, so a caller that
    reuses its array cannot make them stale), `rows` (N,) int64, valid while the hash table's
    `generation` is unchanged; `init` the initial rows (M, D) float32 it computed for its M
    absent keys, in their order in `keys` (None: none computed), which their creation reuses."""

    keys: np.ndarray
    rows: np.ndarray
    generation: int
    init: np.ndarray | None = None


def _has_duplicates(keys: np.ndarray) -> bool:
    """Whether (N,) `keys` repeat a value. A sort, not `np.unique`: numpy 2.4's plain
    `np.unique` takes a hash-set path that is ~50x slower than sorting on 1M int64 keys."""
    s = np.sort(keys)
    return bool((s[1:] == s[:-1]).any())


class EmbeddingVariable:
    """One embedding table keyed by arbitrary int64 keys.

    Args:
        config: the table's EVConfig.
        name: used in errors, reports and exports.
        initial_rows: row capacity to start with (grows by doubling).

    Example:
        >>> ev = EmbeddingVariable(EVConfig(dim=4), name="user")
        >>> keys = np.array([3, 3, 9], dtype=np.int64)
        >>> ev.apply_gradients(keys, np.ones((3, 4), np.float32), step=1)
        >>> ev.metadata(np.array([3, 9], dtype=np.int64))[0].tolist()   # freqs
        [2, 1]
        >>> ev.lookup(np.array([9], dtype=np.int64)).shape
        (1, 4)
    """

    def __init__(self, config: EVConfig, name: str = "ev", initial_rows: int = 1024) -> None:
        self.config = config
        self.name = name
        self.dim = config.dim
        self._opt = make_optimizer(config.optimizer, config.dim)
        self._specs = self._opt.slots()
        self._lock = threading.RLock()
        self._reset(max(16, initial_rows))

    # ---- state containers ----------------------------------------------------------------

    def _reset(self, capacity: int) -> None:
        self._table = HashTable(capacity=2 * capacity)
        self._filter = make_filter(self.config.filter, self.config.seed)
        self._cap = 0
        self._values = np.zeros((0, self.dim), dtype=np.float32)  # (R, D)
        self._meta = np.zeros((0, 2), dtype=np.int64)  # (R, 2): freq, version; one gather for both
        self._slots = {s.name: np.zeros(s.shape(0, self.dim), dtype=s.dtype) for s in self._specs}
        self._grow(capacity)
        self._step = -1
        self._evicted_total = 0
        self._resolved: _Resolved | None = None  # the last training lookup's rows, for its apply

    def _grow(self, need: int) -> None:
        """Make row arrays hold at least `need` rows (doubling: amortised O(1) per row)."""
        if need <= self._cap:
            return
        cap = max(need, 2 * self._cap)

        def grown(a: np.ndarray, fill: float) -> np.ndarray:
            b = aligned_empty((cap,) + a.shape[1:], a.dtype)  # a row in as few cache lines as it fits
            b[:len(a)] = a
            b[len(a):] = fill
            return b

        self._values = grown(self._values, 0.0)
        self._meta = grown(self._meta, 0)
        self._slots = {s.name: grown(self._slots[s.name], s.init) for s in self._specs}
        self._cap = cap

    @property
    def row_bytes(self) -> int:
        """Bytes of storage per row: values, freq/version and optimizer slots."""
        slot = sum(np.dtype(s.dtype).itemsize * (self.dim if s.per_coordinate else 1) for s in self._specs)
        return 4 * self.dim + 16 + slot

    # ---- checks --------------------------------------------------------------------------

    def _check_keys(self, keys: np.ndarray) -> np.ndarray:
        if not isinstance(keys, np.ndarray) or keys.dtype != np.int64:
            what = keys.dtype if isinstance(keys, np.ndarray) else type(keys).__name__
            raise TypeError(f"table {self.name!r}: keys must be an int64 numpy array, got {what}")
        if keys.ndim != 1:
            raise ValueError(f"table {self.name!r}: keys must be 1-D, got shape {keys.shape}")
        return np.ascontiguousarray(keys)

    # ---- reads ---------------------------------------------------------------------------

    def __len__(self) -> int:
        """Number of keys with a row."""
        return len(self._table)

    @property
    def step(self) -> int:
        """The largest global step applied or restored (-1 before any)."""
        return self._step

    def lookup(self, keys: np.ndarray, train: bool = True) -> np.ndarray:
        """Rows of `keys` (N,) int64 -> (N, D) float32, a fresh array.

        Creates and counts nothing (see the module docstring). Absent keys read as their
        initial row, or zeros when the table has an admission filter. A training lookup
        (`train=True`) also remembers the rows it resolved, so that the `apply_gradients` of
        the same step, on the same keys, need not probe the hash table again.
        """
        keys = self._check_keys(keys)
        with self._lock:
            rows, out, missing = self._table.find_gather(keys, self._values)
            miss, init = self._initial_of(keys, rows, missing)
            if init is not None:
                out[miss] = init
            if train:
                self._resolved = _Resolved(keys.copy(), rows, self._table.generation, init)
            return out

    def lookup_raw(self, keys: np.ndarray, like: RawBatch | None = None) -> tuple[np.ndarray, RawBatch]:
        """Rows of a raw batch's key draws `keys` (N,) int64, duplicates allowed -> (out (N, D)
        float32, a fresh array: `lookup(keys)`'s answer; the `RawBatch` for `apply_raw`).

        One compiled call de-duplicates the draws, probes the table once per distinct key and
        gathers every draw's row (`psrec.ev.raw`); creates and counts nothing, as `lookup`.
        `like`: the `RawBatch` of another variable's `lookup_raw` of these same draws (a
        linear table over the embedding table's fields): its de-duplication is reused, not
        redone (the caller vouches that the draws are the same).
        """
        keys = self._check_keys(keys)
        if like is not None and len(like.inverse) != len(keys):
            raise ValueError(f"table {self.name!r}: lookup_raw(like=...) of {len(like.inverse)} draws "
                             f"for {len(keys)} keys")
        with self._lock:
            if like is None:
                uniq, inverse, counts, rows, out, missing = self._table.dedup_find_gather(
                    keys, self._values, *scratch(len(keys), self.dim))
            else:
                uniq, inverse, counts = like.keys, like.inverse, like.counts
                rows, out, missing = self._table.find_gather_expand(uniq, inverse, self._values,
                                                                    scratch(len(uniq), self.dim)[1])
            generation = self._table.generation
        miss, init = self._initial_of(uniq, rows, missing)
        if init is not None:
            which = np.cumsum(miss) - 1  # distinct key -> its row of `init` (where absent)
            sel = miss[inverse]
            out[sel] = init[which[inverse[sel]]]
        return out, RawBatch(uniq, inverse, counts, rows, missing, self._table, generation, init)

    def _initial_of(self, keys: np.ndarray, rows: np.ndarray, missing: int) -> tuple[np.ndarray | None,
                                                                                     np.ndarray | None]:
        """The absent keys' rows as a lookup reads them: (mask (N,) bool of rows < 0, their
        initial rows (M, D) in key order), or (None, None) when none is absent or an admission
        filter holds them at zeros (the gather's)."""
        if not missing or self.config.filter.kind != "none":
            return None, None
        miss = rows < 0
        return miss, initial_rows(self.config.initializer, self.config.seed, keys[miss], self.dim)

    def contains(self, keys: np.ndarray) -> np.ndarray:
        """Whether each key (N,) int64 has a row -> (N,) bool."""
        keys = self._check_keys(keys)
        with self._lock:
            return self._table.find(keys) >= 0

    def metadata(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(freqs (N,) int64, versions (N,) int64) of `keys`; absent keys give (0, -1)."""
        keys = self._check_keys(keys)
        with self._lock:
            rows = self._table.find(keys)
            ok = rows >= 0
            meta = self._meta[np.maximum(rows, 0)]
            return np.where(ok, meta[:, _FREQ], 0), np.where(ok, meta[:, _VERSION], -1)

    def slot(self, name: str, keys: np.ndarray) -> np.ndarray:
        """Optimizer slot `name` of `keys` (N,) -> (N, D) or (N,); absent keys read as NaN/0."""
        keys = self._check_keys(keys)
        if name not in self._slots:
            raise KeyError(f"table {self.name!r}: no slot {name!r}; slots: {sorted(self._slots)}")
        with self._lock:
            rows = self._table.find(keys)
            out = np.take(self._slots[name], np.maximum(rows, 0), axis=0)
            out[rows < 0] = np.nan if out.dtype.kind == "f" else 0
            return out

    def filter_counts(self, keys: np.ndarray) -> np.ndarray:
        """Occurrences the admission filter has recorded for row-less `keys` (N,) -> (N,) int64."""
        keys = self._check_keys(keys)
        with self._lock:
            return self._filter.seen(keys)

    def stats(self) -> EVStats:
        with self._lock:
            held = self._values.nbytes + self._meta.nbytes + sum(a.nbytes for a in self._slots.values())
            return EVStats(table=self.name, rows=len(self._table), waiting=self._filter.waiting,
                           waiting_exact=self._filter.exact, admitted_total=self._filter.admitted_total,
                           evicted_total=self._evicted_total, row_bytes=self.row_bytes,
                           rows_used=self._table.high_water,
                           bytes=held + self._table.nbytes + self._filter.nbytes, step=self._step)

    # ---- updates -------------------------------------------------------------------------

    def apply_gradients(self, keys: np.ndarray, grads: np.ndarray, counts: np.ndarray | None = None,
                        step: int = 0) -> None:
        """One sparse update.

        Args:
            keys: (N,) int64; duplicates allowed (their gradients and counts are summed).
            grads: (N, D) float gradients, one row per entry of `keys`.
            counts: (N,) int64 occurrences of each entry in the batch (default 1 each); they
                feed freq and admission.
            step: the global step; it becomes each touched key's version.

        Raises TypeError/ValueError naming the table on bad input, before any state changes:
        a NaN or infinite gradient rejects the whole update.
        """
        keys = self._check_keys(keys)
        n = len(keys)
        grads = np.asarray(grads)
        if grads.shape != (n, self.dim):
            raise ValueError(f"table {self.name!r}: grads must have shape ({n}, {self.dim}), got {grads.shape}")
        if grads.dtype.kind != "f":
            raise TypeError(f"table {self.name!r}: grads must be floating point, got {grads.dtype}")
        grads = np.ascontiguousarray(grads, dtype=np.float32)
        if counts is None:
            counts = np.ones(n, dtype=np.int64)
        else:
            counts = np.asarray(counts)
            if counts.shape != (n,) or counts.dtype.kind not in "iu":
                raise ValueError(f"table {self.name!r}: counts must be ({n},) integers, got "
                                 f"{counts.dtype} {counts.shape}")
            if n and counts.min() < 0:
                raise ValueError(f"table {self.name!r}: counts must be >= 0")
            counts = np.ascontiguousarray(counts, dtype=np.int64)
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
            raise ValueError(f"table {self.name!r}: step must be an integer >= 0, got {step!r}")
        step = int(step)
        with self._lock:
            self._apply(keys, grads, counts, step)

    def apply_raw(self, batch: RawBatch, grads: np.ndarray, step: int = 0) -> None:
        """One sparse update from a raw batch: `batch` from `lookup_raw`, `grads` (N, D) float,
        one row per draw; `apply_gradients(batch.keys, segment_sum(grads, batch.inverse),
        batch.counts, step)` without the second probe while no key was inserted or deleted
        since the lookup. Bad input raises before any state changes, as there."""
        if not isinstance(batch, RawBatch):
            raise TypeError(f"table {self.name!r}: apply_raw needs the RawBatch of lookup_raw, got "
                            f"{type(batch).__name__}")
        u = len(batch.keys)
        if len(batch.counts) != u or len(batch.rows) != u:
            raise ValueError(f"table {self.name!r}: a RawBatch's keys, counts and rows must have one length")
        grads = np.asarray(grads)
        if grads.shape != (len(batch.inverse), self.dim):
            raise ValueError(f"table {self.name!r}: grads must have shape ({len(batch.inverse)}, {self.dim}), "
                             f"got {grads.shape}")
        if grads.dtype.kind != "f":
            raise TypeError(f"table {self.name!r}: grads must be floating point, got {grads.dtype}")
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
            raise ValueError(f"table {self.name!r}: step must be an integer >= 0, got {step!r}")
        sums = segment_sum(grads, batch.inverse, u)  # (U, D), each key's draws added in draw order
        with self._lock:
            init = None
            if batch.source is self._table and batch.generation == self._table.generation:
                rows, missing = (batch.rows.copy() if batch.missing else batch.rows), batch.missing
                nonfinite = _kernels.any_nonfinite(sums.view(np.int32).reshape(-1))
                init = batch.init  # the same keys are absent as at the lookup: their initial rows stand
            else:
                rows, missing, nonfinite, _ = self._table.find_check(batch.keys, sums)
            bad = int(np.count_nonzero(~np.isfinite(sums).all(axis=1))) if nonfinite else 0
            self._update_rows(batch.keys, rows, sums, batch.counts, int(step), missing, bad, distinct=True,
                              init=init)

    def _apply(self, keys: np.ndarray, grads: np.ndarray, counts: np.ndarray, step: int) -> None:
        # Resolve rows and check the gradients before anything changes: a NaN or an inf
        # rejects the whole update.
        rows, missing, bad, ascending, init = self._rows_checked(keys, grads)
        self._update_rows(keys, rows, grads, counts, step, missing, bad, distinct=len(keys) <= 1 or ascending,
                          init=init)

    def _update_rows(self, keys: np.ndarray, rows: np.ndarray, grads: np.ndarray, counts: np.ndarray, step: int,
                     missing: int, bad: int, distinct: bool, init: np.ndarray | None = None) -> None:
        """The update once `rows` (N,) int64 of `keys` are resolved (-1 absent; may be written)
        and `grads` checked (`bad` rows non-finite: rejected); `distinct`: no key repeats;
        `init`: initial rows of the absent keys, in their order in `keys`, if a lookup made them."""
        if bad:
            raise ValueError(f"table {self.name!r}: non-finite gradient (NaN or inf) for {bad} of {len(keys)} "
                             "keys; update rejected, state unchanged")
        self._step = max(self._step, step)
        if len(keys) == 0:
            return
        if missing:
            absent = rows < 0
            rows[absent] = self._admit(keys[absent], counts[absent], init)
            live = rows >= 0
            if not live.all():  # gradients of keys still waiting for admission are dropped
                keys, grads, counts, rows = keys[live], grads[live], counts[live], rows[live]
                if len(rows) == 0:
                    return
        if not distinct:
            # Not strictly ascending (np.unique's output always is): there may be duplicates.
            rows, grads, counts = _kernels.merge_duplicates(rows, grads, counts)
        self._opt.apply_rows(self._values, self._slots, self._meta, rows, grads, counts, step)

    def _rows_checked(self, keys: np.ndarray, grads: np.ndarray
                      ) -> tuple[np.ndarray, int, int, bool, np.ndarray | None]:
        """What an update must know before it writes, for `keys` (N,) int64 and `grads` (N, D)
        float32 C-contiguous -> (rows (N,) int64, -1: absent, a fresh array; number absent;
        number of rows of `grads` with a NaN or an inf; whether `keys` are strictly ascending;
        the lookup's initial rows of the absent keys, or None).

        The rows are the last training lookup's when it asked for exactly these keys and no
        key was inserted or deleted since (checked in one pass over the keys), else a probe
        of the hash table; either way the other answers come from the same pass."""
        bits = grads.view(np.int32)  # (N, D): the float32 bits the finiteness test reads
        r = self._resolved
        if (r is not None and r.generation == self._table.generation and len(r.keys) == len(keys)
                and np.array_equal(r.keys, keys)):
            rows, init = r.rows.copy(), r.init
            missing, nonfinite, ascending = _kernels.check_rows(keys, rows, bits)
        else:
            init = None
            rows, missing, nonfinite, ascending = self._table.find_check(keys, grads)
        # Rare: then count the offending rows for the error message.
        bad = int(np.count_nonzero(~np.isfinite(grads).all(axis=1))) if nonfinite else 0
        return rows, int(missing), bad, bool(ascending), init

    def _admit(self, keys: np.ndarray, counts: np.ndarray, init: np.ndarray | None = None) -> np.ndarray:
        """Rows for row-less `keys` (M,) (duplicates allowed): the admission filter decides,
        admitted keys get fresh rows (values `init` (M, D), one per key, where a lookup made
        them: `initial_rows` of the same keys, not computed twice); -1 for keys still waiting."""
        uniq, inv, _ = unique(keys)  # sorted, so new rows are handed out in key order
        ucounts = np.bincount(inv, weights=counts, minlength=len(uniq)).astype(np.int64)
        admitted, seen = self._filter.admit(uniq, ucounts)
        urows = np.full(len(uniq), -1, dtype=np.int64)
        if admitted.any():
            new = uniq[admitted]
            values = None
            if init is not None:
                values = np.empty((len(uniq), self.dim), np.float32)
                values[inv] = init
                values = values[admitted]
            # freq starts at the occurrences seen before this update; _apply adds this one's.
            before = seen[admitted] - ucounts[admitted]
            urows[admitted] = self._create(new, freqs=before, values=values)
        return urows[inv]

    def _create(self, keys: np.ndarray, freqs: np.ndarray | None = None, versions: np.ndarray | None = None,
                values: np.ndarray | None = None, slots: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """Insert absent, distinct `keys` (M,) with their row contents; returns their rows.

        Missing parts default to: initial values, freq 0, version -1, fresh optimizer slots.
        """
        m = len(keys)
        rows = self._table.insert(keys)
        self._grow(self._table.high_water)
        if values is None:
            values = initial_rows(self.config.initializer, self.config.seed, keys, self.dim)
        meta = np.empty((m, 2), dtype=np.int64)
        meta[:, _FREQ] = 0 if freqs is None else freqs
        meta[:, _VERSION] = -1 if versions is None else versions
        if slots is None:
            slots = {s.name: np.full(s.shape(m, self.dim), s.init, dtype=s.dtype) for s in self._specs}
            self._opt.init_slots(values, slots)
        self._values[rows] = values
        self._meta[rows] = meta
        for s in self._specs:
            self._slots[s.name][rows] = slots[s.name]
        return rows

    def insert_rows(self, keys: np.ndarray, values: np.ndarray, freqs: np.ndarray | None = None,
                    versions: np.ndarray | None = None, slots: dict[str, np.ndarray] | None = None) -> None:
        """Bulk-load rows for keys that have none (import, warm start, benchmarks).

        keys: (M,) int64 distinct and absent; values: (M, D) float32; freqs/versions: (M,)
        int64 (default 0 / -1); slots: name -> (M, D) or (M,) for every slot, or None for
        fresh slots derived from `values`.
        """
        keys = self._check_keys(keys)
        values = np.asarray(values)
        if values.shape != (len(keys), self.dim):
            raise ValueError(f"table {self.name!r}: values must have shape ({len(keys)}, {self.dim}), "
                             f"got {values.shape}")
        if _has_duplicates(keys):
            raise ValueError(f"table {self.name!r}: insert_rows keys must be distinct")
        if slots is not None and set(slots) != set(self._slots):
            raise ValueError(f"table {self.name!r}: slots must be exactly {sorted(self._slots)}, got {sorted(slots)}")
        with self._lock:
            if (self._table.find(keys) >= 0).any():
                raise ValueError(f"table {self.name!r}: insert_rows got keys that already have rows")
            self._create(keys, freqs=freqs, versions=versions, values=values, slots=slots)

    # ---- eviction ------------------------------------------------------------------------

    def evict(self, step: int | None = None) -> EvictionReport:
        """Evict by TTL (`steps_to_live`) and L2 norm (`l2_evict_threshold`), both if set.

        step: the current global step (default: the largest applied). A key is stale when
        its version < step - steps_to_live; small when 0.5 * ||v||^2 < l2_evict_threshold.
        """
        with self._lock:
            return self._evict(self._step if step is None else int(step))

    def _evict(self, step: int) -> EvictionReport:
        cfg = self.config
        keys, rows = self._table.items()
        ttl = np.zeros(len(keys), dtype=bool)
        small = np.zeros(len(keys), dtype=bool)
        if cfg.steps_to_live > 0:
            ttl = self._meta[rows, _VERSION] < step - cfg.steps_to_live
        if cfg.l2_evict_threshold > 0:
            v = np.take(self._values, rows, axis=0).astype(np.float64)
            small = 0.5 * np.einsum("ij,ij->i", v, v) < cfg.l2_evict_threshold
            small &= ~ttl
        gone = ttl | small
        self._table.delete(keys[gone])
        n = int(np.count_nonzero(gone))
        self._evicted_total += n
        return EvictionReport(table=self.name, step=step, rows_ttl=int(np.count_nonzero(ttl)),
                              rows_l2=int(np.count_nonzero(small)), bytes_freed=n * self.row_bytes)

    # ---- snapshots, export, import -------------------------------------------------------

    def snapshot(self, since_step: int | None = None) -> EVSnapshot:
        """A consistent copy of the whole state, rows sorted by key; with `since_step`, only the
        rows updated after that global step (an increment's, `psrec.ev.increment`)."""
        with self._lock:
            keys, rows = self._table.items()
            if since_step is not None:
                changed = self._meta[rows, _VERSION] > since_step
                keys, rows = keys[changed], rows[changed]
            # The keys are distinct: a plain (SIMD) sort and a probe for their rows take ~half
            # the time of an argsort on 4M keys.
            keys = np.sort(keys)
            rows = self._table.find(keys)
            meta = self._meta[rows]
            farrays, fmeta = self._filter.state()
            return EVSnapshot(
                name=self.name, dim=self.dim, step=self._step, optimizer=self.config.optimizer.name,
                keys=keys, values=np.take(self._values, rows, axis=0),
                freqs=np.ascontiguousarray(meta[:, _FREQ]), versions=np.ascontiguousarray(meta[:, _VERSION]),
                slots={k: np.take(a, rows, axis=0) for k, a in self._slots.items()},
                filter_kind=self.config.filter.kind, filter_arrays=farrays, filter_meta=fmeta,
                config=dataclasses.asdict(self.config), evicted_total=self._evicted_total)

    def export(self, path: str | os.PathLike, evict: bool = True,
               base: str | os.PathLike | None = None) -> EvictionReport | None:
        """Write an export directory (format in `psrec.ev.export`) at `path`.

        evict: first run eviction if the config enables TTL or L2 eviction; the report of
        that pass is returned (None when none ran). Eviction and snapshot happen under one
        lock hold, so the export is of one moment.
        base: an export of this table (full or incremental) that this one continues: only the
        rows updated since it are written, an incremental export (`psrec.ev.increment`).
        """
        since = None if base is None else export_step(base)
        with self._lock:
            report = None
            if evict and (self.config.steps_to_live > 0 or self.config.l2_evict_threshold > 0):
                report = self._evict(self._step)
            snap = self.snapshot(since)
            live = None
            if since is not None and self._evicted_total:  # rows may have gone since the base
                live = np.sort(self._table.items()[0])
        save_snapshot(snap, path, since_step=since, live_keys=live)
        return report

    def restore(self, sources: Sequence[EVSnapshot | str | os.PathLike], shard_index: int = 0,
                num_shards: int = 1, partition: Partition | None = None) -> None:
        """Replace the whole state with this shard's part of `sources`.

        sources: snapshots or export directories, e.g. one per old shard (N of them).
        shard_index, num_shards: this variable is shard `shard_index` of `num_shards` (M).
        partition: keys (K,) int64 -> shard (K,) int64; default `hash_mod_partition(num_shards)`.

        Exports must match this variable's dim, optimizer and filter kind (use
        `psrec.ev.warm_start` to migrate between configurations). One source with one shard
        restores bit-exactly.
        """
        if not 0 <= shard_index < num_shards:
            raise ValueError(f"table {self.name!r}: shard_index {shard_index} not in [0, {num_shards})")
        part = partition or hash_mod_partition(num_shards)
        snaps = [s if isinstance(s, EVSnapshot) else load_snapshot(Path(s)) for s in sources]
        if not snaps:
            raise ValueError(f"table {self.name!r}: restore needs at least one source")
        for s in snaps:
            s.validate()
            self._check_compatible(s)
        keep = lambda k: np.asarray(part(k)) == shard_index  # noqa: E731
        masks = [keep(s.keys) for s in snaps]
        keys = np.concatenate([s.keys[m] for s, m in zip(snaps, masks)])
        if _has_duplicates(keys):
            raise ValueError(f"table {self.name!r}: the same key appears in two sources")
        values = np.concatenate([s.values[m] for s, m in zip(snaps, masks)])
        freqs = np.concatenate([s.freqs[m] for s, m in zip(snaps, masks)])
        versions = np.concatenate([s.versions[m] for s, m in zip(snaps, masks)])
        slots = {k: np.concatenate([s.slots[k][m] for s, m in zip(snaps, masks)]) for k in self._slots}
        with self._lock:
            self._reset(max(16, len(keys)))
            self._filter.restore([(s.filter_arrays, s.filter_meta) for s in snaps], keep)
            if len(keys):
                self._create(keys, freqs=freqs, versions=versions, values=values, slots=slots)
            self._step = max(s.step for s in snaps)
            # A lifetime total belongs to the table as a whole: it survives a 1 -> 1 restore,
            # but split across M new shards it would be counted M times, so it restarts.
            self._evicted_total = sum(s.evicted_total for s in snaps) if num_shards == 1 else 0

    def _check_compatible(self, s: EVSnapshot) -> None:
        want = (self.dim, self.config.optimizer.name, self.config.filter.kind, set(self._slots))
        got = (s.dim, s.optimizer, s.filter_kind, set(s.slots))
        if want != got:
            raise ValueError(f"table {self.name!r}: export {s.name!r} has dim/optimizer/filter/slots {got}, "
                             f"this table has {want}; use psrec.ev.warm_start to migrate")

    @classmethod
    def load(cls, config: EVConfig, sources: Sequence[EVSnapshot | str | os.PathLike], name: str | None = None,
             shard_index: int = 0, num_shards: int = 1, partition: Partition | None = None) -> EmbeddingVariable:
        """A new variable restored from `sources` (see `restore`)."""
        first = sources[0] if sources else None
        default = first.name if isinstance(first, EVSnapshot) else Path(first).name if first else "ev"
        ev = cls(config, name=name or default)
        ev.restore(sources, shard_index=shard_index, num_shards=num_shards, partition=partition)
        return ev
