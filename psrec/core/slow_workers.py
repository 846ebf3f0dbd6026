"""Slow-worker detection from the per-step records: which worker, by how much, since which step.

A worker's speed in a step is its rows over its busy seconds (data + lookup + compute, the
parts that scale with its rows; never the waits or the collectives, which a slow peer
lengthens for everybody). Its slowness is the median speed of all workers in that step over
its own, smoothed by a rolling median over `window` steps (one noisy step on shared cores
is not a straggler). A worker is slow from the first step of its last unbroken run of
smoothed slowness >= `threshold` (extended back over the slow steps the smoothing lagged),
if that run lasts `min_steps` steps or more. Speed, not
step time, is what is compared, so a slow worker is found whether it sets the pace (plain
sync) or trains fewer rows (speed-proportional shares).

Example (worker 1 becomes 4x slower at step 3):
    >>> recs = [(w, k, 100, 0.4 if (w == 1 and k >= 3) else 0.1) for k in range(1, 11) for w in range(3)]
    >>> [(s.worker, round(s.factor, 1), s.since_step) for s in detect_slow_workers(recs, window=1)]
    [(1, 4.0, 3)]
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["BUSY_PHASES", "SlowWorker", "detect_slow_workers", "records_of", "slow_workers_of"]

BUSY_PHASES = ("data", "lookup", "compute")


@dataclass(frozen=True)
class SlowWorker:
    """One slow worker: `factor` = median slowness (peers' median speed / its speed) over its
    slow run, `since_step` the run's first global step, `steps` its length, `last_step` the
    last step seen."""

    worker: int
    factor: float
    since_step: int
    steps: int
    last_step: int

    def to_dict(self) -> dict:
        return asdict(self)


def records_of(reports: Sequence) -> list[tuple[int, int, int, float]]:
    """(worker, step, rows, busy seconds) of every non-empty step of `WorkerReport`s."""
    return [(r.worker, s.step, s.rows, sum(s.seconds.get(p, 0.0) for p in BUSY_PHASES))
            for r in reports for s in r.steps if s.rows > 0]


def detect_slow_workers(records: Iterable[tuple[int, int, int, float]], threshold: float = 1.5,
                        window: int = 5, min_steps: int = 3) -> list[SlowWorker]:
    """Slow workers (module doc) from (worker, step, rows, busy seconds) records, slowest first.

    Args:
        threshold: smoothed slowness at or above which a step counts as slow (1.5 = a third
            slower than the median worker).
        window: steps of the rolling median (1: no smoothing).
        min_steps: shortest slow run reported.
    """
    by_step: dict[int, dict[int, float]] = {}
    for w, k, rows, busy in records:
        if rows > 0 and busy > 0:
            by_step.setdefault(k, {})[w] = rows / busy
    slowness: dict[int, list[tuple[int, float]]] = {}  # worker -> [(step, slowness)]
    for k in sorted(by_step):
        speeds = by_step[k]
        if len(speeds) < 2:
            continue
        med = float(np.median(list(speeds.values())))
        for w, v in speeds.items():
            slowness.setdefault(w, []).append((k, med / v))
    out = []
    for w, series in slowness.items():
        steps = [k for k, _ in series]
        raw = np.array([x for _, x in series])
        smooth = np.array([np.median(raw[max(0, i - window + 1):i + 1]) for i in range(len(raw))])
        slow = smooth >= threshold
        if not slow[-1]:
            continue
        i = len(slow) - 1
        while i > 0 and slow[i - 1]:
            i -= 1
        while i > 0 and raw[i - 1] >= threshold:  # the smoothing lags the onset: back to the first slow step
            i -= 1
        run = len(slow) - i
        if run >= min_steps:
            out.append(SlowWorker(w, float(np.median(raw[i:])), steps[i], run, steps[-1]))
    return sorted(out, key=lambda s: -s.factor)


def slow_workers_of(reports: Sequence, **kw) -> list[dict]:
    """`detect_slow_workers` on `WorkerReport`s, as JSON-ready dicts (results.json)."""
    return [s.to_dict() for s in detect_slow_workers(records_of(reports), **kw)]
