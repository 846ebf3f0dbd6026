"""How workers on shared resources slow each other: the formulas the cost model and the
calibration's fit both use.

    cpu_slowdown         processor sharing of the cores by the busy processes
    busy_processes       which processes are busy in each phase of a mode's step
    sync_pull_queue      the pulls a ps-sync worker waits behind once a step is applied
    expected_max_normal  the slowest of W lockstep workers' normal jitter

(Closed-network queueing at a PS, by Mean Value Analysis, is `psrec.sim.queueing`.)
"""
from __future__ import annotations

import statistics

__all__ = ["cpu_slowdown", "busy_processes", "expected_max_normal", "sync_pull_queue"]


def cpu_slowdown(workers: float, cores: float) -> float:
    """How much slower each worker's CPU work runs when `workers` busy processes share `cores`
    cores (0 = not shared): max(1, workers / cores), processor sharing (L. Kleinrock, Queueing
    Systems vol. 2, 1976, sec. 4.4; the CPU-bound asymptote of operational analysis, E.
    Lazowska et al., Quantitative System Performance, 1984, ch. 5: N jobs on C servers).

    Each worker counts as one busy process: while it waits on a PS, the PS works for it.

    >>> cpu_slowdown(4, 2), cpu_slowdown(2, 2), cpu_slowdown(8, 0)
    (2.0, 1.0, 1.0)
    """
    if cores < 0 or workers < 0:
        raise ValueError(f"workers and cores must be >= 0, got {workers}, {cores}")
    return max(1.0, workers / cores) if cores > 0 else 1.0


def busy_processes(mode: str, phase: str, workers: float, ps: float) -> float:
    """Processes busy on the CPU during `phase` of a `mode` step, the n of `cpu_slowdown`.

    What runs at once, phase by phase:
    - ps-sync apply: the M shards merge and apply the step's pushes while every worker waits
      at the barrier (its next pull is held until the apply is done): n = M;
    - ps-sync serve (the shards' lookups for the pulls that the apply releases): the M shards
      serve the released workers one after another while those wait in line (`sync_pull_queue`):
      n = M;
    - ps-async apply and serve: one worker's push (pull) is applied (looked up) by all M
      shards at once, in parallel, while the other W - 1 workers go on: n = W - 1 + M;
    - everything else: n = W. Lockstep compute runs on all W workers at once, the
      collective's all-to-all and apply on all W ranks at once; a ps-async worker is either
      computing or has a PS thread working for it, so W workers keep W processes busy
      (Lazowska et al. 1984, ch. 5: the CPU-bound asymptote of W customers).

    >>> busy_processes("ps-sync", "apply", 3, 1), busy_processes("ps-sync", "compute", 3, 1)
    (1.0, 3.0)
    >>> busy_processes("ps-async", "apply", 2, 2), busy_processes("ps-async", "serve", 2, 1)
    (3.0, 2.0)
    """
    if mode == "ps-sync" and phase in ("apply", "serve"):
        return float(ps)
    if mode == "ps-async" and phase in ("apply", "serve"):
        return float(workers - 1 + ps)
    return float(workers)


def expected_max_normal(n: int) -> float:
    """E[max of n independent standard normals], Blom's approximation
    Phi^-1((n - 0.375) / (n + 0.25)) (G. Blom, Statistical Estimates and Transformed Beta
    Variables, 1958): 0 for n = 1, 0.59 for 2, 1.05 for 4 (exact 0.56, 1.03).

    >>> expected_max_normal(1), round(expected_max_normal(4), 2)
    (0.0, 1.05)
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return statistics.NormalDist().inv_cdf((n - 0.375) / (n + 0.25)) if n > 1 else 0.0


def sync_pull_queue(workers: float) -> float:
    """Mean pulls a ps-sync worker's pull waits behind at the busiest shard, in serve times:
    (W - 1)(W - 2) / (2 W).

    Why: the W - 1 workers that pushed before the last one wait at their next pull until the
    step is applied (`psrec.ps.transport.ShardEndpoint.pull`), and the apply releases them
    at once (`notify_all`); the shard then serves them one after another under its lock
    (`psrec.ps.shard.PSShard.pull`), so the k-th waits k - 1 serve times, k = 1..W-1. The last
    pusher's own pull is not among them: it is sent only after its push has returned and its
    next batch has been read, when the others have been served (psrec's Ray runs, per-step
    records, ps-sync on 1 PS at batch 1024: at W = 2 the two pulls of a step differ by 2-3 ms
    at the median, the waiter's no longer than the last pusher's; at W = 3 the slowest and
    fastest differ by 6-10 ms).
    The mean over the W workers is sum_{k<W} (k - 1) / W.

    >>> sync_pull_queue(1), sync_pull_queue(2), round(sync_pull_queue(3), 9), sync_pull_queue(4)
    (0.0, 0.0, 0.333333333, 0.75)
    """
    w = float(workers)
    return (w - 1) * (w - 2) / (2 * w) if w >= 2 else 0.0
