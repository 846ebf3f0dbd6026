"""An int64 key -> row index hash table whose every operation works on a whole batch.

Open addressing over a power-of-two array of 32-byte buckets, each two 16-byte slots
`(key int64, row int64)`; a key hashes to a home bucket and, when that is full, probes the
following buckets in order (linear probing over buckets). A bucket is one aligned half cache
line, so a lookup round costs one `np.take` of 32-byte items per unresolved key; at load
<= 0.5 about 98% of keys sit in their home bucket and round 1 resolves them. The Python loop
runs once per probe round, never once per key. Keys are arbitrary int64 (field-tagged, never
remapped to a dense range); slot state lives in the row column (EMPTY = -1, TOMBSTONE = -2),
so every key value is usable.

Invariants the batch algorithms rely on:
* Slots are filled in probe order (slot 0 before slot 1 of a bucket, buckets in order), and
  deletion leaves a tombstone, never EMPTY. So a slot holding a row is preceded by no EMPTY
  slot on any probe sequence through it, and a search may stop at the first EMPTY slot.
* Along a key's probe sequence, the first slot holding that key value is its live slot if the
  key is present: inserts take the first free slot, and the key's own tombstone is free.

Rows are small integers handed out by the table itself: freed rows (from `delete`) are
reused first, then fresh rows `[high_water, ...)`. The embedding variable indexes its
row-major arrays with them.

Growth doubles the bucket array and re-inserts the live keys in one vectorised pass, which
costs O(live) but happens after O(live) inserts: amortised O(1) per key, never a per-insert
pause proportional to the table. Tombstones are cleared by the same rebuild.

Example:
    >>> t = HashTable()
    >>> rows = t.insert(np.array([7, -3], dtype=np.int64))
    >>> t.find(np.array([-3, 5, 7], dtype=np.int64)).tolist() == [rows[1], -1, rows[0]]
    True
"""
from __future__ import annotations

import numpy as np

from psrec.ev._mix import GOLDEN

__all__ = ["HashTable"]

_EMPTY = -1  # never used: ends every probe sequence
_TOMB = -2  # deleted: probes continue past it, inserts may reuse it
_BUCKET = np.dtype((np.void, 32))  # two (key, row) slots moved by np.take as one item
# Unresolved keys below which probing reads windows of buckets: a window round costs a dozen
# array calls whatever its size, so for the ~2% of a batch that overflow their home bucket at
# load 0.5 one round of 8 buckets (256 bytes each) ends almost every search at once.
_WINDOW_SWITCH = 4096
_FIRST_WINDOW = 8


class HashTable:
    """Vectorised int64 -> row map with deletion and row reuse.

    Args:
        capacity: initial number of slots (rounded up to a power of two, at least 16).
        max_load: fraction of slots (live + tombstones) allowed before growing.

    Row indices are int64 in `[0, high_water)`; -1 means "absent" in every result.
    """

    def __init__(self, capacity: int = 1024, max_load: float = 0.5) -> None:
        if not 0.05 <= max_load <= 0.9:
            raise ValueError(f"max_load must be in [0.05, 0.9], got {max_load}")
        self._max_load = max_load
        self._live = 0
        self._next_row = 0
        self._free = np.empty(64, dtype=np.int64)  # stack of released rows; top at _nfree - 1
        self._nfree = 0
        self._generation = 0
        self._alloc(_pow2(max(16, capacity)))

    # ---- sizes ---------------------------------------------------------------------------

    def __len__(self) -> int:
        """Number of live keys."""
        return self._live

    @property
    def capacity(self) -> int:
        """Number of slots (two per bucket)."""
        return 2 * self._nb

    @property
    def high_water(self) -> int:
        """One past the largest row ever handed out: row arrays need this many entries."""
        return self._next_row

    @property
    def generation(self) -> int:
        """Counts the inserts and deletes so far: while it is unchanged, `find` of the same keys
        gives the same rows, so a caller may keep resolved rows and reuse them."""
        return self._generation

    @property
    def nbytes(self) -> int:
        """Memory held by the table itself, in bytes (buckets plus the free-row stack)."""
        return self._b.nbytes + self._free.nbytes

    # ---- batch operations ----------------------------------------------------------------

    def find(self, keys: np.ndarray) -> np.ndarray:
        """Rows of `keys` (N,) int64 -> (N,) int64, -1 where a key is absent."""
        return self._probe(keys, want_slots=False)[0]

    def insert(self, keys: np.ndarray) -> np.ndarray:
        """Insert absent, distinct `keys` (N,) int64; returns their new rows (N,) int64.

        The caller guarantees the precondition (the embedding variable inserts only keys
        `find` reported missing, after `np.unique`); it is not re-checked on this hot path.
        """
        n = len(keys)
        if n == 0:
            return np.empty(0, dtype=np.int64)
        self._reserve(n)
        rows = self._alloc_rows(n)
        self._place(keys, rows)
        self._live += n
        self._generation += 1
        return rows

    def delete(self, keys: np.ndarray) -> np.ndarray:
        """Remove `keys` (N,) int64; returns the freed rows of those that were present (M,).

        Freed rows go on a stack and are handed out again by later inserts.
        """
        rows, slots = self._probe(keys, want_slots=True)
        ok = rows >= 0
        slots, rows = slots[ok], rows[ok]
        if len(slots) > 1:
            slots, first = np.unique(slots, return_index=True)  # a key listed twice is freed once
            rows = rows[first]
        if len(slots):
            self._b[slots >> 1, 2 * (slots & 1) + 1] = _TOMB
            self._tombs += len(slots)
            self._live -= len(slots)
            self._release_rows(rows)
            self._generation += 1
        return rows

    def items(self) -> tuple[np.ndarray, np.ndarray]:
        """All live `(keys (L,) int64, rows (L,) int64)`, in slot order (arbitrary)."""
        s = self._b.reshape(-1, 2)  # (2 * buckets, 2): key, row per slot
        live = s[:, 1] >= 0
        return s[live, 0].copy(), s[live, 1].copy()

    def clear(self) -> None:
        """Remove every key and forget every row."""
        generation = self._generation
        self.__init__(16, self._max_load)
        self._generation = generation + 1

    # ---- internals -----------------------------------------------------------------------

    def _alloc(self, slots: int) -> None:
        nb = slots // 2
        self._nb = nb
        self._mask = nb - 1
        self._shift = np.uint64(64 - (nb.bit_length() - 1))
        self._b = np.empty((nb, 4), dtype=np.int64)  # (buckets, 4): key0, row0, key1, row1
        self._b[:, 0::2] = 0
        self._b[:, 1::2] = _EMPTY
        self._flat = self._b.view(_BUCKET).reshape(nb)  # (buckets,) 32-byte items, same memory
        self._tombs = 0

    def _home(self, keys: np.ndarray) -> np.ndarray:
        """Home bucket of each key: Fibonacci hashing, the top bits of key * 2^64/phi.

        Every key bit reaches the kept top bits through the multiply, so field-tagged keys
        and dense ids spread evenly; two passes over the batch, which matters on lookups.
        """
        with np.errstate(over="ignore"):
            h = keys.view(np.uint64) * GOLDEN
        h >>= self._shift
        return h.view(np.int64)

    def _probe(self, keys: np.ndarray, want_slots: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """(rows (N,), slots (N,) or None): row and slot index (2 * bucket + j) of each live
        key, -1 for absent keys. A search stops at the first slot that holds the key (a
        tombstone of it means absent) or is EMPTY (see the module invariants).

        The common case (key in its home bucket) costs one gather and five whole-batch passes
        (two compares, one select, one test, one nonzero); everything else touches only the
        few keys that need it, because on a 4M-row table those passes cost about as much as
        the gather of the embedding rows itself.
        """
        n = len(keys)
        home = self._home(keys)
        rec = np.take(self._flat, home).view(np.int64).reshape(n, 4)  # (N, 4): one gather
        m0 = rec[:, 0] == keys
        m1 = rec[:, 2] == keys
        rows = np.where(m0, rec[:, 1], rec[:, 3])  # slot 0 first: it precedes slot 1 on the probe
        # Neither slot matched, or (rarely: a tombstone of the key behind it, or key 0 against an
        # EMPTY slot's zeroed key) both did; those few are sorted out below.
        odd = np.flatnonzero(m0 == m1)
        if odd.size:
            odd = odd[~m0[odd]]  # both matched: slot 0 holds the answer already in `rows`
            rows[odd] = _EMPTY
            # Slot 1 is filled only after slot 0, so a bucket whose slot 1 is not EMPTY is full
            # and the search goes on past it.
            pend = odd[rec[odd, 3] != _EMPTY]
        else:
            pend = odd
        slots = None
        if want_slots:
            slots = 2 * home + ~m0
            slots[odd] = -1
        if pend.size:
            self._probe_tail(keys, home, pend, rows, slots)
        if self._tombs:
            np.maximum(rows, _EMPTY, out=rows)  # a matching tombstone (-2) means absent (-1)
            if want_slots:
                slots[rows < 0] = -1
        return rows, slots

    def _probe_tail(self, keys: np.ndarray, home: np.ndarray, pend: np.ndarray, rows: np.ndarray,
                    slots: np.ndarray | None) -> None:
        """Continue the search of keys `pend` past their full home buckets, filling `rows`
        (and `slots`) in place. While many keys remain, one bucket per round; once few remain,
        windows of buckets that double in width, so a long tail costs O(log length) rounds."""
        cur, kp = home[pend], keys[pend]
        while len(pend) > _WINDOW_SWITCH:
            cur = (cur + 1) & self._mask
            rec = np.take(self._flat, cur).view(np.int64).reshape(len(cur), 4)
            m0 = rec[:, 0] == kp
            m1 = rec[:, 2] == kp
            for j, m in ((0, m0), (1, m1 & ~m0)):
                hit = np.flatnonzero(m)
                rows[pend[hit]] = rec[hit, 2 * j + 1]
                if slots is not None:
                    slots[pend[hit]] = 2 * cur[hit] + j
            go = np.flatnonzero(~(m0 | m1) & (rec[:, 3] != _EMPTY))
            pend, cur, kp = pend[go], cur[go], kp[go]
        cur = cur + 1
        width = _FIRST_WINDOW
        while pend.size:
            p = len(pend)
            pos = (cur[:, None] + np.arange(width)) & self._mask  # (P, W) buckets
            rec = np.take(self._flat, pos).view(np.int64).reshape(p, 2 * width, 2)  # (P, 2W) slots
            match = rec[:, :, 0] == kp[:, None]
            stop = match | (rec[:, :, 1] == _EMPTY)
            first = stop.argmax(axis=1)  # (P,) the first slot that ends the search
            ended = stop[np.arange(p), first]
            hit = np.flatnonzero(ended & match[np.arange(p), first])
            rows[pend[hit]] = rec[hit, first[hit], 1]
            if slots is not None:
                slots[pend[hit]] = 2 * pos[hit, first[hit] >> 1] + (first[hit] & 1)
            go = ~ended
            pend, cur, kp = pend[go], cur[go] + width, kp[go]
            width *= 2

    def _place(self, keys: np.ndarray, rows: np.ndarray) -> None:
        """Write absent, distinct `keys` with `rows` into free slots (capacity is reserved).

        Each round, the pending keys that share a bucket are ranked; rank r takes the bucket's
        r-th free slot in slot order, and keys left without one move to the next bucket. That
        keeps slots filled in probe order (the module invariants) with a few array operations.
        """
        pend = np.arange(len(keys))
        cur = self._home(keys)
        while pend.size:
            p = len(pend)
            order = np.argsort(cur, kind="stable")
            sc = cur[order]
            starts = np.flatnonzero(np.concatenate(([True], sc[1:] != sc[:-1])))
            rank = np.empty(p, dtype=np.int64)
            rank[order] = np.arange(p) - np.repeat(starts, np.diff(np.append(starts, p)))
            r0, r1 = self._b[cur, 1], self._b[cur, 3]
            free0, free1 = r0 < 0, r1 < 0
            j = np.where(rank == 0, np.where(free0, 0, np.where(free1, 1, -1)),
                         np.where((rank == 1) & free0 & free1, 1, -1))
            ok = np.flatnonzero(j >= 0)
            b, col = cur[ok], 2 * j[ok]
            self._tombs -= int(np.count_nonzero(self._b[b, col + 1] == _TOMB))
            self._b[b, col] = keys[pend[ok]]
            self._b[b, col + 1] = rows[pend[ok]]
            go = np.flatnonzero(j < 0)
            pend, cur = pend[go], (cur[go] + 1) & self._mask

    def _reserve(self, n: int) -> None:
        need = self._live + n
        if need + self._tombs <= self._max_load * self.capacity:
            return
        # Rebuild at a size where the live keys fill at most 3/4 of the allowed load: either
        # doubling (many live keys) or the same size (mostly tombstones). Both leave at least
        # a quarter of the allowed load free, so rebuilds stay amortised O(1) per operation.
        cap = self.capacity
        while need > 0.75 * self._max_load * cap:
            cap *= 2
        keys, rows = self.items()
        self._alloc(cap)
        self._place(keys, rows)

    def _alloc_rows(self, n: int) -> np.ndarray:
        reuse = min(n, self._nfree)
        out = np.empty(n, dtype=np.int64)
        out[:reuse] = self._free[self._nfree - reuse:self._nfree]
        self._nfree -= reuse
        out[reuse:] = np.arange(self._next_row, self._next_row + n - reuse)
        self._next_row += n - reuse
        return out

    def _release_rows(self, rows: np.ndarray) -> None:
        need = self._nfree + len(rows)
        if need > len(self._free):
            grown = np.empty(max(need, 2 * len(self._free)), dtype=np.int64)
            grown[:self._nfree] = self._free[:self._nfree]
            self._free = grown
        self._free[self._nfree:need] = rows
        self._nfree = need


def _pow2(n: int) -> int:
    return 1 << (int(n) - 1).bit_length()
