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
