"""Bounded staleness for sync PS (`ps.staleness = s`, stale-synchronous parallel): a worker
starts step k only once step k - 1 - s is applied, so it runs at most s steps ahead of the
slowest; every step is still applied once, whole (in process; the Ray path shares the code)."""
from __future__ import annotations

import pytest
from test_ps_equivalence import BASE, B

from psrec.config import ConfigError, load_config
from psrec.ps.runner import InProcessPSJob, plan_ps
from psrec.ps.shard import PSShard
from psrec.ps.wire import BadRequest, WireLimits, check_push

K = 10


def train(staleness: int, workers: int = 3, factor: float = 8.0):
    """Train K sync steps with worker 1 `factor`x slower; returns the reports, the shards'
    stats and, per worker, (its step k, the lowest step applied on the shards when its pull
    for step k returned), recorded by wrapping each worker's PS client."""
    cfg = load_config(None, BASE + [f"data.batch_size={B}", f"data.train_rows={K * B * workers}",
                                    "ps.transport=inprocess", "ps.sync=true", f"ps.workers={workers}", "ps.num_ps=2",
                                    f"ps.staleness={staleness}", f'stragglers.factors="1:{factor}x"'])
    job = InProcessPSJob(plan_ps(cfg), None)
    seen: dict[int, list[tuple[int, int]]] = {}
    for w in job.workers:
        client, pulls = w.step.store, seen.setdefault(w.index, [])

        def lookup(keys, train=True, _orig=client.lookup_many, _pulls=pulls):
            out = _orig(keys, train)
            if train:
                _pulls.append((len(_pulls) + 1, min(e.shard.applied_step for e in job.transport.endpoints)))
            return out

        client.lookup_many = lookup
    try:
        reports = job.train(None, None)
        return reports, job.shard_stats, seen
    finally:
        job.close()


@pytest.mark.parametrize("staleness", [0, 2])
def test_workers_run_at_most_s_steps_ahead_of_the_slowest(staleness):
    """A pull for step k returns only once step k - 1 - s is applied everywhere (s = 0:
    the previous step, plain sync). With s = 2 and a straggler, the fast workers do run ahead
    (some pull returns with the previous step not yet applied); every step is applied once."""
    reports, shards, seen = train(staleness)
    ahead = [k - 1 - applied for pulls in seen.values() for k, applied in pulls]
    assert max(ahead) <= staleness, seen
    if staleness:
        assert max(ahead) >= 1, seen
    assert [len(p) for p in seen.values()] == [K] * 3 == [len(r.steps) for r in reports]
    assert all(s["global_step"] == K for s in shards)


def test_a_push_beyond_the_window_is_refused():
    from psrec.ev import EVConfig

    shard = PSShard(0, {"t": EVConfig(dim=4)}, num_workers=2, sync=True, staleness=2)
    check_push(shard, {}, None, 3, WireLimits())  # applied 0, window 1 + 2
    with pytest.raises(BadRequest, match=r"ahead of applied step 0 \+ 3"):
        check_push(shard, {}, None, 4, WireLimits())


def test_staleness_config_is_checked():
    assert load_config(None, ["ps.sync=true", "ps.staleness=4"]).ps.staleness == 4
    for bad in (["ps.staleness=1"], ["ps.sync=true", "ps.staleness=-1"]):
        with pytest.raises(ConfigError, match="ps.staleness"):
            load_config(None, bad)



def test_ssp_pulls_read_an_applied_prefix_within_the_window():
    """Oracle for bounded staleness (s = 2, worker 1 8x slower, 2 shards): every shard's state is
    recorded after each step it applies; each pull for step k returned, on every shard, exactly
    the state after one applied step j with k - 1 - s <= j <= k - 1 (rows not yet created read
    as their initial rows), never a mix of two, and every step was applied once."""
    import threading

    import numpy as np

    from psrec.ev.initializers import initial_rows

    s, workers = 2, 3
    cfg = load_config(None, BASE + [f"data.batch_size={B}", f"data.train_rows={K * B * workers}",
                                    "ps.transport=inprocess", "ps.sync=true", f"ps.workers={workers}", "ps.num_ps=2",
                                    f"ps.staleness={s}", 'stragglers.factors="1:8x"'])
    job = InProcessPSJob(plan_ps(cfg), None)
    shards = [e.shard for e in job.transport.endpoints]
    history: dict[int, dict[int, tuple]] = {}  # shard -> applied step -> (dense, {table: {key: row}})
    pulls = []  # (worker, step k, shard, {table: (keys, rows)}, dense)
    current = threading.local()  # the in-process transport calls the shards on the worker's thread

    def state(sh):
        tables = {}
        for t in sh.store.table_names:
            snap = sh.store.variable(t).snapshot()
            tables[t] = dict(zip(snap.keys.tolist(), snap.values.copy()))
        return (None if sh._dense is None else sh._dense.detach().numpy().copy()), tables

    for sh in shards:
        history[sh.index] = {0: state(sh)}

        def apply(grads, dense_grad, step, scale, _orig=sh._apply, _sh=sh):
            _orig(grads, dense_grad, step, scale)
            history[_sh.index][step] = state(_sh)  # under the shard's lock, which pulls take too

        def pull(keys, train=True, dense=False, _orig=sh.pull, _sh=sh):
            rows, d = _orig(keys, train, dense)
            if train:
                pulls.append((*current.step, _sh.index, {t: (keys[t].copy(), v.copy()) for t, v in rows.items()},
                              None if d is None else d.copy()))
            return rows, d

        sh._apply, sh.pull = apply, pull
    for w in job.workers:
        client, count = w.step.store, [0]

        def lookup(keys, train=True, _orig=client.lookup_many, _w=w.index, _count=count):
            if train:
                _count[0] += 1
                current.step = (_w, _count[0])
            return _orig(keys, train)

        client.lookup_many = lookup
    try:
        job.train(None, None)
        stats = job.shard_stats
    finally:
        job.close()
    assert all(st["global_step"] == K for st in stats)
    assert all(sorted(h) == list(range(K + 1)) for h in history.values())  # each step applied once
    assert {(wk, k) for wk, k, *_ in pulls} == {(wk, k) for wk in range(workers) for k in range(1, K + 1)}
    initial = {}

    def init_row(sh, t, key):
        if (t, key) not in initial:
            var = sh.store.variable(t)
            initial[(t, key)] = initial_rows(var.config.initializer, var.config.seed, np.array([key]), var.dim)[0]
        return initial[(t, key)]

    def is_state(j, si, rows, d):
        dense_j, tables_j = history[si][j]
        if d is not None and not np.array_equal(d, dense_j):
            return False
        return all(np.array_equal(row, tables_j[t][key] if key in tables_j[t] else init_row(shards[si], t, key))
                   for t, (keys, vals) in rows.items() for key, row in zip(keys.tolist(), vals))

    ahead = []
    for wk, k, si, rows, d in pulls:
        seen = [j for j in range(k) if is_state(j, si, rows, d)]
        assert seen, f"worker {wk}'s pull for step {k} on shard {si} is no applied step's state"
        assert max(seen) >= k - 1 - s, f"worker {wk}'s pull for step {k} on shard {si}: step {max(seen)} is too old"
        ahead.append(k - 1 - max(seen))
    assert max(ahead) >= 1  # the fast workers did run ahead of the straggler
