"""on_threads: one call per item on its own thread, results in order, errors surfaced."""
import doctest
import threading

import pytest

import psrec.threads
from psrec.threads import on_threads


def test_doctests():
    assert doctest.testmod(psrec.threads).failed == 0


def test_calls_run_concurrently_and_results_keep_item_order():
    barrier = threading.Barrier(3, timeout=10)  # deadlocks (then breaks) unless all 3 run at once
    assert on_threads(["a", "b", "c"], lambda x: (barrier.wait(), x * 2)[1]) == ["aa", "bb", "cc"]


def test_a_failing_call_fails_the_caller_after_every_thread_finished():
    done = []

    def fn(i):
        if i == 1:
            raise RuntimeError("worker 1 failed")
        done.append(i)

    with pytest.raises(RuntimeError, match="worker 1 failed"):
        on_threads([0, 1, 2], fn)
    assert sorted(done) == [0, 2]
