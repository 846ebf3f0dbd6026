"""Backup workers for sync PS (`ps.backup`, `psrec.ps.backup`): N + b workers, every step
applies the first N gradients, and with plain SGD the run equals local training on the
union of the applied workers' rows, in process and on Ray."""
import numpy as np
import pytest
import torch
from test_collective_proportional import replay_applied
from test_ps_equivalence import BASE, B, K

from psrec.config import ConfigError, load_config
from psrec.core.progress import progress_bar
from psrec.ps.runner import InProcessPSJob, plan_ps
from workqueue.arrivals import LocalBoard, straggle_or_beaten


def backup_plan(workers: int, backup: int, extra=(), transport: str = "inprocess"):
    cfg = load_config(None, BASE + list(extra) + [
        f"data.batch_size={B}", f"data.train_rows={K * B * workers}", f"ps.transport={transport}", "ps.sync=true",
        f"ps.workers={workers}", "ps.num_ps=2", f"ps.backup={backup}", "ps.metrics_port=-1"])
    return plan_ps(cfg)


def job_state(job, plan) -> tuple[dict[str, dict], np.ndarray]:
    """The trained tables (table -> key -> row, merged over the shards) and dense vector of a
    PS job, in process or on Ray."""
    tables = {t: {} for t in plan.dims}
    for t in plan.dims:
        for keys, values in job.transport.broadcast("table_values", t):
            tables[t].update(zip(keys.tolist(), values))
    return tables, job.dense()


def assert_matches(setup, tables: dict[str, dict], dense: np.ndarray):
    from psrec.core.flat import flat_params

    for t in setup.store.table_names:
        snap = setup.store.variable(t).snapshot()
        want = dict(zip(snap.keys.tolist(), snap.values))
        got = tables[t]
        assert sorted(got) == sorted(want), t
        keys = sorted(want)
        torch.testing.assert_close(torch.from_numpy(np.stack([got[k] for k in keys])),
                                   torch.from_numpy(np.stack([want[k] for k in keys])), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.from_numpy(dense), torch.from_numpy(flat_params(setup.model)),
                               rtol=1e-5, atol=1e-6)


def check_outcome(reports, workers: int, backup: int, slow: int):
    assert [len(r.steps) for r in reports] == [K] * workers
    assert [sum(r.steps[k].applied for r in reports) for k in range(K)] == [workers - backup] * K
    assert all(s.dropped_rows == backup * B for r in reports for s in r.steps)
    # the straggler is the one dropped (on a loaded machine a peer may once be later still)
    assert sum(s.applied for s in reports[slow].steps) <= 1


def test_backup_workers_apply_the_first_n_pushes_and_equal_local_on_their_rows():
    """3 workers, 1 backup, worker 1 50x slower: every step applies 2 gradients and drops B
    rows, the straggler's; it stops once two tickets are gone instead of sleeping it out."""
    plan = backup_plan(3, 1, ['stragglers.factors="1:50x"'])
    job = InProcessPSJob(plan, plan.source.build())
    try:
        with progress_bar(0, False) as bar:
            reports = job.train(bar, None)
        check_outcome(reports, 3, 1, slow=1)
        summary = reports[1].summary()
        assert summary["dropped_gradients"] >= K - 1 and summary["dropped_rows"] == K * B
        assert_matches(replay_applied(plan, reports), *job_state(job, plan))
    finally:
        job.close()


def test_backup_workers_on_ray_take_tickets_from_the_arrivals_actor(ray_session):
    from psrec.ps.ray_runner import RayPSJob

    plan = backup_plan(3, 1, ['stragglers.factors="2:50x"'], transport="ray")
    job = RayPSJob(plan, plan.source.build())
    try:
        with progress_bar(0, False) as bar:
            reports = job.train(bar, None)
        check_outcome(reports, 3, 1, slow=2)
        assert_matches(replay_applied(plan, reports), *job_state(job, plan))
    finally:
        job.close()


def test_backup_config_is_checked():
    assert load_config(None, ["ps.sync=true", "ps.workers=3", "ps.backup=1"]).ps.backup == 1
    for bad in (["ps.sync=true", "ps.workers=2", "ps.backup=2"],  # no worker left to apply
                ["ps.workers=3", "ps.backup=1"],  # async: nothing to wait for
                ["ps.sync=true", "ps.workers=3", "ps.backup=1", "ps.staleness=1"],
                ["ps.sync=true", "ps.workers=3", "ps.backup=1", 'ps.dense="allreduce"']):
        with pytest.raises(ConfigError, match="ps.backup"):
            load_config(None, bad)


def test_a_straggler_stops_once_the_tickets_are_gone():
    board = LocalBoard()
    assert board.arrive(7) == 1 and board.arrive(7) == 2
    slept, beaten = straggle_or_beaten(board, 7, needed=2, extra_s=30.0)
    assert beaten and slept < 1.0
    slept, beaten = straggle_or_beaten(board, 8, needed=2, extra_s=0.01)
    assert not beaten and slept >= 0.01
