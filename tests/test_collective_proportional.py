"""Speed-proportional shares (`collective.data = "proportional"`, `workqueue.shares`): the
apportionment by hand, the smoothed speeds, and the collective ranks whose uneven, changing
parts of each round still equal local training on the round's rows (plain SGD)."""
from __future__ import annotations

import pytest
import torch
from test_collective import BASE, _Net, assert_matches_local, dense_reference, local_reference

from collective.config import CollectiveConfig
from collective.dense_sync import DenseSync
from collective.runner import InProcessJob, plan_collective
from psrec.comm.collectives import ThreadGroup
from psrec.config import ConfigError, load_config
from psrec.threads import on_threads
from workqueue.shares import SharesConfig, SpeedShares, apportion

K, B = 5, 64  # as test_collective's local reference: K rounds of workers x B rows


def test_apportion_by_hand():
    assert apportion(10, [1, 1, 1]) == [4, 3, 3]  # remainder to the lowest index on ties
    assert apportion(12, [3, 1, 0]) == [9, 3, 0]
    assert apportion(100, [3, 1], minimum=40) == [60, 40]  # 75/25 lifted to the minimum
    assert apportion(100, [98, 1, 1], minimum=10) == [80, 10, 10]
    assert apportion(5, [1, 1, 1], minimum=3) == [2, 2, 1]  # a minimum that cannot hold: total // n
    assert apportion(7, [float("nan"), 1]) == [4, 3]  # bad weights: equal shares
    for total, w in [(1024, [1, 0.25, 1, 1]), (4096, [0.3, 2.0, 1.1, 7.0, 0.01]), (3, [1, 2])]:
        assert sum(apportion(total, w, minimum=1)) == total


def test_speed_shares_follow_a_changing_speed():
    s = SpeedShares(4, SharesConfig(smoothing=1.0))
    assert s.split(1024) == [256] * 4
    s.observe([256] * 4, [1.0, 4.0, 1.0, 1.0])  # worker 1: 64 rows/s, the others 256
    assert s.split(1024) == [315, 79, 315, 315]  # 1024 x 256/832 and 1024 x 64/832
    s.observe([315, 79, 315, 315], [1.0, 79 / 256, 1.0, 1.0])  # worker 1 is back to full speed
    assert s.split(1024) == [269, 218, 269, 268]  # measured speeds 315, 256, 315, 315 rows/s
    smooth = SpeedShares(2, SharesConfig(smoothing=0.5))
    smooth.observe([100, 100], [1.0, 1.0])
    smooth.observe([100, 100], [1.0, 0.5])  # worker 1: 100 then 200 rows/s -> EMA 150
    assert smooth.speeds.tolist() == [100.0, 150.0] and smooth.split(250) == [100, 150]
    smooth.observe([0, 100], [0.0, 0.5])  # no rows: worker 0 keeps its speed
    assert smooth.speeds[0] == 100.0


def test_min_share_keeps_a_very_slow_worker_measured():
    s = SpeedShares(4, SharesConfig(smoothing=1.0, min_share=0.1))
    s.observe([256] * 4, [1.0, 1000.0, 1.0, 1.0])
    parts = s.split(1024)
    assert parts[1] == 25 and sum(parts) == 1024  # 10% of the equal share, not ~0


def test_shares_config_is_checked():
    assert load_config(None, ["shares.smoothing=0.5"]).shares.smoothing == 0.5
    for bad in ["shares.smoothing=0", "shares.min_share=2", "shares.window=3"]:
        with pytest.raises(ConfigError, match="shares"):
            load_config(None, [bad])
    assert load_config(None, ['collective.data="proportional"']).collective.data == "proportional"


@pytest.mark.parametrize("bucket_bytes,overlap", [(16, True), (16, False), (1 << 20, False)])
def test_dense_sync_carries_numbers_on_its_last_bucket(bucket_bytes, overlap):
    """The (2N,) speed vector rides on the all-reduce: summed over the ranks, in one or
    several buckets, while the gradients stay the mean over the ranks and no message is added."""
    n = 3
    g = ThreadGroup(n)
    init, xs, ref = dense_reference(n)

    def run(r):
        m = _Net()
        m.load_state_dict(init)
        sync = DenseSync(m, g.member(r), bucket_bytes=bucket_bytes, overlap=overlap)
        numel = sync.numel
        sync.carry(2 * n)
        got = []
        for step in range(2):
            sync.side_in.zero_()
            sync.side_in[r], sync.side_in[n + r] = 10.0 * step + r, 0.5 * (r + 1)
            m.zero_grad(set_to_none=True)
            m(xs[r]).mean().backward()
            times = sync.finish()
            got.append(sync.side_out.tolist())
        return m, got, times.buckets, numel, sync.numel, g.member(r).log.take()

    for m, got, buckets, before, after, log in on_threads(range(n), run):
        assert got == [[0.0, 1.0, 2.0, 0.5, 1.0, 1.5], [10.0, 11.0, 12.0, 0.5, 1.0, 1.5]]
        for p, q in zip(m.parameters(), ref.parameters()):
            torch.testing.assert_close(p.grad, q.grad)
        assert before == after == sum(p.numel() for p in m.parameters())
        assert sum(t.messages for t in log) == 2 * buckets * 2 * (n - 1)  # 2 steps of ring all-reduces, nothing else


def proportional_plan(workers: int, extra=()):
    cfg = load_config(None, BASE + list(extra) + [f"data.batch_size={B}", f"data.train_rows={K * B * workers}",
                                                  "shares.smoothing=1.0"])
    coll = CollectiveConfig(workers=workers, transport="inprocess", data="proportional", metrics_port=-1,
                            bucket_bytes=64)
    return plan_collective(cfg, coll)


@pytest.mark.parametrize("workers", [2, 3])
def test_proportional_sgd_matches_local_training_on_the_rounds_rows(workers):
    """Rank 1 is 6x slower: it ends up training fewer rows than its peers, the parts change
    from step to step, and every round still covers its N x B rows once; weighting
    each rank's mean loss by rows_r / (N x B) makes the K steps equal K local steps of N x B."""
    setup = local_reference(workers)
    job = InProcessJob(proportional_plan(workers, ['stragglers.factors="1:6x"']))
    try:
        reports = job.train()
        assert [len(r.steps) for r in reports] == [K] * workers
        for k in range(K):
            spans = sorted(r.steps[k].span for r in reports)
            assert spans[0][0] == k * workers * B and spans[-1][1] == (k + 1) * workers * B
            assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))  # contiguous, no row twice
        assert reports[0].steps[0].rows == reports[1].steps[0].rows == B  # nothing measured yet
        slow = [s.rows for s in reports[1].steps]
        fast = [s.rows for s in reports[0].steps]
        # by the last step the shares follow the speeds (earlier ones see first-step noise too)
        assert slow[-1] < fast[-1] and len(set(slow)) > 1, (slow, fast)
        assert_matches_local(setup, job.table_values, job.dense_all)
    finally:
        job.close()


def backup_plan(workers: int, backup: int, extra=(), transport: str = "inprocess"):
    cfg = load_config(None, BASE + list(extra) + [f"data.batch_size={B}", f"data.train_rows={K * B * workers}"])
    coll = CollectiveConfig(workers=workers, transport=transport, backup=backup, metrics_port=-1, bucket_bytes=64)
    return plan_collective(cfg, coll)


def replay_applied(plan, reports):
    """Local training on, per step, the union of the applied ranks' (or PS workers') rows; a
    dropped one's lookups still fetched (and created) its rows, so the replay looks them up too."""
    from psrec.core.local import build_local
    from psrec.data.base import concat_batches

    setup = build_local(plan.cfg)
    for k in range(len(reports[0].steps)):
        parts = [setup.source.read(*r.steps[k].span) for r in reports if r.steps[k].applied]
        for r in reports:
            if not r.steps[k].applied:
                keys, _, _ = setup.layer.dedup(setup.source.read(*r.steps[k].span))
                setup.store.lookup_many(keys, train=True)
        setup.step.train_batch(concat_batches(parts), reports[0].steps[k].step)
    return setup


def test_backup_workers_apply_the_first_n_gradients_and_equal_local_on_their_rows():
    """3 ranks, 1 backup, rank 1 50x slower: every step applies 2 gradients and drops B rows;
    the straggler's are the ones dropped (it stops once two tickets are gone, so it never
    sleeps its full slowdown; on a loaded machine a peer may once be later still), and with
    plain SGD the run equals local training on the union of the applied ranks' rows."""
    plan = backup_plan(3, 1, ['stragglers.factors="1:50x"'])
    job = InProcessJob(plan)
    try:
        reports = job.train()
        assert [len(r.steps) for r in reports] == [K] * 3
        assert all(s.dropped_rows == B for r in reports for s in r.steps)
        assert [sum(r.steps[k].applied for r in reports) for k in range(K)] == [2] * K
        assert sum(s.applied for s in reports[1].steps) <= 1
        slow = reports[1].summary()
        assert slow["dropped_gradients"] >= K - 1 and slow["dropped_rows"] == K * B
        assert_matches_local(replay_applied(plan, reports), job.table_values, job.dense_all)
    finally:
        job.close()


def test_backup_config_is_checked():
    with pytest.raises(ConfigError, match="collective.backup"):
        load_config(None, ["collective.workers=2", "collective.backup=2"])
    with pytest.raises(ConfigError, match="collective.backup"):
        load_config(None, ["collective.workers=3", "collective.backup=1", 'collective.data="queue"'])


def test_backup_workers_on_ray_take_tickets_from_the_group_store(ray_session):
    """The Ray path: ranks in actors over gloo, arrival tickets from torch.distributed's TCP store."""
    from collective.runner import RayJob

    plan = backup_plan(3, 1, ['stragglers.factors="2:50x"'], transport="ray")
    job = RayJob(plan)
    try:
        reports = job.train()
        assert [sum(r.steps[k].applied for r in reports) for k in range(K)] == [2] * K
        assert sum(s.applied for s in reports[2].steps) <= 1
        assert all(s.dropped_rows == B for r in reports for s in r.steps)
        assert_matches_local(replay_applied(plan, reports), job.table_values, job.dense_all)
    finally:
        job.close()
