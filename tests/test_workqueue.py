"""The work-queue core without Ray: accounting, leases, duplicates, policies, checkpoints,
the straggler model, metrics and the experiment's summary arithmetic."""
import heapq
import json
import math
import tomllib

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from workqueue import (
    StaticPolicy,
    StealingPolicy,
    StragglerConfig,
    Stragglers,
    Task,
    WorkQueueConfig,
    WorkQueueCore,
    contiguous_shares,
    epoch_order,
    make_policy,
    parse_factors,
)
from workqueue.longtail import summarize
from workqueue.metrics import QueueMetrics

POLICIES = ["static", "dynamic", "stealing"]


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def make(policy="dynamic", workers=3, rows=100, task_rows=10, epochs=1, clock=None, **kw) -> WorkQueueCore:
    cfg = WorkQueueConfig(policy=policy, task_rows=task_rows, epochs=epochs, **kw)
    return WorkQueueCore(cfg, workers, 0, rows, clock=clock or FakeClock())


def drain(q: WorkQueueCore, workers) -> list[tuple[int, Task]]:
    """Round-robin take/done until nothing is left; returns (worker, task) in order."""
    out, idle = [], 0
    while idle < len(workers):
        idle = 0
        for w in workers:
            t = q.take(w)
            if t is None:
                idle += 1
                continue
            assert q.done(w, t)
            out.append((w, t))
    return out


# --- tasks ----------------------------------------------------------------------------------


def test_tasks_cover_rows_and_shuffle_per_epoch():
    q = make(rows=95, task_rows=10, epochs=2, shuffle=True, seed=3)
    assert q.tasks_per_epoch == 10
    done = drain(q, [0])
    for e in (0, 1):
        tasks = sorted((t for _, t in done if t.epoch == e), key=lambda t: t.start)
        assert [(t.start, t.end) for t in tasks] == [(s, min(s + 10, 95)) for s in range(0, 95, 10)]
    orders = [[t.index for _, t in done if t.epoch == e] for e in (0, 1)]
    assert orders[0] == epoch_order(10, 0, 3, True) and orders[1] == epoch_order(10, 1, 3, True)
    assert orders[0] != orders[1]  # a fresh order each epoch
    assert epoch_order(10, 0, 3, True) == epoch_order(10, 0, 3, True)  # and reproducible


def test_contiguous_shares_balance():
    shares = contiguous_shares(10, 4)
    assert [len(s) for s in shares] == [3, 3, 2, 2]
    assert [i for s in shares for i in s] == list(range(10))


# --- exactly-once accounting ----------------------------------------------------------------


@pytest.mark.parametrize("policy", POLICIES)
def test_exactly_once_every_policy_two_epochs(policy):
    q = make(policy, workers=3, rows=1003, task_rows=50, epochs=2)
    done = drain(q, [0, 1, 2])
    assert q.finished
    acc = q.accounting()
    assert acc["exactly_once"] and acc["duplicates"] == 0
    for ep in acc["epochs"]:
        assert ep["rows_done"] == ep["rows"] == 1003 and ep["tasks_done"] == 21
    assert sorted((t.epoch, t.index) for _, t in done) == [(e, i) for e in (0, 1) for i in range(21)]
    assert q.stats()["requeues"] == 0


@pytest.mark.parametrize("policy", POLICIES)
def test_exactly_once_with_a_killed_worker(policy):
    q = make(policy, workers=3, rows=300, task_rows=10, epochs=2)
    held = q.take(1)  # worker 1 takes a task and dies with it
    assert held is not None
    assert q.worker_lost(1) == 1
    assert q.stats()["requeued_lost"] == 1
    done = drain(q, [0, 2])
    assert q.finished and q.accounting()["exactly_once"]
    assert all(w != 1 for w, _ in done)
    assert q.done_by(held.epoch)[held.index] in (0, 2)
    # The re-queued task is handed out first, before any pending work.
    assert done[0][1] == held
    if policy != "dynamic":  # the dead worker's reserved share went to the others
        assert q.stats()["reassigned"] > 0


def test_static_share_of_a_dead_worker_goes_to_the_others_in_later_epochs():
    q = make("static", workers=2, rows=40, task_rows=10, epochs=2, shuffle=False)
    q.worker_lost(1)
    done = drain(q, [0])
    assert q.finished and q.accounting()["exactly_once"]
    assert {w for w, _ in done} == {0}


# --- leases ---------------------------------------------------------------------------------


def test_lease_expiry_requeues_with_injected_clock():
    clock = FakeClock()
    q = make("dynamic", workers=2, rows=50, task_rows=10, lease_timeout_s=5.0, clock=clock)
    t = q.take(0)
    clock.t = 4.9
    assert q.expire() == 0 and q.leases() == {0: [t]}
    clock.t = 5.0
    t1 = q.take(1)  # the expired task comes back first
    assert t1 == t
    assert q.leases() == {1: [t]}
    st = q.stats()
    assert st["requeued_expired"] == 1 and st["requeues"] == 1
    assert q.done(1, t1)
    drain(q, [1])
    assert q.finished and q.accounting()["exactly_once"]


def test_heartbeat_keeps_a_long_task_leased():
    clock = FakeClock()
    q = make("dynamic", workers=2, rows=50, task_rows=10, lease_timeout_s=5.0, clock=clock)
    t = q.take(0)
    for step in range(1, 5):
        clock.t = 4.0 * step
        assert q.heartbeat(0) == 1
        assert q.expire() == 0
    assert q.done(0, t)


def test_done_twice_counted_once_and_flagged():
    clock = FakeClock()
    q = make("dynamic", workers=2, rows=30, task_rows=10, lease_timeout_s=1.0, clock=clock)
    t = q.take(0)
    clock.t = 2.0  # worker 0 stalls; its lease expires
    assert q.take(1) == t
    assert q.done(1, t) is True
    assert q.done(0, t) is False  # the stalled worker comes back: a duplicate
    assert q.done(1, t) is False  # and a plain double report as well
    assert q.duplicates == [{"epoch": 0, "index": t.index, "worker": 0, "first_worker": 1},
                            {"epoch": 0, "index": t.index, "worker": 1, "first_worker": 1}]
    drain(q, [0, 1])
    acc = q.accounting()
    assert acc["exactly_once"] and acc["duplicates"] == 2
    assert acc["epochs"][0]["rows_done"] == 30
    assert sum(q.stats()["rows_by_worker"]) == 30


def test_late_report_of_the_original_holder_wins_and_drops_the_copy():
    clock = FakeClock()
    q = make("dynamic", workers=3, rows=30, task_rows=10, lease_timeout_s=1.0, clock=clock)
    t = q.take(0)
    clock.t = 2.0
    q.expire()
    assert q.depth == 3  # re-queued copy + 2 pending
    assert q.done(0, t) is True  # the slow holder finishes before anyone took the copy
    assert q.depth == 2
    t2 = q.take(1)
    clock.t = 4.0
    assert q.take(2) == t2  # expired again, taken by worker 2
    assert q.done(1, t2) is True
    assert q.leases().get(2) is None  # worker 2's copy no longer counts as outstanding
    assert q.done(2, t2) is False


def test_rejects_foreign_tasks_and_workers():
    q = make(rows=30, task_rows=10)
    q.take(0)
    with pytest.raises(ValueError):
        q.done(0, Task(0, 0, 0, 11))  # wrong bounds
    with pytest.raises(ValueError):
        q.done(0, Task(5, 0, 0, 10))  # epoch not opened
    with pytest.raises(ValueError):
        q.take(7)


# --- policies -------------------------------------------------------------------------------


def test_static_gives_each_worker_its_contiguous_share():
    q = make("static", workers=3, rows=120, task_rows=10, shuffle=True)
    got = []
    while (t := q.take(0)) is not None:
        got.append(t.index)
        q.done(0, t)
    assert sorted(got) == [0, 1, 2, 3] and got != [0, 1, 2, 3]  # its share, shuffled
    assert not q.finished and q.depth == 8  # the others' shares wait for them
    assert sorted(t.index for _, t in drain(q, [2])) == [8, 9, 10, 11]


def test_stealing_takes_from_the_back_of_the_fullest_share():
    p = StealingPolicy(2)
    p.add_epoch(0, list(range(6)), [0, 1])  # shares (0,1,2) and (3,4,5)
    assert [p.next(1) for _ in range(3)] == [(0, 3), (0, 4), (0, 5)]
    assert p.next(1) == (0, 2)  # stolen: the victim's last
    assert p.next(0) == (0, 0) and p.steals == 1
    st = p.state()
    p2 = make_policy("stealing", 2)
    p2.load_state(json.loads(json.dumps(st)))
    assert p2.next(0) == (0, 1) and p2.steals == 1


def test_static_policy_state_round_trip():
    p = StaticPolicy(2)
    p.add_epoch(0, [3, 1, 0, 2], [0, 1])
    p.next(0)
    p2 = StaticPolicy(2)
    p2.load_state(p.state())
    assert [p2.next(0), p2.next(1), p2.next(1)] == [(0, 0), (0, 3), (0, 2)]


def test_epochs_flow_without_a_barrier_under_static():
    q = make("static", workers=2, rows=40, task_rows=10, epochs=2, shuffle=False)
    a, b = q.take(0), q.take(0)
    q.done(0, a), q.done(0, b)
    t = q.take(0)  # worker 0 is done with epoch 0's share; worker 1 has not started
    assert t is not None and t.epoch == 1
    assert q.epoch == 0


def simulate(policy: str, factors: str, workers=4, rows=400, task_rows=1, take_cost=0.0) -> float:
    """Discrete-event run of the core: a task of r rows takes r seconds x the worker's
    slowdown (+ take_cost); returns the makespan."""
    q = make(policy, workers=workers, rows=rows, task_rows=task_rows)
    s = Stragglers(StragglerConfig(factors=factors), workers)
    free = [(0.0, w) for w in range(workers)]  # (time the worker is free, worker)
    heapq.heapify(free)
    makespan = 0.0
    while free:
        now, w = heapq.heappop(free)
        t = q.take(w)
        if t is None:
            continue  # nothing left for this worker (static: its share is done)
        end = now + take_cost + s.work_time(w, now, float(t.rows))
        q.done(w, t)
        makespan = max(makespan, end)
        heapq.heappush(free, (end, w))
    assert q.finished and q.accounting()["exactly_once"]
    return makespan


def test_makespan_static_vs_dynamic_under_a_straggler():
    ideal = 400 / 3.25  # 3 workers at speed 1 + one at 1/4: total work / aggregate speed
    static = simulate("static", "1:4x")
    dynamic = simulate("dynamic", "1:4x")
    stealing = simulate("stealing", "1:4x")
    assert static == 400.0  # the straggler's share, 100 rows, at 4 s per row
    assert static / ideal == pytest.approx(3.25)
    assert dynamic < static and stealing < static
    assert dynamic / ideal <= 1.05 and stealing / ideal <= 1.05
    assert simulate("static", "") == simulate("dynamic", "") == 100.0  # no straggler: equal


def test_dynamic_tail_is_about_one_slow_task():
    ideal = 4000 / 3.25
    for task_rows in (10, 40):
        dyn = simulate("dynamic", "1:4x", rows=4000, task_rows=task_rows)
        assert dyn - ideal <= 4 * task_rows  # at most one task of the 4x straggler


# --- checkpoint / restore -------------------------------------------------------------------


@pytest.mark.parametrize("policy", POLICIES)
def test_checkpoint_restore_mid_epoch(policy):
    q = make(policy, workers=3, rows=200, task_rows=10, epochs=2, seed=5)
    for _ in range(4):
        for w in range(3):
            q.done(w, q.take(w))
    leased = q.take(2)  # outstanding at checkpoint time
    state = json.loads(json.dumps(q.checkpoint()))  # JSON-friendly
    done_before = {(e, i) for e in range(2) for i in q.done_by(e)}

    r = WorkQueueCore.restore(state, clock=FakeClock())
    assert r.stats()["requeued_restored"] == 1 and r.depth == q.depth + 1
    first = r.take(0)
    assert first == leased  # the lease of the old incarnation is re-run first

    # Apart from that, the restored queue continues exactly where the original was.
    q.done(2, leased)
    r.done(0, first)
    seq_q = [t for _, t in drain(q, [0, 1, 2])]
    seq_r = [t for _, t in drain(r, [0, 1, 2])]
    assert seq_q == seq_r
    for queue in (q, r):
        assert queue.finished and queue.accounting()["exactly_once"]
    done_after = {(t.epoch, t.index) for t in seq_r} | {first.key}
    assert done_before.isdisjoint(done_after)
    assert len(done_before) + len(done_after) == 2 * 20


def test_restore_rejects_other_versions():
    state = make().checkpoint()
    state["version"] = 99
    with pytest.raises(ValueError):
        WorkQueueCore.restore(state)


# --- configuration --------------------------------------------------------------------------


def test_config_validation_and_toml_loading():
    from psrec.config_io import ConfigError, from_mapping

    with pytest.raises(ValueError):
        WorkQueueConfig(task_rows=0)
    with pytest.raises(ValueError):
        WorkQueueConfig(policy="roundrobin")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        WorkQueueConfig(lease_timeout_s=0)
    data = tomllib.loads('policy = "static"\ntask_rows = 512\nepochs = 2\nlease_timeout_s = 9.5\n')
    cfg = from_mapping(WorkQueueConfig, data, where="workqueue")
    assert (cfg.policy, cfg.task_rows, cfg.epochs, cfg.lease_timeout_s) == ("static", 512, 2, 9.5)
    with pytest.raises(ConfigError, match="workqueue.task_size"):
        from_mapping(WorkQueueConfig, {"task_size": 3}, where="workqueue")
    st = from_mapping(StragglerConfig, tomllib.loads('factors = "1:4x"\nperiod_rate_per_s = 0.1\n'))
    assert Stragglers(st, 2).base_factor(1) == 4.0


# --- stragglers -----------------------------------------------------------------------------


def test_parse_factors():
    assert parse_factors("1:4x,3:2x") == {1: 4.0, 3: 2.0}
    assert parse_factors("") == {}
    for bad in ("1", "a:2x", "1:0.5x", "1:2x,1:3x", "-1:2x"):
        with pytest.raises(ValueError):
            parse_factors(bad)
    with pytest.raises(ValueError):
        Stragglers(StragglerConfig(factors="4:2x"), 4)  # worker out of range


def test_fixed_factor_scales_work_time():
    s = Stragglers(StragglerConfig(factors="1:4x,3:2x"), 4)
    assert [s.slowdown(w, 10.0) for w in range(4)] == [1.0, 4.0, 1.0, 2.0]
    assert s.work_time(1, 3.0, 0.25) == 1.0
    assert s.work_time(0, 3.0, 0.25) == 0.25


def test_slow_periods_integrate_and_are_deterministic():
    cfg = StragglerConfig(factors="0:2x", period_rate_per_s=0.5, period_mean_s=1.0, period_factor=3.0, seed=7)
    s, s2 = Stragglers(cfg, 2), Stragglers(cfg, 2)
    eps = s.episodes(0, 50.0)
    assert eps and eps == s2.episodes(0, 50.0)  # same seed, same neighbours
    assert eps != s.episodes(1, 50.0)  # each worker its own
    a, b = eps[0]
    assert s.slowdown(0, (a + b) / 2) == 6.0 and s.slowdown(0, b + 1e-9) in (2.0, 6.0)
    # The wall time of base seconds of work: integral of 1/slowdown over it equals the work.
    for t0, base in [(0.0, 3.0), (a - 0.1, 0.5), (2.5, 10.0)]:
        wall = s.work_time(0, t0, base)
        ts = np.linspace(t0, t0 + wall, 20_001)
        rate = np.array([1.0 / s.slowdown(0, t) for t in ts[:-1]])
        assert float(np.sum(rate * np.diff(ts))) == pytest.approx(base, rel=5e-3)
    # Golden case by hand: start at an episode's start with work worth the episode at 6x plus
    # 1 s more; the rest runs at the base 2x, so the wall time is the episode + 2 s.
    (a, b), nxt = next(((e, f) for e, f in zip(eps, eps[1:]) if f[0] - e[1] > 2.0 and f[1] - f[0] > 0.6))
    assert s.work_time(0, a, (b - a) / 6.0 + 1.0) == pytest.approx((b - a) + 2.0)
    # ... and 1 s more than that crosses into the next episode's 6x.
    gap = nxt[0] - b  # seconds of 2x running between the episodes
    assert s.work_time(0, a, (b - a) / 6.0 + gap / 2.0 + 0.1) == pytest.approx((b - a) + gap + 0.6)


def test_lognormal_factors_are_at_least_one():
    s = Stragglers(StragglerConfig(dist="lognormal", dist_sigma=1.0, seed=1), 200)
    assert (s.base >= 1.0).all() and (s.base == 1.0).sum() > 50 and s.base.max() > 2.0
    assert (Stragglers(StragglerConfig(dist="lognormal", dist_sigma=1.0, seed=1), 200).base == s.base).all()


# --- metrics and summary --------------------------------------------------------------------


def test_metrics_track_depth_leases_requeues_and_throughput():
    reg = CollectorRegistry()
    m = QueueMetrics(reg)
    clock = FakeClock()
    q = WorkQueueCore(WorkQueueConfig(task_rows=10, lease_timeout_s=1.0), 2, 0, 40, clock=clock, observer=m)
    t = q.take(0)
    assert reg.get_sample_value("workqueue_depth") == 3
    assert reg.get_sample_value("workqueue_leases") == 1
    clock.t = 2.0
    t1 = q.take(1)
    assert t1 == t and reg.get_sample_value("workqueue_requeues_total", {"reason": "expired"}) == 1
    clock.t = 2.5
    q.done(1, t1)
    assert reg.get_sample_value("workqueue_worker_rows_per_second", {"worker": "1"}) == pytest.approx(20.0)
    q.done(0, t)
    assert reg.get_sample_value("workqueue_duplicates_total") == 1
    drain(q, [0, 1])
    snap = m.snapshot()
    assert snap["depth"] == 0 and snap["leases"] == 0 and snap["max_depth"] == 3
    assert snap["requeues"] == {"expired": 1} and snap["duplicates"] == 1
    assert sum(w["rows"] for w in snap["workers"].values()) == 40
    json.dumps(snap)
    assert "workqueue_rows_done_total" in m.text()


def test_summarize_golden_numbers():
    recs = [
        {"worker": 0, "rows": 100, "t_start": 0.0, "t_end": 1.0, "compute_s": 1.0, "extra_s": 0.0, "take_s": 0.02},
        {"worker": 0, "rows": 100, "t_start": 1.0, "t_end": 2.0, "compute_s": 1.0, "extra_s": 0.0, "take_s": 0.02},
        {"worker": 1, "rows": 100, "t_start": 0.0, "t_end": 4.0, "compute_s": 1.0, "extra_s": 3.0, "take_s": 0.02},
        {"worker": 1, "rows": 100, "t_start": 4.0, "t_end": 5.0, "compute_s": 0.5, "extra_s": 0.5, "take_s": 0.02},
    ]
    s = summarize(recs, 3)
    # All workers with work run until t=2 (worker 0's end). In that window worker 0 did 200 rows
    # (100/s) and worker 1 half of its first task, 50 rows (25/s); worker 2 had none.
    assert s["all_busy_window_s"] == 2.0
    assert s["aggregate_rows_per_s"] == 125.0
    assert s["ideal_makespan_s"] == 400 / 125.0 and s["makespan_s"] == 5.0
    assert s["vs_ideal"] == pytest.approx(5.0 / 3.2)
    w0, w1, w2 = s["workers"]
    assert w1["rows_per_s"] == 40.0  # over its own busy time: faster once alone, not the ideal's speed
    assert (w0["busy_s"], w0["idle_s"], w1["straggler_s"], w2["idle_s"]) == (2.0, 3.0, 3.5, 5.0)
    assert s["take_overhead"] == pytest.approx(0.02 / 0.875)
    assert math.isnan(summarize([], 2)["ideal_makespan_s"])
