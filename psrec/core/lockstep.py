"""Waiting for the slowest rank inside the dense all-reduce, told apart from the all-reduce.

In lockstep every rank leaves a shared point of the step at about the same moment — a
collective rank the lookup's last all-to-all (the rows coming back), a hybrid PS worker the
previous step's all-reduce — then runs until it waits for the dense all-reduce
(`collective.dense_sync.DenseSync.finish`). A rank that got there early waits for the
slowest rank's buckets: time that its own clock books as exposed all-reduce, but that is
a lockstep wait (another rank's compute or pull, a straggler, or, with more ranks than
cores, the scheduler running some ranks first), not communication. Collective-communication
profilers split it the same way (e.g. "wait for peers" vs "transfer").

Each rank records `ready`: seconds from the shared point to entering the all-reduce's wait
(`psrec.core.step.TrainStep`). After training, per step k, with R_k = max over ranks of ready:

    peer_wait(rank, k) = min(exposed all-reduce(rank, k), R_k - ready(rank, k))

moves from `allreduce` to `wait` (and out of the all-reduce's in-flight total); the step's
phases still sum to its wall time. The slowest rank's peer wait is 0: what it waits for in
the all-reduce is the all-reduce.

Example (two ranks; the second's backward ends 4 ms later):
    >>> from psrec.core.report import WorkerReport
    >>> from psrec.core.step import StepRecord
    >>> def rec(ready, ar):
    ...     return StepRecord(1, {"wait": 0.0, "allreduce": ar, "compute": ready}, 8, allreduce_total=ar, ready=ready)
    >>> a, b = WorkerReport(0, [rec(0.010, 0.005)]), WorkerReport(1, [rec(0.014, 0.001)])
    >>> split_peer_wait([a, b])
    True
    >>> [round(r.steps[0].seconds["allreduce"], 6) for r in (a, b)], round(a.steps[0].peer_wait, 6)
    ([0.001, 0.001], 0.004)
"""
from __future__ import annotations

from collections.abc import Sequence

__all__ = ["split_peer_wait"]


def split_peer_wait(reports: Sequence) -> bool:
    """Move each rank's estimated wait for the slowest rank out of its exposed all-reduce and
    into `wait`, step by step (module doc). `reports`: every rank's `WorkerReport`, whose
    StepRecords carry `ready`. Returns False, changing nothing, when the ranks' step counts
    differ (not lockstep) or there is one rank."""
    live = [r for r in reports if r.steps]
    if len(live) < 2 or len({len(r.steps) for r in live}) != 1 or len(live) != len(reports):
        return False
    for k in range(len(live[0].steps)):
        recs = [r.steps[k] for r in live]
        slowest = max(s.ready for s in recs)
        for s in recs:
            pw = min(s.seconds["allreduce"], max(0.0, slowest - s.ready))
            s.seconds["allreduce"] -= pw
            s.seconds["wait"] += pw
            s.allreduce_total = max(0.0, s.allreduce_total - pw)
            s.peer_wait = pw
    return True
