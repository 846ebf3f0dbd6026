"""How many embedding rows a batch touches, and how they spread over parameter-server shards.

Keys follow a bounded Zipf law over `n` rows: p_r = r^-s / H(n, s), r = 1..n, with
H(n, s) = sum_r r^-s (s = 0 is uniform). A worker's batch draws `m` keys (batch size x lookups
per sample) with replacement and deduplicates them before talking to the servers.

Expected distinct keys (linearity of expectation over the indicator "row r drawn at least
once"; the occupancy problem, W. Feller, An Introduction to Probability Theory and Its
Applications, vol. 1, 3rd ed., 1968, ch. II.11 / IV.2):

    D(m) = sum_r q_r,     q_r = 1 - (1 - p_r)^m

For n up to 1e10 the sum cannot be enumerated: the first `_HEAD` ranks are summed exactly and
the rest is the integral of q(x) over [_HEAD + 1/2, n + 1/2] (midpoint rule, Euler-Maclaurin
to first order), evaluated with Simpson's rule on a log-spaced grid. H(n, s) uses the same
split with the Euler-Maclaurin tail. Relative error < 1e-6 against the exact sum (tested).

Per-shard load. W workers each send their distinct keys to the shard that owns them. The
rows shard j receives in one round, L_j = sum_{r in j} sum_w X_{r,w} with X ~ Bernoulli(q_r):

    E[L_j]   = W D / M
    Var[L_j] = W (D - Q2) / M  +  W^2 Q2 (M - 1) / M^2,      Q2 = sum_r q_r^2

The first term is the sampling noise; the second is the placement noise of hash-mod (each
key on a uniformly random shard, independently), which hot keys (q_r ~ 1 for every worker)
dominate. A frequency-aware balanced partitioner removes the placement term (it spreads the
expected load evenly; LPT greedy placement leaves at most one key's load, W q_1, R. L. Graham,
"Bounds on multiprocessing timing anomalies", SIAM J. Appl. Math. 17(2), 1969).
The busiest of M shards is taken as E[max] ~ mean + sigma sqrt(2 ln M), the maximal
inequality for M (sub-)Gaussian variables (S. Boucheron, G. Lugosi, P. Massart,
Concentration Inequalities, 2013, sec. 2.5).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

__all__ = ["KeyStats", "zipf_normalizer", "key_stats", "ShardLoad", "shard_load", "touched_shards"]

_HEAD = 4096  # ranks summed exactly; the rest by the integral
_GRID = 512  # Simpson intervals over log(x) for the tail (even)


@lru_cache(maxsize=4096)
def zipf_normalizer(n: int, s: float) -> float:
    """H(n, s) = sum_{r=1}^{n} r^-s: exact head plus Euler-Maclaurin tail.

    >>> zipf_normalizer(3, 1.0) == 1 + 1/2 + 1/3
    True
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    head = min(n, _HEAD)
    total = float(np.sum(np.arange(1, head + 1, dtype=np.float64) ** -s))
    if n > head:
        a, b = float(head + 1), float(n)
        integral = math.log(b / a) if s == 1 else (b ** (1 - s) - a ** (1 - s)) / (1 - s)
        # Euler-Maclaurin: sum_{a}^{b} f = int_a^b f + (f(a) + f(b))/2 + (f'(b) - f'(a))/12 + ...
        total += integral + (a ** -s + b ** -s) / 2 + (-s * b ** (-s - 1) + s * a ** (-s - 1)) / 12
    return total


@dataclass(frozen=True)
class KeyStats:
    """Expected touch statistics of one batch of `draws` keys from one table.

    Args:
        draws: keys drawn (batch size x lookups per sample).
        distinct: expected distinct keys D = sum_r q_r.
        sum_q2: Q2 = sum_r q_r^2 (drives hash-mod's hot-shard variance).
        q_max: q_1, the touch probability of the hottest key.
    """

    draws: float
    distinct: float
    sum_q2: float
    q_max: float


def _q(p: np.ndarray, m: float) -> np.ndarray:
    # 1 - (1 - p)^m without cancellation for tiny p; p = 1 (a one-row table) gives log1p(-1) = -inf
    # and q = 1, which is right, so the warning is silenced.
    with np.errstate(divide="ignore"):
        return -np.expm1(m * np.log1p(-p))


@lru_cache(maxsize=65536)
def key_stats(n: int, s: float, draws: float) -> KeyStats:
    """Expected distinct keys among `draws` Zipf(s) draws over `n` rows (see module doc).

    Example (n=2, s=1: p = (2/3, 1/3); two draws: q = (1 - (1/3)^2, 1 - (2/3)^2) = (8/9, 5/9)):
        >>> st = key_stats(2, 1.0, 2)
        >>> round(st.distinct * 9, 9), round(st.sum_q2 * 81, 9)
        (13.0, 89.0)
    """
    if n < 1 or draws < 0 or s < 0:
        raise ValueError(f"need n >= 1, draws >= 0, s >= 0; got {n}, {draws}, {s}")
    if draws == 0:
        return KeyStats(0.0, 0.0, 0.0, 0.0)
    h = zipf_normalizer(n, s)
    head = min(n, _HEAD)
    p = np.arange(1, head + 1, dtype=np.float64) ** -s / h
    q = _q(p, draws)
    distinct, sum_q2 = float(q.sum()), float((q * q).sum())
    if n > head:
        lo, hi = math.log(head + 0.5), math.log(n + 0.5)
        u = np.linspace(lo, hi, _GRID + 1)
        x = np.exp(u)
        qx = _q(np.minimum(x ** -s / h, 1.0), draws)
        w = np.ones(_GRID + 1)
        w[1:-1:2], w[2:-1:2] = 4.0, 2.0
        step = (hi - lo) / _GRID / 3.0
        distinct += float(np.sum(w * qx * x) * step)  # dx = x du
        sum_q2 += float(np.sum(w * qx * qx * x) * step)
    return KeyStats(float(draws), min(distinct, float(n), float(draws)), sum_q2, float(q[0]))


def touched_shards(distinct: float, num_shards: int) -> float:
    """Expected shards that receive at least one of `distinct` keys placed uniformly at random:
    M (1 - (1 - 1/M)^D) (the occupancy formula again).

    >>> touched_shards(2, 2)    # 2 keys, 2 shards: 2 * (1 - 1/4)
    1.5
    """
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    if num_shards == 1:
        return 1.0 if distinct > 0 else 0.0
    return num_shards * -math.expm1(distinct * math.log1p(-1.0 / num_shards))


@dataclass(frozen=True)
class ShardLoad:
    """Rows (or bytes, when weighted) that one round of W workers puts on the M shards.

    Args:
        mean: expected load of a shard.
        std: its standard deviation.
        max: expected load of the busiest shard, mean + std sqrt(2 ln M).
        imbalance: max / mean (>= 1).
    """

    mean: float
    std: float
    max: float
    imbalance: float


def shard_load(stats: list[tuple[KeyStats, float]], num_shards: int, workers: int,
               partitioner: str = "hash") -> ShardLoad:
    """Load per shard of one round in which `workers` workers each send a deduplicated batch.

    `stats` pairs each table's KeyStats with a weight per row (1 for rows, bytes per row for
    bytes); tables add independently. Formulas in the module doc.

    Example (one table, D = 10 keys, Q2 = 4, 2 workers, 2 shards, hash-mod):
        mean = 2*10/2 = 10; var = 2*(10-4)/2 + 4*4*(2-1)/4 = 6 + 4 = 10; max = 10 + sqrt(10)*sqrt(2 ln 2)
        >>> ld = shard_load([(KeyStats(20, 10, 4, 1), 1.0)], 2, 2)
        >>> round(ld.max, 6) == round(10 + math.sqrt(10) * math.sqrt(2 * math.log(2)), 6)
        True
    """
    if partitioner not in ("hash", "balanced"):
        raise ValueError(f"partitioner must be hash or balanced, got {partitioner!r}")
    m, w = num_shards, workers
    mean = var = 0.0
    for st, weight in stats:
        mean += weight * w * st.distinct / m
        v = w * (st.distinct - st.sum_q2) / m
        if partitioner == "hash":
            v += w * w * st.sum_q2 * (m - 1) / (m * m)
        var += weight * weight * max(v, 0.0)
    std = math.sqrt(var)
    mx = mean + std * math.sqrt(2 * math.log(m)) if m > 1 else mean
    return ShardLoad(mean, std, mx, mx / mean if mean > 0 else 1.0)
