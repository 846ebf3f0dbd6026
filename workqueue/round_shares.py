"""Speed-proportional shares of each sync-PS round, fixed once for all workers.

Sync PS workers do not all-reduce among themselves, so the split of round r comes from one
place: this coordinator (a Ray actor per job, or an object shared by threads). A worker asks
for its part of round r and reports, in the same call, its rows and busy seconds of round
r - 1. The split of round r is fixed at its first request from the measurements of rounds
<= r - 3, which every worker has reported by then whatever their timing: a worker asks for
round r after pushing round r - 1, whose pull waited until round r - 2 was applied, i.e.
until every worker had pushed round r - 2, having reported round r - 3 when it asked for
round r - 2. So the split is a function of the measurements alone (deterministic), and every
worker gets the same one.

>>> b = RoundShares(2, 100, SharesConfig(smoothing=1.0))
>>> [b.take(r, w, 50, 1.0 if w == 0 else 4.0) for r in range(4) for w in range(2)][-2:]
[(0, 80), (80, 100)]
"""
from __future__ import annotations

import threading

import ray

from workqueue.shares import SharesConfig, SpeedShares

__all__ = ["RoundShares", "RoundSharesActor", "RayRoundShares"]

LAG = 3  # rounds between a measurement and the split it sets (module doc)


class RoundShares:
    """Per-round splits of `total` rows over `workers` (module doc).

    Args:
        workers: N.
        total: rows per round (N x batch_size).
        cfg: the speed smoothing and minimum share (`[shares]`).
    """

    def __init__(self, workers: int, total: int, cfg: SharesConfig | None = None) -> None:
        self.workers, self.total = workers, total
        self.speeds = SpeedShares(workers, cfg)
        self._lock = threading.Lock()
        self._seen: dict[int, dict[int, tuple[float, float]]] = {}  # round -> worker -> (rows, busy seconds)
        self._folded = 0  # rounds [0, _folded) are in `speeds`
        self._splits: dict[int, list[int]] = {}

    def take(self, round_: int, worker: int, last_rows: float, last_busy: float) -> tuple[int, int]:
        """Rows [a, b) of round `round_` (offsets within the round) for `worker`, which trained
        `last_rows` rows in `last_busy` busy seconds in round `round_ - 1` (ignored for round 0)."""
        if not 0 <= worker < self.workers or round_ < 0:
            raise ValueError(f"worker {worker} of {self.workers}, round {round_}: out of range")
        with self._lock:
            if round_ > 0:
                self._seen.setdefault(round_ - 1, {})[worker] = (float(last_rows), float(last_busy))
            split = self._splits.get(round_)
            if split is None:
                while self._folded <= round_ - LAG:
                    got = self._seen.pop(self._folded, {})
                    self.speeds.observe([got.get(w, (0.0, 0.0))[0] for w in range(self.workers)],
                                        [got.get(w, (0.0, 0.0))[1] for w in range(self.workers)])
                    self._folded += 1
                split = self._splits[round_] = self.speeds.split(self.total)
                self._splits.pop(round_ - LAG - 1, None)  # every worker has asked for it by now
            a = sum(split[:worker])
            return a, a + split[worker]


@ray.remote(num_cpus=0)
class RoundSharesActor(RoundShares):
    """A job's `RoundShares` as a Ray actor (its calls are serialised)."""


class RayRoundShares:
    """A worker's handle on the job's `RoundSharesActor`; every call waits at most `timeout_s`."""

    def __init__(self, actor, timeout_s: float = 60.0) -> None:
        self.actor, self.timeout_s = actor, timeout_s

    def take(self, round_: int, worker: int, last_rows: float, last_busy: float) -> tuple[int, int]:
        a, b = ray.get(self.actor.take.remote(round_, worker, last_rows, last_busy), timeout=self.timeout_s)
        return int(a), int(b)
