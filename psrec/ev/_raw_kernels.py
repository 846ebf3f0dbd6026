"""Compiled (numba) loop of the raw-batch lookup (`psrec.ev.raw`): a batch's key draws
de-duplicated, probed and gathered in one call, with no sort anywhere.

Measured in `benchmarks/ev_bench.py` (128K Zipf(1.1) draws, ~34K distinct, of a 4M-row
dim-16 table; floor: `np.take` of the draws' rows resolved beforehand): 0.66-0.77x the
floor, against ~0.45x for the path it replaces (`unique`: a hash pass plus a radix sort of
the distinct keys; a lookup of the distinct keys; `expand`). Of its ~2.4 ms, the passes
took ~0.8 (de-duplication), ~0.4 (probe), ~0.45 (row copy), ~0.8 (expansion: writing the
8 MiB output). Tried and dropped, each measured slower on the same batches: one pass that
probes a key at its first occurrence (~0.6x); a prefetch of the table bucket there; the
probe and the row copy software-pipelined in one loop (no faster); rows of keys drawn once
copied straight from the table in the expansion (~0.56x); counts summed in the expansion;
home slots hashed in a vectorised pre-pass.
Shares the kernels' compile settings, prefetch distance and hashes (`psrec.ev._kernels`).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from psrec.ev._dedup_kernels import unique_first
from psrec.ev._kernels import _KERNEL, _home, _locate, _prefetch

__all__ = ["dedup_find_gather", "find_gather_expand"]

# Prefetch distances of the probe and the row-copy passes, farther than `_AHEAD`: these loops
# do little work per key beside a miss, so more misses must be in flight. Measured on the
# ~34K distinct keys of 128K draws: probe 0.48 ms at 16, 0.39-0.41 at 40, 0.43 at 64; copy
# 0.49-0.51 ms at 16, 0.47 at 40, 0.43 at 64.
_AHEAD_PROBE = 40
_AHEAD_COPY = 64


@njit(**_KERNEL)
def dedup_find_gather(buckets, shift, keys, ids, values, inverse, uniq, counts, urows, block, out):
    """De-duplicate, probe and gather a batch of key draws in one call (four passes).

    keys (N,) int64 draws; buckets/shift the hash table (`psrec.ev._kernels`); ids (P,) int32
    a scratch map, P a power of two >= 2N, all -1 on entry and on return; values (R, D)
    float32; block (>= N, D) float32 scratch. Writes inverse (N,) int32 (keys[i] ==
    uniq[inverse[i]]), uniq (N,) int64, counts (N,) int64 and urows (N,) int64 (first U
    entries: distinct keys in order of first occurrence, their occurrences and rows, -1
    absent) and out (N, D) float32 = values[urows[inverse]] (zeros where absent) -> (U,
    number of absent distinct keys).

    Passes: the draws into distinct keys (`psrec.ev._dedup_kernels.unique_first`, whose map
    of 4-byte indices stays in L2); then `find_gather_expand`.
    """
    u = unique_first(keys, ids, inverse, uniq, counts, urows)  # urows: its slot scratch, then the rows
    return u, find_gather_expand(buckets, shift, uniq, u, inverse, values, urows, block, out)


@njit(**_KERNEL)
def find_gather_expand(buckets, shift, uniq, u, inverse, values, urows, block, out):
    """The lookup of a batch already de-duplicated (uniq[:u] distinct, inverse (N,) int32
    into them; another table over the same fields did the dedup): a probe per distinct key
    into urows (-1 absent), their rows copied into `block`, `block` expanded to the draws in
    `out` (N, D) -> number of absent distinct keys. Measured against the last two as one pass
    (each draw's row gathered from `values` directly): ~0.45 ms faster on 128K draws, since
    the (U, D) block stays in cache where the table's rows are scattered over 256 MiB.
    """
    bmask = np.int64(buckets.shape[0] - 1)
    missing = 0
    for j in range(u):
        if j + _AHEAD_PROBE < u:
            _prefetch(buckets, _home(uniq[j + _AHEAD_PROBE], shift, bmask), False)
        s = _locate(buckets, shift, uniq[j])
        if s < 0:
            urows[j] = -1
            missing += 1
        else:
            urows[j] = buckets[s >> 1, 2 * (s & 1) + 1]
    d = values.shape[1]
    for j in range(u):
        if j + _AHEAD_COPY < u:
            _prefetch(values, max(urows[j + _AHEAD_COPY], 0), False)
        r = urows[j]
        if r < 0:
            for c in range(d):
                block[j, c] = 0.0
        else:
            for c in range(d):
                block[j, c] = values[r, c]
    for i in range(inverse.shape[0]):
        r = inverse[i]
        for c in range(d):
            out[i, c] = block[r, c]
    return missing
