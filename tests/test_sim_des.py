"""psrec.sim.des: the discrete-event simulation against closed forms in simple cases."""
import doctest
import importlib

import pytest

from psrec.sim.des import compare_policies, constant_speeds, from_stragglers, simulate_assignment, straggler_work_time


def test_doctests():
    assert doctest.testmod(importlib.import_module("psrec.sim.des")).failed == 0


@pytest.mark.parametrize("policy", ["static", "dynamic", "stealing"])
def test_equal_speeds_closed_form(policy):
    # 4 workers, 100 rows in 20 tasks of 5 rows, 0.1 s/row, a queue round trip of 10 ms.
    r = simulate_assignment(policy, 4, 100, 5, 0.1, constant_speeds([1.0] * 4), dispatch_latency=0.01)
    if policy == "static":
        assert r.makespan == pytest.approx(100 / 4 * 0.1)          # share / speed: 2.5 s
        assert r.takes == 0
    else:
        assert r.makespan == pytest.approx(20 / 4 * (0.01 + 5 * 0.1))  # (T/W)(latency + r s): 2.55 s
        assert r.takes == 20
    assert r.tasks == (5, 5, 5, 5) and r.rows == (25, 25, 25, 25)
    assert r.busy == pytest.approx((2.5,) * 4)
    assert r.throughput == pytest.approx(100 / r.makespan)


def test_one_straggler_static_is_its_share_over_its_speed():
    speeds = [1.0, 1.0, 0.25, 1.0]  # worker 2 four times slower
    r = simulate_assignment("static", 4, 100, 5, 0.1, constant_speeds(speeds))
    assert r.makespan == pytest.approx(25 * 0.1 / 0.25)        # 10 s
    assert r.finish == pytest.approx((2.5, 2.5, 10.0, 2.5))
    # the three others idle 7.5 s each out of 10: idle = 3 * 7.5 / (4 * 10)
    assert r.idle_fraction == pytest.approx(3 * 7.5 / 40)


@pytest.mark.parametrize("policy", ["dynamic", "stealing"])
def test_one_straggler_dynamic_bounds(policy):
    speeds = [1.0, 1.0, 0.25, 1.0]
    r = simulate_assignment(policy, 4, 100, 5, 0.1, constant_speeds(speeds))
    ideal = 100 * 0.1 / sum(speeds)                             # perfect balance: 3.08 s
    assert ideal <= r.makespan <= ideal + 5 * 0.1 / 0.25        # + at most one task on the straggler
    assert sum(r.rows) == 100 and sum(r.tasks) == 20            # every row exactly once
    assert r.tasks[2] < r.tasks[0]                              # the straggler does fewer tasks


def test_dynamic_beats_static_with_stragglers():
    speeds = [1.0] * 7 + [0.2]
    res = compare_policies(8, 8000, 50, 1e-3, constant_speeds(speeds), dispatch_latency=1e-3)
    assert res["static"].makespan == pytest.approx(1000 * 1e-3 / 0.2)     # 5 s
    # balanced up to one straggler task, each 50-row task paying a 1 ms take
    ideal = 8000 * 1e-3 * (51 / 50) / (7 + 0.2)
    for p in ("dynamic", "stealing"):
        assert ideal * (50 / 51) <= res[p].makespan <= ideal + 50 * 1e-3 / 0.2 + 1e-3
        assert res[p].makespan < res["static"].makespan / 3


def test_last_task_is_shorter():
    r = simulate_assignment("dynamic", 1, 10, 3, 1.0, constant_speeds([1.0]))
    assert r.tasks == (4,) and r.makespan == pytest.approx(10.0)  # tasks of 3, 3, 3, 1 rows


def test_time_varying_speed_uses_task_start():
    # worker 0 runs 10x slower before t = 1 s; each task started before then is slow
    def work_time(w, t, base):
        return base * (10.0 if (w == 0 and t < 1.0) else 1.0)

    r = simulate_assignment("dynamic", 2, 4, 1, 0.5, work_time)
    # t=0: w0 starts task (5 s), w1 runs 0.5 s tasks at 0, 0.5, 1.0 -> done at 1.5; makespan 5 s
    assert r.tasks == (1, 3) and r.makespan == pytest.approx(5.0)


def test_shared_straggler_model():
    from workqueue.stragglers import StragglerConfig, Stragglers

    cfg = StragglerConfig(factors="1:4x")
    wt = straggler_work_time(cfg, 4)
    r = simulate_assignment("static", 4, 400, 10, 0.01, wt)
    assert r.makespan == pytest.approx(100 * 0.01 * 4)           # share * seconds/row * factor
    assert from_stragglers(Stragglers(cfg, 4))(1, 0.0, 1.0) == pytest.approx(4.0)
    with pytest.raises(TypeError):
        from_stragglers(object())


def test_errors():
    wt = constant_speeds([1.0])
    with pytest.raises(ValueError, match="policy"):
        simulate_assignment("random", 1, 10, 1, 1.0, wt)
    with pytest.raises(ValueError):
        simulate_assignment("static", 0, 10, 1, 1.0, wt)
    with pytest.raises(ValueError):
        constant_speeds([1.0, 0.0])
