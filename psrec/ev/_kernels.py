"""Compiled (numba) loops for the embedding variable's hot paths.

numpy needs a pass over the batch per elementary step (hash, bucket gather, compare, select,
row gather; then a gather and a scatter per state array on apply), and on a 4M-row table each
pass is a round of cache misses plus a temporary array. Here each stage is one loop over the
batch: a search resolves a key in its bucket (one cache line) and an apply updates freq,
version, slots and values of a row in place. The loops request the memory of the key or row
`_AHEAD` iterations ahead (`_prefetch`), so misses overlap as in numpy's branch-free gathers.
Measured on 34K Zipf keys of a 4M-row table: a search alone runs faster than `np.take` of
the resolved rows; a search and a row copy run best as two such loops, not one fused loop,
and so do a search and an Adagrad update (a fused loop that resolves key i + `_AHEAD` while
it updates row i measured 0-5% slower). What an update must know before it writes (are the
gradients finite, are the keys sorted, which are absent) rides in the search loop instead
(`find_check`), where the core would otherwise wait on misses.

Every kernel is `@njit(cache=True, nogil=True, ...)`: the machine code is written next to this
file (or, where that is read-only, to numba's per-user cache) on the first call of each
argument type and loaded from there by later processes (Ray actors included), so a process
pays for compiling only when this file changed. Callers pass C-contiguous arrays of the
dtypes documented below (one specialisation each), and floats/ints as Python scalars.

Hash-table layout (see `psrec.ev.hashtable`): `buckets` is (NB, 4) int64, NB a power of two,
columns `key0, row0, key1, row1`; a row column holds a row >= 0, EMPTY (-1) or TOMBSTONE (-2).
A key's home bucket is the top `log2(NB)` bits of `key * GOLDEN` (mod 2^64), passed as
`shift = 64 - log2(NB)`; probing visits slot 0 then slot 1 of each bucket, buckets in order
(wrapping), and stops at the first slot that holds the key (a tombstone of it: absent) or is
EMPTY. Since an EMPTY slot's key column is 0, EMPTY is tested before the key compare.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from psrec.ev._mix import GOLDEN

__all__ = ["find", "find_check", "check_rows", "any_nonfinite", "find_gather", "place", "delete",
           "merge_duplicates", "touch", "gather_rows", "scatter_rows", "apply_sgd", "apply_adagrad"]

_EMPTY = -1
_TOMB = -2
_GOLDEN = GOLDEN  # a global numba freezes into the machine code as a uint64 constant
# Every kernel: cached machine code, the GIL released while it runs, and numpy's float error
# model (x / 0 gives inf instead of raising): Python's model puts a zero test in front of
# every division, which keeps LLVM from vectorising the optimizer loops.
_KERNEL = dict(cache=True, nogil=True, error_model="numpy")
# Iterations ahead at which a loop requests the memory it will need: a key costs a few ns of
# work and a miss ~100 ns, so a dozen or more requests must be in flight. 8, 16 and 32
# measured alike on the benchmark, for the searches and for the Adagrad apply (as did a
# second, farther prefetch into L2 only).
_AHEAD = 16


@intrinsic
def _prefetch(typingctx, arr, index, write):
    """Hint the CPU to start loading row `index` of array `arr` (no fault, no result).

    A search branches on the bucket it loads, and a mispredicted branch discards the loads
    issued after it, so without hints few misses overlap: the search-and-copy loop ran at
    ~0.1x `np.take` without them and ~0.6x with them. `write` (a literal bool) asks for the
    line in a writable state, for rows the loop will update.
    """
    if not (isinstance(arr, types.Array) and isinstance(index, types.Integer)
            and isinstance(write, types.BooleanLiteral)):
        return None
    rw = int(write.literal_value)

    def codegen(context, builder, sig, args):
        aryty = sig.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        idx = context.cast(builder, args[1], sig.args[1], types.intp)
        zero = context.get_constant(types.intp, 0)
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [idx] + [zero] * (aryty.ndim - 1))
        i32, i8p = ir.IntType(32), ir.IntType(8).as_pointer()
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
                                            "llvm.prefetch.p0")
        # (address, rw, locality 3 = keep in all cache levels, 1 = data cache)
        builder.call(fn, [builder.bitcast(ptr, i8p), ir.Constant(i32, rw), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return types.void(arr, index, write), codegen


@njit(inline="always", **_KERNEL)
def _home(key, shift, mask):
    """Home bucket of int64 `key` for uint64 `shift`; `mask` = NB - 1 (int64)."""
    return np.int64((np.uint64(key) * _GOLDEN) >> shift) & mask


@njit(inline="always", **_KERNEL)
def _locate(buckets, shift, key):
    """Slot index (2 * bucket + j) of `key`'s live entry, -1 when absent. A search visits at
    most every bucket once, so it ends even in a table without EMPTY slots."""
    nb = buckets.shape[0]
    mask = np.int64(nb - 1)
    b = _home(key, shift, mask)
    for _ in range(nb):  # the table keeps EMPTY slots (load <= 0.9); the bound is a backstop
        for j in range(2):
            r = buckets[b, 2 * j + 1]
            if r == _EMPTY:
                return -1
            if buckets[b, 2 * j] == key:
                return 2 * b + j if r >= 0 else -1
        b = (b + 1) & mask
    return -1


@njit(**_KERNEL)
def find(buckets, shift, keys, rows):
    """Rows of `keys` (N,) int64 into `rows` (N,) int64, -1 where absent.

    buckets (NB, 4) int64; shift uint64 (see the module docstring). Returns the number absent.
    """
    n = keys.shape[0]
    mask = np.int64(buckets.shape[0] - 1)
    missing = 0
    for i in range(n):
        missing += _find_one(buckets, shift, mask, keys, rows, i)
    return missing


@njit(inline="always", **_KERNEL)
def _find_one(buckets, shift, mask, keys, rows, i):
    """One step of a search loop: request key i + _AHEAD's bucket, resolve key i into
    rows[i] (-1 absent); returns 1 if absent."""
    n = keys.shape[0]
    if i + _AHEAD < n:
        _prefetch(buckets, _home(keys[i + _AHEAD], shift, mask), False)
    s = _locate(buckets, shift, keys[i])
    if s < 0:
        rows[i] = -1
        return 1
    rows[i] = buckets[s >> 1, 2 * (s & 1) + 1]
    return 0


@njit(inline="always", **_KERNEL)
def _nonfinite_row(bits, i):
    """Whether row i of float32 bits (N, M) int32 holds a NaN or +-inf (exponent all ones)."""
    exp = np.int32(0x7F800000)
    hit = 0
    for c in range(bits.shape[1]):
        hit |= (bits[i, c] & exp) == exp
    return hit


@njit(**_KERNEL)
def find_check(buckets, shift, keys, rows, bits):
    """`find` of `keys` (N,) int64 into `rows` (N,) int64, gathering in the same pass what an
    update must know before it writes anything -> (number absent, whether any of `bits` is
    NaN or +-inf, whether `keys` are strictly ascending).

    bits (N, M) int32: the batch's float32 gradients, row i belonging to keys[i]. The search
    waits on a bucket miss per key and leaves the core idle meanwhile; the tests ride in
    those gaps, where separate passes (`any_nonfinite`, numpy's compare and `rows < 0`) each
    sweep the batch again. Measured on 34K keys of a 4M-row table, search plus Adagrad
    update: ~0.1 ms (5%) faster than `find` and `any_nonfinite` apart, plus two numpy passes
    fewer after it (`rows < 0` and the sorted test, 0.04-0.2 ms by machine load); on a
    table that fits in cache the gradient test costs about as much either way.
    """
    n = keys.shape[0]
    mask = np.int64(buckets.shape[0] - 1)
    missing = 0
    hit = 0
    unsorted = 0
    for i in range(n):
        missing += _find_one(buckets, shift, mask, keys, rows, i)
        hit |= _nonfinite_row(bits, i)
        if i > 0:
            unsorted |= keys[i] <= keys[i - 1]
    return missing, hit != 0, unsorted == 0


@njit(**_KERNEL)
def check_rows(keys, rows, bits):
    """`find_check`'s answers for rows already resolved: `rows` (N,) int64 of `keys` (N,)
    int64 (-1 absent), gradient bits (N, M) int32 -> (number absent, any NaN or +-inf, keys
    strictly ascending). Rows in hand mean no misses to hide, so the gradients get their own
    flat loop, which vectorises (a loop over each short row does not)."""
    missing = 0
    unsorted = 0
    for i in range(keys.shape[0]):
        missing += rows[i] < 0
        if i > 0:
            unsorted |= keys[i] <= keys[i - 1]
    return missing, any_nonfinite(bits.reshape(-1)), unsorted == 0


@njit(**_KERNEL)
def any_nonfinite(bits):
    """Whether any float32 of a flat array, given as its int32 bits `bits` (M,), is NaN or
    +-inf (its 8 exponent bits all ones). An integer OR-reduction has no rounding order to
    keep, so it vectorises and streams at memory speed: ~2x faster than the float sum that a
    finiteness test otherwise uses."""
    exp = np.int32(0x7F800000)
    hit = 0
    for j in range(bits.shape[0]):
        hit |= (bits[j] & exp) == exp
    return hit != 0


@njit(**_KERNEL)
def find_gather(buckets, shift, keys, values, rows, out):
    """`find`, then a row gather: rows[i] = row of keys[i] (-1 absent) and out[i] =
    values[rows[i]] (zeros where absent).

    keys (N,) int64; values (R, D) float32; rows (N,) int64 and out (N, D) float32 are
    written. Returns the number of absent keys. Two passes in one call, each with its own
    prefetches: measured on 34K keys of a 4M-row table, that beats one pass that resolves a
    key and copies its row (the copy then waits on a miss behind the search's branches).
    """
    missing = find(buckets, shift, keys, rows)
    n = keys.shape[0]
    d = values.shape[1]
    for i in range(n):
        if i + _AHEAD < n:
            _prefetch(values, max(rows[i + _AHEAD], 0), False)
        r = rows[i]
        if r < 0:
            for c in range(d):
                out[i, c] = 0.0
        else:
            for c in range(d):
                out[i, c] = values[r, c]
    return missing


@njit(**_KERNEL)
def place(buckets, shift, keys, rows):
    """Write absent, distinct `keys` (N,) int64 with `rows` (N,) int64 into the first free
    slot (EMPTY or TOMBSTONE) of each probe sequence, in batch order. Taking the first free
    slot keeps the hash table's invariants (no EMPTY slot before a filled one on a probe
    sequence). Returns the number of tombstones reused, or -1 if a key found no free slot
    (the caller did not reserve room; keys before it are placed).
    """
    nb = buckets.shape[0]
    mask = np.int64(nb - 1)
    n = keys.shape[0]
    reused = 0
    for i in range(n):
        if i + _AHEAD < n:
            _prefetch(buckets, _home(keys[i + _AHEAD], shift, mask), True)
        b = _home(keys[i], shift, mask)
        col = -1
        for _ in range(nb):
            if buckets[b, 1] < 0:
                col = 0
                break
            if buckets[b, 3] < 0:
                col = 2
                break
            b = (b + 1) & mask
        if col < 0:
            return -1
        if buckets[b, col + 1] == _TOMB:
            reused += 1
        buckets[b, col] = keys[i]
        buckets[b, col + 1] = rows[i]
    return reused


@njit(**_KERNEL)
def delete(buckets, shift, keys, freed):
    """Tombstone the live entries of `keys` (N,) int64 (absent keys and repeats are skipped:
    a repeat finds the tombstone its first occurrence left). The freed rows go to
    `freed[:M]` ((N,) int64) in batch order; returns M."""
    m = 0
    for i in range(keys.shape[0]):
        s = _locate(buckets, shift, keys[i])
        if s >= 0:
            col = 2 * (s & 1) + 1
            freed[m] = buckets[s >> 1, col]
            buckets[s >> 1, col] = _TOMB
            m += 1
    return m


@njit(**_KERNEL)
def merge_duplicates(rows, grads, counts):
    """Sum the gradients and counts of repeated rows.

    rows (N,) int64 >= 0, grads (N, D) float32, counts (N,) int64 -> (rows (U,), grads
    (U, D), counts (U,)), each row once in order of first occurrence; a row's gradients are
    added front to back in batch order (deterministic). A private open-addressing map
    row -> output index, sized to the batch (2N..4N entries), finds the repeats in one pass.
    """
    n = rows.shape[0]
    d = grads.shape[1]
    bits = 1
    while (1 << bits) < 2 * n:
        bits += 1
    mask = np.int64((1 << bits) - 1)
    shift = np.uint64(64 - bits)
    index = np.full(1 << bits, -1, dtype=np.int64)  # map slot -> output index
    urows = np.empty(n, dtype=np.int64)
    ugrads = np.empty((n, d), dtype=np.float32)
    ucounts = np.empty(n, dtype=np.int64)
    u = 0
    for i in range(n):
        r = rows[i]
        h = _home(r, shift, mask)
        while True:
            k = index[h]
            if k < 0:
                index[h] = u
                urows[u] = r
                ucounts[u] = counts[i]
                for c in range(d):
                    ugrads[u, c] = grads[i, c]
                u += 1
                break
            if urows[k] == r:
                ucounts[k] += counts[i]
                for c in range(d):
                    ugrads[k, c] += grads[i, c]
                break
            h = (h + 1) & mask
    return urows[:u], ugrads[:u], ucounts[:u]


@njit(**_KERNEL)
def touch(meta, rows, counts, step):
    """Record one update of distinct `rows` (U,) int64 in `meta` (R, 2) int64 (freq, version):
    freq += counts (U,) int64, version = step."""
    n = rows.shape[0]
    for i in range(n):
        if i + _AHEAD < n:
            _prefetch(meta, rows[i + _AHEAD], True)
        r = rows[i]
        meta[r, 0] += counts[i]
        meta[r, 1] = step


@njit(**_KERNEL)
def gather_rows(a, rows, out):
    """out[:] = a[rows]: `a` (R, D) of any dtype, rows (U,) int64, out (U, D) of a's dtype.

    The caller allocates `out`: numpy's allocator reuses freed blocks, where a fresh block
    from inside a kernel costs a page fault per 4 KiB (as much as the gather itself here).
    """
    n = rows.shape[0]
    d = a.shape[1]
    for i in range(n):
        if i + _AHEAD < n:
            _prefetch(a, rows[i + _AHEAD], False)
        r = rows[i]
        for c in range(d):
            out[i, c] = a[r, c]


@njit(**_KERNEL)
def scatter_rows(a, rows, block):
    """a[rows] = block: `a` (R, D), rows (U,) int64 distinct, block (U, D) of a's dtype."""
    n = rows.shape[0]
    d = a.shape[1]
    for i in range(n):
        if i + _AHEAD < n:
            _prefetch(a, rows[i + _AHEAD], True)
        r = rows[i]
        for c in range(d):
            a[r, c] = block[i, c]


@njit(**_KERNEL)
def apply_sgd(values, meta, rows, grads, counts, step, lr):
    """SGD on distinct `rows` (U,) int64 of `values` (R, D) float32, fused with `touch` of
    `meta` (R, 2) int64: w = w + (-lr) * g in float32, as torch.optim.SGD computes it.

    grads (U, D) float32 summed per row; counts (U,) int64; step int; lr float.
    """
    neg_lr = np.float32(-lr)
    n = rows.shape[0]
    d = values.shape[1]
    for i in range(n):
        if i + _AHEAD < n:
            _prefetch(values, rows[i + _AHEAD], True)
            _prefetch(meta, rows[i + _AHEAD], True)
        r = rows[i]
        meta[r, 0] += counts[i]
        meta[r, 1] = step
        for c in range(d):
            values[r, c] = values[r, c] + neg_lr * grads[i, c]


@njit(fastmath={"contract"}, **_KERNEL)
def apply_adagrad(values, accum, meta, rows, grads, counts, step, lr, eps):
    """Adagrad on distinct `rows` (U,) int64, fused with `touch` of `meta` (R, 2) int64.

    values, accum (R, D) float32; grads (U, D) float32 summed per row; counts (U,) int64;
    step int; lr, eps float. Per coordinate, in float32 and bit for bit as torch's fused CPU
    Adagrad computes it: a = fma(g, g, a);  w = w - (lr * g) / (sqrt(a) + eps). The only
    fast-math flag is "contract", which lets LLVM fuse the multiply-add (and nothing else
    here has a multiply feeding an add); on a CPU without FMA the sum is rounded twice.
    """
    lr32 = np.float32(lr)
    eps32 = np.float32(eps)
    n = rows.shape[0]
    d = values.shape[1]
    for i in range(n):
        if i + _AHEAD < n:
            r = rows[i + _AHEAD]
            _prefetch(values, r, True)
            _prefetch(accum, r, True)
            _prefetch(meta, r, True)
        r = rows[i]
        meta[r, 0] += counts[i]
        meta[r, 1] = step
        for c in range(d):
            g = grads[i, c]
            a = accum[r, c] + g * g  # one fused multiply-add (fastmath "contract"), as in torch
            accum[r, c] = a
            values[r, c] = values[r, c] - (lr32 * g) / (np.sqrt(a) + eps32)
