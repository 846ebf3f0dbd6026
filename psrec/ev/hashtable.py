"""An int64 key -> row index hash table whose every operation works on a whole batch.

Open addressing over a power-of-two array of 32-byte buckets, each two 16-byte slots
`(key int64, row int64)`; a key hashes to a home bucket and, when that is full, probes the
following buckets in order (linear probing over buckets). A bucket is one aligned half cache
line (the array is allocated 64-byte aligned, `psrec.ev._memory`: numpy's own 16-byte
alignment would split every other bucket across two lines), so at load <= 0.5, where about
98% of keys sit in their home bucket, a search costs one cache miss. Keys are arbitrary
int64 (field-tagged, never remapped to a dense range); slot state lives in the row column
(EMPTY = -1, TOMBSTONE = -2), so every key value is usable. The searches, inserts and
deletes are compiled loops over the batch (`psrec.ev._kernels`): no per-key Python loop, and
one pass over the batch instead of one per numpy step.

Invariants the searches rely on:
* Slots are filled in probe order (slot 0 before slot 1 of a bucket, buckets in order), and
  deletion leaves a tombstone, never EMPTY. So a slot holding a row is preceded by no EMPTY
  slot on any probe sequence through it, and a search may stop at the first EMPTY slot.
* Along a key's probe sequence, the first slot holding that key value is its live slot if the
  key is present: inserts take the first free slot, and the key's own tombstone is free.

Rows are small integers handed out by the table itself: freed rows (from `delete`) are
reused first, then fresh rows `[high_water, ...)`. The embedding variable indexes its
row-major arrays with them.

Growth doubles the bucket array and re-inserts the live keys in one compiled pass, which
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

from psrec.ev import _kernels, _raw_kernels
from psrec.ev._memory import aligned_empty

__all__ = ["HashTable"]

_EMPTY = -1  # never used: ends every probe sequence
_TOMB = -2  # deleted: probes continue past it, inserts may reuse it


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
        rows = np.empty(len(keys), dtype=np.int64)
        _kernels.find(self._b, self._shift, np.ascontiguousarray(keys, dtype=np.int64), rows)
        return rows

    def find_check(self, keys: np.ndarray, block: np.ndarray) -> tuple[np.ndarray, int, bool, bool]:
        """`find`, gathering in the same pass what an update needs to know before it writes:
        `block` (N, M) float32 C-contiguous is a caller's array, row i belonging to keys[i]
        -> (rows (N,) int64 with -1 where absent, number absent, whether any entry of `block`
        is NaN or +-inf, whether `keys` are strictly ascending).

        The embedding variable checks a batch's gradients this way: the search leaves the
        core idle on bucket misses, so on a table larger than the cache the tests cost
        little there (`_kernels.find_check`).
        """
        if block.ndim != 2 or len(block) != len(keys):
            raise ValueError(f"find_check: block must be ({len(keys)}, M), got {block.shape}")
        rows = np.empty(len(keys), dtype=np.int64)
        bits = np.ascontiguousarray(block, dtype=np.float32).view(np.int32)  # (N, M): the float32 bits
        missing, nonfinite, ascending = _kernels.find_check(self._b, self._shift,
                                                            np.ascontiguousarray(keys, dtype=np.int64), rows, bits)
        return rows, int(missing), bool(nonfinite), bool(ascending)

    def find_gather(self, keys: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """`find` fused with a gather of each key's row from a caller's row-major array.

        keys (N,) int64; values (R, D) float32 C-contiguous with R >= high_water ->
        (rows (N,) int64 with -1 where absent, out (N, D) float32 = values[rows] with zero
        rows where absent, number absent). One pass: the bucket and the row of a key are
        read back to back.
        """
        n = len(keys)
        rows = np.empty(n, dtype=np.int64)
        out = np.empty((n, values.shape[1]), dtype=np.float32)
        missing = _kernels.find_gather(self._b, self._shift, np.ascontiguousarray(keys, dtype=np.int64),
                                       values, rows, out)
        return rows, out, int(missing)

    def dedup_find_gather(self, keys: np.ndarray, values: np.ndarray, ids: np.ndarray,
                          block: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
        """A raw batch's lookup in one compiled call (`psrec.ev._raw_kernels`): keys (N,) int64
        draws, duplicates allowed; values (R, D) float32 C-contiguous, R >= high_water; ids a
        caller's all -1 int32 scratch map and block an (N, D) float32 scratch block
        (`psrec.ev.raw.scratch`) -> (distinct keys (U,)
        int64 in order of first occurrence, inverse (N,) int32 with keys == distinct[inverse],
        counts (U,) int64, rows (U,) int64 with -1 where absent, out (N, D) float32 =
        values[rows[inverse]] with zero rows where absent, number of absent distinct keys).
        """
        n = len(keys)
        if n > (1 << 31) - 1:
            raise ValueError(f"dedup_find_gather: {n} keys; at most {(1 << 31) - 1} per call (int32 inverse)")
        if len(ids) < 2 * n or len(ids) & (len(ids) - 1):
            raise ValueError(f"dedup_find_gather: the scratch map needs a power-of-two size >= {2 * n}")
        if block.shape != (n, values.shape[1]):
            raise ValueError(f"dedup_find_gather: the scratch block must be ({n}, {values.shape[1]}), "
                             f"got {block.shape}")
        inverse = np.empty(n, np.int32)
        uniq, counts, rows = (np.empty(n, np.int64) for _ in range(3))
        out = np.empty((n, values.shape[1]), dtype=np.float32)
        u, missing = _raw_kernels.dedup_find_gather(self._b, self._shift, np.ascontiguousarray(keys, dtype=np.int64),
                                                    ids, values, inverse, uniq, counts, rows, block, out)
        return uniq[:u], inverse, counts[:u], rows[:u], out, int(missing)

    def find_gather_expand(self, uniq: np.ndarray, inverse: np.ndarray, values: np.ndarray,
                           block: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """`dedup_find_gather` of draws already de-duplicated: uniq (U,) int64 distinct and
        inverse (N,) int32 into them (from an earlier `dedup_find_gather`; not re-checked on
        this hot path beyond shapes), block a (U, D) scratch -> (rows (U,) int64, -1 absent;
        out (N, D) float32 = values[rows[inverse]], zero rows where absent; number absent)."""
        u = len(uniq)
        if block.shape[0] < u or block.shape[1] != values.shape[1]:
            raise ValueError(f"find_gather_expand: the scratch block must be (>= {u}, {values.shape[1]}), "
                             f"got {block.shape}")
        rows = np.empty(u, np.int64)
        out = np.empty((len(inverse), values.shape[1]), dtype=np.float32)
        missing = _raw_kernels.find_gather_expand(self._b, self._shift, uniq, u, inverse, values, rows, block, out)
        return rows, out, int(missing)

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
        self._place(np.ascontiguousarray(keys, dtype=np.int64), rows)
        self._live += n
        self._generation += 1
        return rows

    def delete(self, keys: np.ndarray) -> np.ndarray:
        """Remove `keys` (N,) int64; returns the freed rows of those that were present (M,),
        in the order of their first occurrence in `keys`.

        Freed rows go on a stack and are handed out again by later inserts.
        """
        freed = np.empty(len(keys), dtype=np.int64)
        m = int(_kernels.delete(self._b, self._shift, np.ascontiguousarray(keys, dtype=np.int64), freed))
        rows = freed[:m].copy()
        if m:
            self._tombs += m
            self._live -= m
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
        self._shift = np.uint64(64 - (nb.bit_length() - 1))  # home bucket = top log2(nb) hash bits
        # (buckets, 4): key0, row0, key1, row1; aligned, so a bucket never straddles two cache lines
        self._b = aligned_empty((nb, 4), np.int64)
        self._b[:, 0::2] = 0
        self._b[:, 1::2] = _EMPTY
        self._tombs = 0

    def _place(self, keys: np.ndarray, rows: np.ndarray) -> None:
        """Write absent, distinct `keys` with `rows` into free slots (capacity is reserved)."""
        reused = int(_kernels.place(self._b, self._shift, keys, rows))
        if reused < 0:
            raise RuntimeError("hash table: no free slot for an insert (capacity was not reserved)")
        self._tombs -= reused

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
