"""Equal transfers that share one link fairly: how long each lasts when they start at different times.

TCP flows through one bottleneck share its rate about equally (processor sharing: L.
Kleinrock, Queueing Systems vol. 2, 1976, sec. 4.4). A sync PS step sends W pushes of the
same size into the busiest PS's link; they do not take turns. Measured on the 4-node testbed
(200 Mbit, 3 gRPC clients pushing 1.68 MB each to one server, nothing else running): started
together, the pushes lasted 0.64-1.0 of the 211-219 ms phase (mean 0.89 over 7 rounds), where
turns would give 1/3, 2/3 and 1; started 0, 55 and 80 ms apart, they ended in the order they
started. The link stayed busy either way (phase 212 ms for 201.6 ms of bytes). Nothing was
lost to the incast: a sync training job there (3 workers, 1 PS) had no qdisc drop and 4 TCP
retransmissions in 198K segments.

    fair_share_durations(size, starts)   each transfer's seconds, start to end
    arrival_offsets(workers, sigma)      when W lockstep workers with normal jitter reach the
                                         link: the expected order statistics

Equal sizes under processor sharing end in the order they start (an earlier one never has
more left), so one pass over the starts tracks the service every active transfer has had
(`attained`): O(W).
"""
from __future__ import annotations

import statistics
from collections.abc import Sequence

__all__ = ["fair_share_durations", "arrival_offsets"]


def fair_share_durations(size: float, starts: Sequence[float]) -> list[float]:
    """Seconds from start to end of each transfer (in the order of `starts`) when each needs
    `size` seconds of the link alone and the active ones share it equally.

    >>> fair_share_durations(3.0, [0.0, 0.0, 0.0])      # together: all end at 3 x 3
    [9.0, 9.0, 9.0]
    >>> fair_share_durations(3.0, [0.0, 1.0, 2.0])      # golden, worked in tests/test_sim_fair_share.py
    [6.5, 7.5, 7.0]
    >>> fair_share_durations(3.0, [0.0, 5.0])           # apart: each alone
    [3.0, 3.0]
    """
    if size < 0:
        raise ValueError(f"size must be >= 0, got {size}")
    order = sorted(range(len(starts)), key=lambda k: starts[k])
    out = [0.0] * len(starts)
    t = attained = 0.0  # the clock; the service each active transfer has had since time 0
    joined: list[float] = []  # `attained` when each started, in start order
    head = nxt = 0  # the oldest active transfer; the next to start
    while head < len(order):
        active = nxt - head
        if active == 0:
            t = float(starts[order[nxt]])
            joined.append(attained)
            nxt += 1
            continue
        to_end = (joined[head] + size - attained) * active
        to_start = float(starts[order[nxt]]) - t if nxt < len(order) else float("inf")
        dt = min(to_end, to_start)
        t += dt
        attained += dt / active
        if to_end <= to_start:
            out[order[head]] = t - float(starts[order[head]])
            head += 1
        else:
            joined.append(attained)
            nxt += 1
    return out


def arrival_offsets(workers: int, sigma: float) -> list[float]:
    """When W workers reach the link after lockstep work of standard deviation `sigma`
    seconds each: the expected order statistics sigma * z_k, z_k = Phi^-1((k - 0.375) / (W +
    0.25)) (Blom 1958, as `psrec.sim.contention.expected_max_normal`), from the first.

    >>> [round(x, 3) for x in arrival_offsets(3, 1.0)]
    [0.0, 0.869, 1.739]
    """
    if workers < 1 or sigma < 0:
        raise ValueError(f"workers must be >= 1 and sigma >= 0, got {workers}, {sigma}")
    z = [statistics.NormalDist().inv_cdf((k - 0.375) / (workers + 0.25)) for k in range(1, workers + 1)]
    return [sigma * (x - z[0]) for x in z]
