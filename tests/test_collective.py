"""Collective path in process: the equivalence oracle, message/byte counts against the
formulas, the dense bucket sync, shardings. (The same checks on Ray: test_collective_ray.py.)"""
from __future__ import annotations

import doctest
import importlib

import numpy as np
import pytest
import torch
from torch import nn

from collective.config import CollectiveConfig
from collective.dense_sync import DenseSync
from collective.runner import InProcessJob, plan_collective
from collective.sharding import RowWise, TableWise
from psrec.comm.collectives import ThreadGroup, ring_allreduce_traffic
from psrec.config import load_config
from psrec.core.flat import flat_params
from psrec.core.local import build_local, train_range
from psrec.core.ranges import rows_of
from psrec.threads import on_threads

K, B = 5, 64
BASE = ["synthetic.num_fields=6", "synthetic.num_dense=2", "embedding.dim=4", "model.name=deepfm",
        "model.params.hidden=[8]", "embedding.optimizer.name=sgd", "embedding.optimizer.lr=0.5",
        "embedding.initializer.scale=0.1", "train.optimizer=sgd", "train.lr=0.1", "train.progress=false",
        "data.eval_rows=100"]


def local_reference(workers: int, extra=()):
    """Local training on the union of the workers' batches: K steps of batch workers * B."""
    cfg = load_config(None, BASE + list(extra) + [f"data.batch_size={B * workers}",
                                                  f"data.train_rows={K * B * workers}"])
    setup = build_local(cfg)
    train_range(setup.step, setup.source, 0, K * B * workers, B * workers)
    return setup


def collective_plan(workers: int, sharding="row", overlap=True, bucket_bytes=64, extra=(), transport="inprocess"):
    cfg = load_config(None, BASE + list(extra) + [f"data.batch_size={B}", f"data.train_rows={K * B * workers}"])
    coll = CollectiveConfig(workers=workers, sharding=sharding, overlap=overlap, bucket_bytes=bucket_bytes,
                            transport=transport, metrics_port=-1)
    return plan_collective(cfg, coll)


def assert_matches_local(setup, table_values, dense_all):
    """Every row of every shard (values, freq, version) and every dense replica match local."""
    for t in setup.store.table_names:
        snap = setup.store.variable(t).snapshot()
        want = {k: (v, f, ver) for k, v, f, ver in zip(snap.keys.tolist(), snap.values, snap.freqs, snap.versions)}
        got = {}
        for keys, values, freqs, versions in table_values(t):
            for k, v, f, ver in zip(keys.tolist(), values, freqs, versions):
                assert k not in got, f"key {k} of {t} on two shards"
                got[k] = (v, f, ver)
        assert sorted(got) == sorted(want), t
        keys = sorted(want)
        torch.testing.assert_close(torch.from_numpy(np.stack([got[k][0] for k in keys])),
                                   torch.from_numpy(np.stack([want[k][0] for k in keys])), rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal([got[k][1] for k in keys], [want[k][1] for k in keys])  # freq
        np.testing.assert_array_equal([got[k][2] for k in keys], [want[k][2] for k in keys])  # version
    replicas = dense_all()
    for r in replicas[1:]:
        np.testing.assert_array_equal(r, replicas[0])  # replicas stay identical
    torch.testing.assert_close(torch.from_numpy(np.array(replicas[0])), torch.from_numpy(flat_params(setup.model)),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("workers, sharding, overlap", [(1, "row", True), (2, "row", False), (3, "row", True),
                                                        (2, "table", True), (3, "table", False)])
def test_collective_matches_local_in_process(workers, sharding, overlap):
    setup = local_reference(workers)
    job = InProcessJob(collective_plan(workers, sharding, overlap))
    try:
        reports = job.train()
        assert all(len(r.steps) == K for r in reports)
        assert_matches_local(setup, job.table_values, job.dense_all)
    finally:
        job.close()


def test_admission_filter_and_adagrad_match_local():
    """Same EV semantics on shards: a counter filter admits a key after min_freq occurrences
    summed over all ranks' batches, as on the union batch; Adagrad slots follow. (A TF-style
    initial accumulator of 0.1: with the default 1e-6 the first update is ~lr * sign(g), which
    turns float32 rounding differences of near-zero gradients into visible ones.)"""
    extra = ["embedding.filter.kind=counter", "embedding.filter.min_freq=3", "embedding.optimizer.name=adagrad",
             "embedding.optimizer.initial_accumulator=0.1"]
    setup = local_reference(2, extra)
    assert any(s.waiting for s in setup.store.stats().values())  # the filter holds some keys back
    job = InProcessJob(collective_plan(2, extra=extra))
    try:
        job.train()
        assert_matches_local(setup, job.table_values, job.dense_all)
    finally:
        job.close()


def test_ring_allreduce_traffic_by_hand():
    # 10 float32 on 3 ranks: chunks of 4, 3, 3 elements = 16, 12, 12 bytes. Rank r sends every
    # chunk but c[r+1] in reduce-scatter and every chunk but c[r+2] in all-gather.
    assert ring_allreduce_traffic(10, 4, 3, 0) == (80 - 12 - 12, 80 - 16 - 12, 4)
    assert ring_allreduce_traffic(10, 4, 3, 1) == (80 - 12 - 16, 80 - 12 - 12, 4)
    assert ring_allreduce_traffic(10, 4, 3, 2) == (80 - 16 - 12, 80 - 12 - 16, 4)
    assert ring_allreduce_traffic(8, 4, 2, 0) == (32, 32, 2)  # 2 ranks: send half, twice
    assert ring_allreduce_traffic(8, 4, 1, 0) == (0, 0, 0)


def _on_threads(n, fn):
    return on_threads(range(n), fn)


def test_thread_group_counts_match_the_ring_and_pairwise_formulas():
    n = 3
    g = ThreadGroup(n)

    def run(r):
        t = torch.arange(10, dtype=torch.float32) * (r + 1)
        g.member(r).all_reduce(t)
        send_splits = [r + 1, 2, 0]  # rank s sends s+1 elements to rank 0, 2 to rank 1, none to rank 2
        recv_splits = [[s + 1, 2, 0][r] for s in range(n)]
        got = g.member(r).all_to_all_single(torch.full((sum(send_splits),), float(r)), send_splits, recv_splits, "x")
        return t, got, g.member(r).log.take()

    res = _on_threads(n, run)
    for r, (t, got, log) in enumerate(res):
        torch.testing.assert_close(t, torch.arange(10, dtype=torch.float32) * 6)
        ar, a2a = log
        assert (ar.bytes_sent, ar.bytes_received, ar.messages) == ring_allreduce_traffic(10, 4, n, r)
        assert a2a.messages == n - 1
        recv_from = [[s + 1, 2, 0][r] for s in range(n)]
        assert got.tolist() == [float(s) for s in range(n) for _ in range(recv_from[s])]
        assert a2a.bytes_received == 4 * (sum(recv_from) - recv_from[r])
        assert g.sent_messages[r] == ar.messages + a2a.messages  # counted puts == booked messages
        assert g.sent_bytes[r] == ar.bytes_sent + a2a.bytes_sent


def test_step_traffic_matches_the_formula():
    """One step on 3 in-process ranks: messages and bytes per kind, per rank, equal the
    formula computed from each rank's distinct keys and their owners (module doc of
    collective.sharded_store), and what the group actually carried."""
    n = 3
    plan = collective_plan(n, bucket_bytes=256)
    job = InProcessJob(plan)
    try:
        job.train()  # K steps; the last one is checked
        tables = plan.tables
        T = len(tables)
        # K_[r][d][t]: distinct keys of table t that rank r sent rank d in the last step
        kk = np.zeros((n, n, T), np.int64)
        for r, w in enumerate(job.workers):
            keys, _, _ = w.layer.dedup(w.source.read(*rows_of(K - 1, r, n, B, 0, plan.per_epoch)))
            for i, t in enumerate(tables):
                kk[r, :, i] = np.bincount(w.store.sharding.owners(t.name, keys[t.name]), minlength=n)
        dim = np.array([t.dim for t in tables])
        buckets = [b.buffer.numel() for b in job.workers[0].dense.buckets]
        assert len(buckets) > 1  # the test exercises bucketing
        for r, w in enumerate(job.workers):
            rec = w.report.steps[-1]
            out = np.delete(kk[r], r, axis=0)  # (n-1, T) keys r sent to each other rank
            inn = np.delete(kk[:, r], r, axis=0)  # (n-1, T) keys each other rank sent r
            dense = [ring_allreduce_traffic(b, 4, n, r) for b in buckets]
            want = {
                "sizes": 2 * 8 * T * (n - 1),
                "keys": 8 * (out.sum() + inn.sum()),
                "rows": 4 * ((inn * dim).sum() + (out * dim).sum()),
                "grads": 4 * ((out * (dim + 1)).sum() + (inn * (dim + 1)).sum()),
                "dense": sum(s + rv for s, rv, _ in dense),
            }
            assert rec.bytes_by_tag == want
            assert rec.messages == 4 * (n - 1) + 2 * (n - 1) * len(buckets)
            assert rec.bytes_sent == (8 * T * (n - 1) + 8 * out.sum() + 4 * (inn * dim).sum()
                                      + 4 * (out * (dim + 1)).sum() + sum(s for s, _, _ in dense))
        # what the in-process group carried in all K steps equals what the ranks booked
        for r, w in enumerate(job.workers):
            assert job.group.sent_messages[r] == sum(s.messages for s in w.report.steps)
            assert job.group.sent_bytes[r] == sum(s.bytes_sent for s in w.report.steps)
    finally:
        job.close()


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(5, 7), nn.Linear(7, 3), nn.Linear(3, 1)

    def forward(self, x):
        return self.c(torch.relu(self.b(torch.relu(self.a(x)))))


def dense_reference(n: int):
    """A seeded `_Net`'s initial state, one (4, 5) batch per rank, and a replica that
    backpropagated the mean over the union of the batches (what the ranks must average to)."""
    torch.manual_seed(0)
    init = _Net().state_dict()
    xs = [torch.randn(4, 5) for _ in range(n)]
    ref = _Net()
    ref.load_state_dict(init)
    torch.cat([ref(x) for x in xs]).mean().backward()
    return init, xs, ref


@pytest.mark.parametrize("overlap", [False, True])
def test_dense_sync_averages_gradients_in_reverse_order_buckets(overlap):
    n = 2
    g = ThreadGroup(n)
    init, xs, ref = dense_reference(n)

    def run(r):
        m = _Net()
        m.load_state_dict(init)
        sync = DenseSync(m, g.member(r), bucket_bytes=16, overlap=overlap)
        out = []
        for _ in range(2):  # a second step: gradients are re-attached and zeroed, not accumulated
            m.zero_grad(set_to_none=True)  # as the training step does
            m(xs[r]).mean().backward()
            out.append(sync.finish())
        return m, sync, out[-1]

    for m, sync, times in _on_threads(n, run):
        for p, q in zip(m.parameters(), ref.parameters()):
            torch.testing.assert_close(p.grad, q.grad)
        # gradients are views of the buckets: backward wrote them there, nothing was copied
        assert all(any(p.grad.data_ptr() == v.data_ptr() for b in sync.buckets for v in b.views)
                   for p in m.parameters())
        # reverse registration order (backward reaches the last layer first), closed at >= 16 bytes
        assert [[id(p) for p in b.params] for b in sync.buckets] == [
            [id(m.c.bias), id(m.c.weight)], [id(m.b.bias), id(m.b.weight)], [id(m.a.bias)], [id(m.a.weight)]]
        assert times.buckets == 4 and times.total >= 0 and times.hidden >= 0
        if not overlap:
            assert times.total == times.exposed


def test_table_wise_places_tables_by_load():
    tw = TableWise(2, [("emb", 16, 26), ("linear", 1, 26), ("extra", 8, 2)])
    assert tw.placement == {"emb": 0, "linear": 1, "extra": 1}
    assert tw.holds(0, "emb") and not tw.holds(1, "emb")
    keys = np.arange(5, dtype=np.int64)
    assert tw.owners("linear", keys).tolist() == [1] * 5
    rw = RowWise(4)
    own = rw.owners("emb", np.arange(1000, dtype=np.int64))
    assert set(own.tolist()) == {0, 1, 2, 3} and np.bincount(own).min() > 200


@pytest.mark.parametrize("name", ["psrec.comm.collectives", "collective.sharding", "collective.sharded_store",
                                  "collective.dense_sync", "collective.config", "psrec.core.lockstep"])
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_run_collective_in_process_writes_the_ps_results_layout(tmp_path):
    from collective.runner import run_collective

    cfg = load_config(None, BASE + ["data.batch_size=64", "data.train_rows=512", "data.eval_rows=300",
                                    f"run.dir={tmp_path}", "run.name=coll"])
    res = run_collective(cfg, coll=CollectiveConfig(workers=2, transport="inprocess", metrics_port=-1,
                                                    net="bandwidth=1Gbit,latency=100us"))
    # the keys `run_ps` writes, so that one reader (compare, the simulator's calibration) reads both
    for key in ("mode", "model", "auc", "logloss", "eval_rows", "samples_per_s", "train_seconds", "train_rows",
                "steps", "workers", "net", "phases", "comm_fraction", "wait_fraction", "emulated_comm_fraction",
                "step_p50", "step_p95", "bytes_per_step", "per_worker", "metrics_port", "run_dir"):
        assert key in res, key
    assert res["steps"] == 4 and res["train_rows"] == 512 and res["eval_rows"] == 300
    assert res["emulated_net_seconds"] > 0 and res["messages_per_step"] == 4 + 2 * res["dense_buckets"]
    # the emulated NIC charges at most the additive wire time (all bytes both ways, every latency), and
    # each step keeps its time inside the library by kind (the calibration's split)
    for w in res["per_worker"]:
        additive = (w["bytes_sent"] + w["bytes_received"]) / 125e6 + w["messages"] * 100e-6
        assert 0 < w["emulated_net_seconds"] <= additive
        assert len(w["step_call_seconds"]) == w["steps"] and all(s.get("rows", 0) > 0 for s in w["step_call_seconds"])
    # the wait for the slowest backward is booked as lockstep wait, within the wait phase
    assert 0 <= res["peer_wait_seconds"] <= res["sync_wait_seconds"]
    assert all(0 <= w["peer_wait_seconds"] <= w["phases"]["wait"] for w in res["per_worker"])
    assert (tmp_path / "coll" / "results.json").is_file() and (tmp_path / "coll" / "metrics.prom").is_file()


def test_peer_wait_moves_from_the_allreduce_to_wait():
    """Per step, each rank's wait for the slowest backward (the latest `ready`, capped by its
    exposed all-reduce) moves to `wait`; the phases still sum to the step; the slowest rank
    keeps its all-reduce; ranks out of lockstep are left alone."""
    from psrec.core.lockstep import split_peer_wait
    from psrec.core.report import WorkerReport
    from psrec.core.step import StepRecord

    def rec(ready, ar, total):
        return StepRecord(1, {"wait": 0.001, "alltoall": 0.002, "compute": ready, "allreduce": ar}, 8,
                          allreduce_total=total, ready=ready)

    ranks = [WorkerReport(0, [rec(0.010, 0.005, 0.007), rec(0.020, 0.001, 0.001)]),
             WorkerReport(1, [rec(0.013, 0.001, 0.002), rec(0.012, 0.003, 0.003)]),
             WorkerReport(2, [rec(0.011, 0.0015, 0.002), rec(0.019, 0.0105, 0.011)])]
    walls = [s.total for r in ranks for s in r.steps]
    assert split_peer_wait(ranks)
    # step 1: slowest ready 0.013 -> waits 0.003 (of 0.005), 0 (slowest), 0.0015 (capped at its 0.0015)
    assert [r.steps[0].peer_wait for r in ranks] == pytest.approx([0.003, 0.0, 0.0015])
    assert [r.steps[0].seconds["allreduce"] for r in ranks] == pytest.approx([0.002, 0.001, 0.0])
    assert [r.steps[0].seconds["wait"] for r in ranks] == pytest.approx([0.004, 0.001, 0.0025])
    assert [r.steps[0].allreduce_total for r in ranks] == pytest.approx([0.004, 0.002, 0.0005])
    # step 2: slowest ready 0.020 (rank 0) -> 0, 0.003 (capped), 0.001
    assert [r.steps[1].peer_wait for r in ranks] == pytest.approx([0.0, 0.003, 0.001])
    assert [s.total for r in ranks for s in r.steps] == pytest.approx(walls)
    assert ranks[2].summary()["peer_wait_seconds"] == pytest.approx(0.0025)
    uneven = [WorkerReport(0, [rec(0.01, 0.004, 0.004)]), WorkerReport(1, [rec(0.02, 0.0, 0.0)] * 2)]
    assert not split_peer_wait(uneven) and uneven[0].steps[0].seconds["allreduce"] == 0.004


def test_row_wise_shards_export_and_restore_as_one_table(tmp_path):
    """Row-wise shards use the EV core's own partition, so their exports restore (and
    re-shard) with `EmbeddingVariable.restore`, like PS exports."""
    from psrec.ev import EmbeddingVariable

    setup = local_reference(2)
    job = InProcessJob(collective_plan(2))
    try:
        job.train()
        for w in job.workers:
            w.store.export(tmp_path)
        for t in setup.store.table_names:
            ev = EmbeddingVariable(job.plan.ev_configs[t], name=t)
            ev.restore([tmp_path / "rank-0" / t, tmp_path / "rank-1" / t])
            want, got = setup.store.variable(t).snapshot(), ev.snapshot()
            o1, o2 = np.argsort(want.keys), np.argsort(got.keys)
            np.testing.assert_array_equal(want.keys[o1], got.keys[o2])
            np.testing.assert_allclose(want.values[o1], got.values[o2], rtol=1e-5, atol=1e-6)
            np.testing.assert_array_equal(want.freqs[o1], got.freqs[o2])
    finally:
        job.close()
