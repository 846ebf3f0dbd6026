"""Speed-proportional shares of each lockstep step (`collective.data = "proportional"`).

Every step trains the interleaved round's rows, `N x batch_size` consecutive rows (the same
union as `collective.data = "interleaved"`), but cut into N contiguous parts in proportion
to the ranks' measured speeds (`workqueue.shares.SpeedShares`), so a straggler trains fewer
rows and every rank reaches the all-reduce at about the same time. Per step, on every rank:

1. train its part with weight `rows_r / (N x batch_size)`: the summed gradients are those
   of the mean loss over the round's rows, so with plain SGD the run equals local training
   on the same rows step by step, whatever the split;
2. its dense all-reduce carries a (2N,) vector (`DenseSync.carry`) holding, in this rank's
   slots, the rows it trained in the previous step and its busy seconds (data + lookup +
   compute, injected slowdown included; not the waits, not the collectives). The vector
   rides on the all-reduce the step does anyway: a separate control all-reduce was one more
   rendezvous per step, a wait for the slowest rank before any work (1.235x the ideal step
   under a 4x straggler, against 1.15x wanted);
3. fold the summed vector into this rank's replica of `SpeedShares` (every rank folds the
   same numbers, so all compute the same split without asking a central queue); it sets the
   split of the next step. Shares therefore follow speeds two steps late, which the
   smoothing (0.3 per step) dwarfs.
"""
from __future__ import annotations

import time
from collections.abc import Callable

from psrec.core.report import WorkerReport
from psrec.core.slow_workers import BUSY_PHASES  # the parts of a step that scale with its rows
from workqueue.shares import SharesConfig, SpeedShares

__all__ = ["run_proportional"]


def run_proportional(worker, first: int, stop: int, batch_size: int, base: int, per_epoch: int,
                     cfg: SharesConfig | None = None,
                     on_step: Callable[[], None] | None = None) -> WorkerReport:
    """Train rounds [first, stop) of `worker` (a `CollectiveWorker`) on its speed-proportional
    part of each round's `N x batch_size` rows; global step = round + 1. Returns its report."""
    n, rank = worker.world_size, worker.rank
    sync = worker.dense
    if sync.side_in.numel() != 2 * n:
        sync.carry(2 * n)  # (rows of each rank, busy seconds of each rank)
    shares = SpeedShares(n, cfg)
    total = n * batch_size
    last_rows, last_busy = 0.0, 0.0
    t_run = time.perf_counter()
    if first == 0 or not worker.report.steps:
        worker.step.t_origin = t_run
    split = shares.split(total)
    for r in range(first, stop):
        worker._begin_step()
        sync.side_in.zero_()
        sync.side_in[rank], sync.side_in[n + rank] = last_rows, last_busy
        start = base + (r % per_epoch) * total + sum(split[:rank])
        end = start + split[rank]
        worker.train_rows(start, end, r + 1, split[rank] / total)
        vals = sync.side_out.tolist()
        shares.observe(vals[:n], vals[n:])
        split = shares.split(total)
        rec = worker.report.steps[-1]
        last_rows, last_busy = float(rec.rows), sum(rec.seconds[p] for p in BUSY_PHASES)
        if on_step is not None:
            on_step()
    worker.report.run_seconds += time.perf_counter() - t_run
    return worker.report
