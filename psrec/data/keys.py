"""Field-tagged int64 feature keys.

A key holds its field index in the top bits and a 54-bit id below, so that keys of
different fields never collide and fields can share one table or own one each:

    key = field << 54 | (id & (2**54 - 1))      (bit 63 stays 0: keys are non-negative)

9 field bits allow 512 fields; 54 id bits make a hashed id space far larger than any table.
"""
from __future__ import annotations

from hashlib import blake2b

import numpy as np

__all__ = ["FIELD_SHIFT", "ID_MASK", "MAX_FIELDS", "make_keys", "key_field", "key_id",
           "splitmix64", "hash_strings"]

FIELD_SHIFT = 54
ID_MASK = np.uint64((1 << FIELD_SHIFT) - 1)
MAX_FIELDS = 1 << (63 - FIELD_SHIFT)

_C1 = np.uint64(0xBF58476D1CE4E5B9)
_C2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def make_keys(field: int | np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Tag ids (any integer dtype) with their field: returns int64 keys of the same shape."""
    f = np.asarray(field, dtype=np.uint64)
    if np.any(f >= MAX_FIELDS):
        raise ValueError(f"field index must be < {MAX_FIELDS}")
    ids = np.asarray(ids).astype(np.uint64, copy=False) & ID_MASK
    return ((f << np.uint64(FIELD_SHIFT)) | ids).view(np.int64)


def key_field(keys: np.ndarray) -> np.ndarray:
    """Field index of each key: int64 array of the same shape."""
    return np.asarray(keys, dtype=np.int64) >> FIELD_SHIFT


def key_id(keys: np.ndarray) -> np.ndarray:
    """The id part of each key: int64 array of the same shape."""
    return np.asarray(keys, dtype=np.int64) & np.int64(ID_MASK)


def splitmix64(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """SplitMix64 finaliser over uint64 arrays: a fast, well-mixed counter-based hash.

    Works in place when `out is x`; wraps modulo 2**64 as intended.
    """
    z = np.add(x, _GOLDEN, out=out)
    z ^= z >> np.uint64(30)
    z *= _C1
    z ^= z >> np.uint64(27)
    z *= _C2
    z ^= z >> np.uint64(31)
    return z


def hash_strings(values) -> np.ndarray:
    """Stable 64-bit hash of strings (BLAKE2b, 8-byte digest): uint64 array of len(values).

    Python's `hash()` is salted per process, so it cannot be used for keys that must be the
    same on every worker and every run.
    """
    out = np.empty(len(values), dtype=np.uint64)
    for i, s in enumerate(values):
        out[i] = int.from_bytes(blake2b(s.encode(), digest_size=8).digest(), "little")
    return out
