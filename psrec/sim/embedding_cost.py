"""What one embedding shard's lookups and updates cost on a GPU: HBM traffic, and a
hierarchical HBM cache over host memory. Pure functions returning `EmbeddingCost`.

HBM lookup (FBGEMM's table-batched embedding kernels are memory-bound: J. Mudigere et al.,
"Software-Hardware Co-design for Fast and Scalable Training of Deep Learning Recommendation
Models", ISCA 2022, sec. 4): every lookup reads its row in the forward pass; the fused
backward reads and writes each distinct row's value and optimizer state once:

    forward  = lookups * row / B_hbm
    backward = 2 * slots * distinct * row / B_hbm,     row = ceil(dim * bytes / 32) * 32

(DRAM is read in 32-byte sectors: CUDA C++ Best Practices Guide, "Coalesced Access to Global
Memory"; a dim-4 fp32 row costs a full sector.)

Cache hit rate. A cache of the c hottest of n rows under a bounded Zipf(s) law (LFU's steady
state) serves the share of draws that fall on ranks 1..c:

    h = H(c, s) / H(n, s)          (`psrec.sim.keys.zipf_normalizer`)

Cached lookup (TorchRec / FBGEMM UVM caching): the distinct rows that miss come from host
memory over PCIe with their optimizer state and go back after the update, then the shard works
as in HBM: forward += misses * slots * row / B_host, backward += the same.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from psrec.sim.keys import key_stats, zipf_normalizer

__all__ = ["SECTOR_BYTES", "EmbeddingCost", "row_bytes", "hbm_lookup_cost", "cache_hit_rate", "distinct_misses",
           "cached_lookup_cost"]

SECTOR_BYTES = 32  # the GPU's DRAM access granularity


@dataclass(frozen=True)
class EmbeddingCost:
    """Seconds of one shard's embedding work in a step.

    Args:
        forward: lookups (and, cached, the misses' fetch from host memory).
        backward: the optimizer's update of the distinct rows (and the misses' write-back).
        hit_rate: share of lookups the HBM cache served (1 for an HBM-resident shard).
    """

    forward: float
    backward: float
    hit_rate: float = 1.0

    @property
    def total(self) -> float:
        return self.forward + self.backward


def row_bytes(dim: int, value_bytes: int = 4) -> int:
    """Bytes one row moves, rounded up to whole 32-byte sectors.

    >>> row_bytes(16), row_bytes(4), row_bytes(10)
    (64, 32, 64)
    """
    return math.ceil(dim * value_bytes / SECTOR_BYTES) * SECTOR_BYTES


def hbm_lookup_cost(lookups: float, distinct: float, dim: int, hbm_bandwidth: float, slots: int = 2,
                    value_bytes: int = 4) -> EmbeddingCost:
    """A shard in HBM: `lookups` rows read forward, `distinct` rows updated backward (module doc).

    >>> c = hbm_lookup_cost(1e6, 2e5, 16, 1e12)      # 1e6 * 64 B / 1 TB/s; 2 * 2 * 2e5 * 64 B / 1 TB/s
    >>> round(c.forward * 1e6, 6), round(c.backward * 1e6, 6)
    (64.0, 51.2)
    """
    if lookups < 0 or distinct < 0 or not hbm_bandwidth > 0 or slots < 1:
        raise ValueError("lookups and distinct must be >= 0, hbm_bandwidth > 0, slots >= 1")
    row = row_bytes(dim, value_bytes)
    return EmbeddingCost(lookups * row / hbm_bandwidth, 2 * slots * distinct * row / hbm_bandwidth)


def cache_hit_rate(rows: int, zipf: float, cache_rows: float) -> float:
    """Share of Zipf(`zipf`) draws over `rows` rows that hit a cache of the `cache_rows` hottest.

    >>> round(cache_hit_rate(4, 1.0, 1), 9)         # 1 / (1 + 1/2 + 1/3 + 1/4) = 12/25
    0.48
    >>> cache_hit_rate(4, 0.0, 2)                    # uniform: 2 of 4
    0.5
    """
    if rows < 1 or zipf < 0 or cache_rows < 0:
        raise ValueError(f"need rows >= 1, zipf >= 0, cache_rows >= 0; got {rows}, {zipf}, {cache_rows}")
    c = min(int(cache_rows), rows)
    if c == 0:
        return 0.0
    return zipf_normalizer(c, zipf) / zipf_normalizer(rows, zipf)


def distinct_misses(rows: int, zipf: float, cache_rows: float, draws: float) -> float:
    """Expected distinct rows outside the cache among `draws` draws: D(n) over all rows less the
    distinct among the draws that land in the head, D over the c cached rows with draws * h
    (the head's draws follow the Zipf law restricted to it; the mean count stands in for the
    binomial one).

    >>> round(distinct_misses(4, 0.0, 2, 2.0), 9)    # D = 4 (1 - (3/4)^2) = 1.75; head: 2 (1 - (1/2)^1) = 1
    0.75
    """
    c = min(int(cache_rows), rows)
    total = key_stats(rows, zipf, float(draws)).distinct
    if c == 0:
        return total
    if c >= rows:
        return 0.0
    head = key_stats(c, zipf, float(draws) * cache_hit_rate(rows, zipf, c)).distinct
    return max(0.0, total - head)


def cached_lookup_cost(lookups: float, distinct: float, misses: float, hit_rate: float, dim: int,
                       hbm_bandwidth: float, host_bandwidth: float, slots: int = 2,
                       value_bytes: int = 4) -> EmbeddingCost:
    """A shard in host memory behind an HBM cache: the HBM work of `hbm_lookup_cost` plus the
    `misses` distinct rows (value + state) fetched from the host forward and written back backward.

    >>> c = cached_lookup_cost(1e6, 2e5, 1e5, 0.9, 16, 1e12, 1e10)   # + 1e5 * 2 * 64 B / 10 GB/s
    >>> round(c.forward * 1e6, 6), round(c.backward * 1e6, 6), c.hit_rate
    (1344.0, 1331.2, 0.9)
    """
    if misses < 0 or not host_bandwidth > 0 or not 0 <= hit_rate <= 1:
        raise ValueError("misses must be >= 0, host_bandwidth > 0 and hit_rate in [0, 1]")
    hbm = hbm_lookup_cost(lookups, distinct, dim, hbm_bandwidth, slots, value_bytes)
    host = misses * slots * row_bytes(dim, value_bytes) / host_bandwidth
    return EmbeddingCost(hbm.forward + host, hbm.backward + host, hit_rate)
