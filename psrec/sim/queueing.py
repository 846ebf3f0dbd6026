"""Closed queueing networks by exact Mean Value Analysis (Reiser & Lavenberg, J. ACM 1980).

psrec's ps-async workers form a closed network: each of the W workers computes (a delay, no
queue), then its pull and push queue at the busiest PS's shared resources (its NIC's in and out
directions, its shard lock), then computes again. At low load a worker's step is its own cost;
near saturation it is W times the busiest station's demand; MVA gives the mean in between,
where asymptotic bounds alone under-predict (three workers at 60 % of a PS link: 1.3x the
uncontended step, where max(own, W * demand) says 1.0x).

Stations are processor-sharing or FCFS (BCMP: the same means); demands in seconds per cycle.
"""
from __future__ import annotations

from collections.abc import Sequence

__all__ = ["mva_cycle"]


def mva_cycle(demands: Sequence[float], think: float, customers: int) -> float:
    """Mean cycle time (seconds) of one of `customers` jobs circulating through queueing
    stations of service `demands` (seconds per cycle each) and a delay of `think` seconds.

    For n = 1..N: R_i(n) = D_i (1 + Q_i(n-1)); X(n) = n / (Z + sum R_i); Q_i(n) = X(n) R_i(n).
    Returns Z + sum R_i(N), which tends to N * max D_i as N grows and equals Z + sum D_i at N = 1.

    Example: one station D = 1 s, Z = 1 s, 2 jobs: n=1: R = 1, X = 1/2, Q = 1/2;
    n=2: R = 1.5, cycle = 2.5 s (X = 0.8 jobs/s).
        >>> mva_cycle([1.0], 1.0, 2)
        2.5
        >>> mva_cycle([1.0, 0.0], 2.0, 1), mva_cycle([0.5], 0.0, 4)
        (3.0, 2.0)
    """
    if customers < 1:
        raise ValueError(f"customers must be >= 1, got {customers}")
    if think < 0 or any(d < 0 for d in demands):
        raise ValueError(f"demands and think must be >= 0, got {list(demands)}, {think}")
    queue = [0.0] * len(demands)
    cycle = think + sum(demands)
    for n in range(1, customers + 1):
        resid = [d * (1.0 + q) for d, q in zip(demands, queue)]
        cycle = think + sum(resid)
        rate = n / cycle if cycle > 0 else 0.0
        queue = [rate * r for r in resid]
    return cycle
