"""Sampling the testbed's link counters while a job runs, and the send rate of a node while it
is busy sending (a PS serving pulls), read from the interface counters, not estimated.

`LinkSampler` reads each node's tx bytes (the host veth end's rx_bytes) and rx bytes (its
tx_bytes) every `interval_s` in a thread. `busy_rate` takes one node's samples and keeps the
intervals in which it sent at 10% of the shaped rate or more (its bursts: a sync PS answering
the step's pulls; on the rx samples, receiving its pushes), and returns the bytes of those
intervals over their duration: bytes/s while busy, partial intervals at a burst's edges
included (so it errs low). `interior_rate` leaves out the first and last interval of each burst,
which the burst fills only in part by construction (it starts and ends somewhere inside them):
at 1 Gbit and 2 ms samples a 3-pull burst of a few MB spans ~15 intervals, 2 of them partial.
It still counts the gaps inside a burst (a PS that pauses between responses to serialise the
next): those are the PS's, not the sampling's.
"""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

__all__ = ["LinkSampler", "busy_rate", "interior_rate"]

BUSY_FRACTION = 0.10  # an interval counts as a burst when the node sent >= 10% of the shaped rate


class LinkSampler:
    """Samples (monotonic seconds, [tx bytes of each node]) until `stop()`, and beside them
    (monotonic seconds, [rx bytes of each node]) in `received`.

    Args:
        host_ifs: the host ends of the nodes' veths, in node order.
        interval_s: time between samples (the thread's own reads take a few us each).
    """

    def __init__(self, host_ifs: list[str], interval_s: float = 0.002) -> None:
        # the host end receives what the node sends, and sends what the node receives
        self.paths = [Path("/sys/class/net", d, "statistics", "rx_bytes") for d in host_ifs]
        self.rx_paths = [Path("/sys/class/net", d, "statistics", "tx_bytes") for d in host_ifs]
        self.interval_s = interval_s
        self.samples: list[tuple[float, list[int]]] = []
        self.received: list[tuple[float, list[int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="link-sampler", daemon=True)

    def start(self) -> LinkSampler:
        # The counters are read through descriptors kept open, pread at offset 0 (sysfs renders
        # the value afresh on each): opening 8 files every 2 ms took 9% of a core, on 2 cores
        # that the testbed's job shares with this process; pread takes 2.3%.
        self._fds = [os.open(p, os.O_RDONLY) for p in (*self.paths, *self.rx_paths)]
        self._thread.start()
        return self

    def stop(self) -> list[tuple[float, list[int]]]:
        self._stop.set()
        self._thread.join(timeout=5)
        for fd in getattr(self, "_fds", []):
            os.close(fd)
        self._fds = []
        return self.samples

    def _loop(self) -> None:
        n = len(self.paths)
        while not self._stop.is_set():
            t = time.monotonic()
            vals = [int(os.pread(fd, 32, 0)) for fd in self._fds]
            self.samples.append((t, vals[:n]))
            self.received.append((t, vals[n:]))
            time.sleep(self.interval_s)

    def node(self, i: int) -> list[tuple[float, int]]:
        """Node i's (t, bytes sent) samples."""
        return [(t, b[i]) for t, b in self.samples]

    def node_received(self, i: int) -> list[tuple[float, int]]:
        """Node i's (t, bytes received) samples: a PS's incoming pushes."""
        return [(t, b[i]) for t, b in self.received]


def busy_rate(samples: list[tuple[float, int]], rate_bytes_per_s: float) -> tuple[float, float, int]:
    """(bytes/s while busy, busy seconds, bytes sent while busy) of one node's (t, tx bytes) samples.

    >>> rate, secs, nbytes = busy_rate([(0.0, 0), (0.01, 1000), (0.02, 1_001_000), (0.03, 2_001_000),
    ...                                 (0.04, 2_002_000)], 1e8)   # 1 MB in each of two 10 ms intervals
    >>> round(rate), round(secs, 6), nbytes
    (100000000, 0.02, 2000000)
    """
    return _rate([iv for burst in _bursts(samples, rate_bytes_per_s) for iv in burst])


def interior_rate(samples: list[tuple[float, int]], rate_bytes_per_s: float) -> tuple[float, float, int]:
    """`busy_rate` over the bursts' interiors: each burst (a run of busy intervals) without its
    first and last interval; a burst of 1 or 2 intervals has none.

    >>> rate, secs, nbytes = interior_rate([(0.0, 0), (0.01, 300_000), (0.02, 1_300_000), (0.03, 2_300_000),
    ...                                     (0.04, 2_500_000), (0.05, 2_500_000)], 1e8)   # edges 0.3 and 0.2 MB
    >>> round(rate), round(secs, 6), nbytes
    (100000000, 0.02, 2000000)
    """
    return _rate([iv for burst in _bursts(samples, rate_bytes_per_s) for iv in burst[1:-1]])


def _bursts(samples: list[tuple[float, int]], rate_bytes_per_s: float) -> list[list[tuple[float, int]]]:
    """Runs of consecutive busy intervals, each interval (seconds, bytes)."""
    bursts: list[list[tuple[float, int]]] = []
    run: list[tuple[float, int]] = []
    for (t0, b0), (t1, b1) in zip(samples, samples[1:]):
        dt, db = t1 - t0, b1 - b0
        if dt > 0 and db >= BUSY_FRACTION * rate_bytes_per_s * dt:
            run.append((dt, db))
        elif run:
            bursts.append(run)
            run = []
    if run:
        bursts.append(run)
    return bursts


def _rate(intervals: list[tuple[float, int]]) -> tuple[float, float, int]:
    busy_s = sum(dt for dt, _ in intervals)
    busy_bytes = sum(db for _, db in intervals)
    return (busy_bytes / busy_s if busy_s else 0.0), round(busy_s, 9), busy_bytes
