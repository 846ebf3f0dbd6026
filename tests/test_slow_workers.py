"""Slow-worker detection (`psrec.core.slow_workers`): hand-made records, then a real run."""
from __future__ import annotations

import pytest

from psrec.core.slow_workers import detect_slow_workers, slow_workers_of


def recs(busy, rows=None, steps=12, workers=4):
    """(worker, step, rows, busy seconds) for `busy(w, k)` and `rows(w, k)` (default 100)."""
    return [(w, k, rows(w, k) if rows else 100, busy(w, k)) for k in range(1, steps + 1) for w in range(workers)]


def test_a_worker_slowed_from_step_5_is_found_with_its_factor_and_onset():
    found = detect_slow_workers(recs(lambda w, k: 0.3 if (w == 2 and k >= 5) else 0.1))
    assert [(s.worker, s.factor, s.since_step, s.steps, s.last_step) for s in found] == [(2, pytest.approx(3.0), 5,
                                                                                          8, 12)]


def test_one_noisy_step_and_a_recovered_worker_are_not_reported():
    blip = detect_slow_workers(recs(lambda w, k: 0.5 if (w == 1 and k == 6) else 0.1))
    recovered = detect_slow_workers(recs(lambda w, k: 0.4 if (w == 3 and k <= 6) else 0.1))
    mild = detect_slow_workers(recs(lambda w, k: 0.13 if w == 0 else 0.1))  # 1.3x: under the 1.5x threshold
    assert blip == [] and recovered == [] and mild == []


def test_fewer_rows_in_the_same_time_is_slow_too():
    """Under speed-proportional shares a slow worker's step takes as long as its peers' but
    holds fewer rows: speed, not step time, finds it."""
    found = detect_slow_workers(recs(lambda w, k: 0.1, rows=lambda w, k: 25 if w == 1 else 100))
    assert [(s.worker, s.factor, s.since_step) for s in found] == [(1, pytest.approx(4.0), 1)]


def test_the_straggler_of_a_real_collective_run_is_found():
    from test_collective_proportional import proportional_plan

    from collective.runner import InProcessJob

    job = InProcessJob(proportional_plan(3, ['stragglers.factors="2:8x"']))
    try:
        reports = job.train()
    finally:
        job.close()
    found = slow_workers_of(reports, window=3)
    assert [s["worker"] for s in found] == [2] and found[0]["factor"] > 3 and found[0]["since_step"] <= 2


def test_the_live_metric_names_the_slow_worker():
    """The driver's poll feeds cumulative figures; between two polls worker 1 trained 100 rows
    in 0.4 busy seconds, the others in 0.1: its gauge reads 4, theirs 1."""
    from psrec.metrics.prom import JobMetrics

    m = JobMetrics(-1, run_id="r", mode="collective")
    for poll in (1, 2):
        for w in range(3):
            busy = (0.4 if w == 1 else 0.1) * poll
            m.worker(w, {"compute": busy, "wait": 0.3 * poll}, rows=100 * poll, sent=0, received=0, steps=poll)
    got = [m.value("psrec_worker_slowness", worker=str(w)) for w in range(3)]
    assert got == [pytest.approx(1.0), pytest.approx(4.0), pytest.approx(1.0)]


@pytest.mark.parametrize("name", ["psrec.core.slow_workers", "workqueue.shares", "psrec.experiments.longtail_sync"])
def test_docstring_examples(name):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0 and result.failed == 0
