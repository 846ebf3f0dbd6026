"""Cache-line-aligned row arrays for the embedding variable and its hash table. Private.

numpy's allocator aligns a block to 16 bytes only, and for the large arrays of a table (glibc
serves them from mmap) the data starts 16 bytes past a page boundary, so a 64-byte row
(D = 16 float32) spans two cache lines and so does every other 32-byte hash bucket. A random
row access, the unit of work of lookups and applies, then costs two misses instead of one.
Measured on 34K Zipf keys of a 4M-row table (`benchmarks/ev_bench.py`): with 64-byte aligned
arrays the Adagrad apply (probe, values, accumulator, freq/version) ran ~25% faster and
`np.take` of the value rows ~15% faster.

Values and optimizer slots stay separate arrays. Interleaving them into one record per row
((R, 2D) float32 for Adagrad, 128-byte aligned, values a column view) measured slower on the
same benchmark: without a prefetch of each line the second line was not fetched along
(Adagrad apply ~1.7x slower), with one it still ran ~10% slower than separate arrays; and
numpy's `take` copies a non-contiguous view whole before gathering.
"""
from __future__ import annotations

import numpy as np

__all__ = ["CACHE_LINE", "aligned_empty"]

CACHE_LINE = 64  # bytes; x86-64 and most ARM server cores


def aligned_empty(shape: tuple[int, ...], dtype: np.dtype | str, align: int = CACHE_LINE) -> np.ndarray:
    """An uninitialised C-contiguous array of `shape` and `dtype` whose first byte lies on an
    `align`-byte boundary (a power of two).

    A view into a slightly larger byte buffer (`.base`); numpy frees the buffer with the
    view. Copies (`.copy()`, pickling, `np.load`) are ordinary arrays again, aligned or not:
    alignment only affects speed, never results.

    Example:
        >>> a = aligned_empty((1000, 16), np.float32)
        >>> a.ctypes.data % 64, a.flags.c_contiguous
        (0, True)
    """
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    buf = np.empty(nbytes + align, dtype=np.uint8)
    start = -buf.ctypes.data % align
    return buf[start:start + nbytes].view(dtype).reshape(shape)
