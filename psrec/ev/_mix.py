"""64-bit integer mixing shared by the hash table, the initializer, the Bloom filter and the
default partitioner. Private: numpy only, all arithmetic modulo 2**64 on uint64 arrays.

The finaliser is SplitMix64's (Steele, Lea and Flood 2014), the same one
`psrec.data.keys.splitmix64` uses; it is restated here because the EV core imports no other
psrec subpackage.
"""
from __future__ import annotations

import numpy as np

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_C1 = np.uint64(0xBF58476D1CE4E5B9)
_C2 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser of uint64 array `x` (any shape): a new uint64 array, well mixed.

    Every output bit depends on every input bit, so consecutive or field-tagged keys spread
    uniformly (unlike `key % M`).
    """
    with np.errstate(over="ignore"):
        z = np.add(x, GOLDEN, dtype=np.uint64)
        z ^= z >> _S30
        z *= _C1
        z ^= z >> _S27
        z *= _C2
        z ^= z >> _S31
    return z


def as_u64(keys: np.ndarray) -> np.ndarray:
    """int64 keys viewed (no copy) as uint64 so that shifts and multiplies wrap."""
    return keys.view(np.uint64)


def mix_seed(seed: int, salt: int) -> np.uint64:
    """A well-mixed uint64 from a user seed and a per-purpose salt (so purposes don't correlate)."""
    v = np.array([(seed * 0x2545F4914F6CDD1D + salt) % (1 << 64)], dtype=np.uint64)
    return splitmix64(v)[0]

