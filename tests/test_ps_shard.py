"""PS shard semantics without Ray: bad input is refused and loses nothing; sync aggregation."""
import numpy as np
import pytest

from psrec.ev import EVConfig, OptimizerConfig
from psrec.ps.partition import BalancedPartitioner, HashModPartitioner, count_requests, make_partitioner
from psrec.ps.shard import DenseSpec, PSShard

CFG = {"emb": EVConfig(dim=2, optimizer=OptimizerConfig(name="sgd", lr=1.0))}


def snapshot(shard):
    k, v = shard.table_values("emb")
    return k.copy(), v.copy()


def test_wrong_gradient_shape_is_refused_and_state_kept():
    s = PSShard(0, CFG)
    keys = np.array([1, 2], np.int64)
    s.push({"emb": (keys, np.ones((2, 2), np.float32), np.ones(2, np.int64))}, None, 1)
    before = snapshot(s)
    with pytest.raises(ValueError, match="'emb'.*shape"):
        s.push({"emb": (keys, np.ones((2, 3), np.float32), np.ones(2, np.int64))}, None, 2)
    with pytest.raises(FloatingPointError, match="'emb'"):
        s.push({"emb": (keys, np.full((2, 2), np.nan, np.float32), np.ones(2, np.int64))}, None, 2)
    with pytest.raises(ValueError, match="dense"):
        s.push({}, np.ones(3, np.float32), 2)
    after = snapshot(s)
    np.testing.assert_array_equal(before[0], after[0])
    np.testing.assert_array_equal(before[1], after[1])


def test_sync_shard_waits_for_all_workers_and_averages():
    s = PSShard(0, CFG, num_workers=2, sync=True, dense=DenseSpec(np.zeros(2, np.float32), "sgd", 1.0))
    k = np.array([5], np.int64)
    init = s.pull({"emb": k})[0]["emb"].copy()
    s.push({"emb": (k, np.array([[1.0, 0.0]], np.float32), np.array([1]))}, np.array([1.0, 1.0], np.float32), 1)
    assert s.applied_step == 0  # one of two workers: nothing applied yet
    np.testing.assert_array_equal(s.pull({"emb": k})[0]["emb"], init)
    s.push({"emb": (k, np.array([[3.0, 2.0]], np.float32), np.array([2]))}, np.array([3.0, 1.0], np.float32), 1)
    assert s.applied_step == 1
    np.testing.assert_allclose(s.pull({"emb": k})[0]["emb"], init - np.array([[2.0, 1.0]]))  # mean of grads
    np.testing.assert_allclose(s.pull({}, dense=True)[1], [-2.0, -1.0])
    freqs, versions = s.store.variable("emb").metadata(k)
    assert freqs.tolist() == [3] and versions.tolist() == [1]


def test_stats_count_bytes_and_requests():
    s = PSShard(3, CFG)
    s.pull({"emb": np.arange(4, dtype=np.int64)})
    st = s.stats()
    assert st.shard == 3 and st.requests == 1
    assert st.bytes_in == 4 * 8 and st.bytes_out == 4 * 2 * 4


def test_stats_keep_each_applys_seconds_in_a_bounded_window(monkeypatch):
    import psrec.ps.shard as shard_mod

    monkeypatch.setattr(shard_mod, "APPLY_WINDOW", 3)
    s = PSShard(0, CFG)
    k = np.array([1], np.int64)
    for step in range(1, 6):
        s.push({"emb": (k, np.ones((1, 2), np.float32), np.ones(1, np.int64))}, None, step)
    st = s.stats()
    assert st.applies == 5 and len(st.apply_recent) == 3  # the last 3 of 5
    assert all(x > 0 for x in st.apply_recent) and sum(st.apply_recent) <= st.apply_seconds
    st.apply_recent.append(9.0)  # a copy: the shard's own window is untouched
    assert len(s.stats().apply_recent) == 3


def test_balanced_partitioner_evens_a_skewed_load():
    # 8 very hot keys that hash-mod happens to pile up, plus a cold tail
    hot = np.arange(8, dtype=np.int64)
    p_hash = HashModPartitioner(4)
    batches = [np.concatenate([hot, np.random.default_rng(i).integers(100, 10**6, 50)]) for i in range(200)]
    keys, req = count_requests(batches)
    bal = BalancedPartitioner.fit(4, keys, req)

    def imbalance(p):
        load = np.zeros(4)
        for b in batches:
            load += np.bincount(p.shard_of(np.unique(b)), minlength=4)
        return load.max() / load.mean()

    assert imbalance(bal) <= imbalance(p_hash) + 1e-9
    assert imbalance(bal) < 1.10
    # every key still has exactly one owner, hot keys where the fit put them
    assert set(np.unique(bal.shard_of(keys))) <= {0, 1, 2, 3}
    assert make_partitioner("balanced", 4, batches).shard_of(hot).tolist() == bal.shard_of(hot).tolist()
    with pytest.raises(ValueError, match="unknown partitioner"):
        make_partitioner("range", 4)
