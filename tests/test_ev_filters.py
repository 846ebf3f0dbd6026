"""Admission filters: counter (exact) and counting Bloom filter (bounded memory)."""
from __future__ import annotations

import numpy as np
import pytest

from psrec.ev import (
    CountingBloomFilter,
    EmbeddingVariable,
    EVConfig,
    FilterConfig,
    InitializerConfig,
    OptimizerConfig,
    bloom_size,
    initial_rows,
)


def _k(*xs) -> np.ndarray:
    return np.array(xs, dtype=np.int64)


def _ev(kind: str, min_freq: int = 3, **kw) -> EmbeddingVariable:
    cfg = EVConfig(dim=4, optimizer=OptimizerConfig(name="sgd", lr=1.0),
                   filter=FilterConfig(kind=kind, min_freq=min_freq, **kw))
    return EmbeddingVariable(cfg, name="f")


@pytest.mark.parametrize("kind", ["counter", "bloom"])
def test_admitted_by_the_update_that_reaches_min_freq(kind):
    ev = _ev(kind, min_freq=3, expected_keys=10_000)
    g = np.ones((1, 4), np.float32)
    init = initial_rows(ev.config.initializer, ev.config.seed, _k(5), 4)
    ev.apply_gradients(_k(5), g, step=1)
    ev.apply_gradients(_k(5), g, step=2)
    # Waiting: zeros on lookup, no row, gradients dropped, only a counter.
    np.testing.assert_array_equal(ev.lookup(_k(5)), np.zeros((1, 4), np.float32))
    assert len(ev) == 0 and ev.filter_counts(_k(5)).tolist() == [2]
    ev.apply_gradients(_k(5), g, step=3)
    # Admitted now, and this update's gradient applied (sgd, lr 1) to the initial row.
    np.testing.assert_allclose(ev.lookup(_k(5)), init - 1.0, rtol=1e-6)
    freqs, versions = ev.metadata(_k(5))
    assert freqs.tolist() == [3] and versions.tolist() == [3]


def test_counter_filter_counts_multiplicity_and_reports_waiting_and_admitted():
    ev = _ev("counter", min_freq=3)
    ev.apply_gradients(_k(1, 1, 2, 3, 3, 3, 4), np.ones((7, 4), np.float32), step=1)
    st = ev.stats()
    assert len(ev) == 1 and ev.contains(_k(3)).tolist() == [True]  # 3 occurred 3 times at once
    assert st.waiting == 3 and st.admitted_total == 1 and st.waiting_exact
    ev.apply_gradients(_k(1, 2), np.ones((2, 4), np.float32), counts=_k(1, 5), step=2)
    st = ev.stats()
    assert st.waiting == 1 and st.admitted_total == 3 and st.rows == 3
    assert ev.metadata(_k(1, 2, 3))[0].tolist() == [3, 6, 3]
    assert ev.filter_counts(_k(4, 99)).tolist() == [1, 0]


def test_waiting_keys_cost_a_counter_not_a_row():
    ev = _ev("counter", min_freq=10)
    keys = np.arange(20_000, dtype=np.int64)
    ev.apply_gradients(keys, np.ones((len(keys), 4), np.float32), step=1)
    st = ev.stats()
    assert st.rows == 0 and st.waiting == 20_000
    plain = EmbeddingVariable(EVConfig(dim=64, filter=FilterConfig(kind="none")))
    assert st.bytes < 20_000 * plain.row_bytes / 4


def test_min_freq_one_admits_at_once():
    ev = _ev("counter", min_freq=1)
    ev.apply_gradients(_k(1), np.ones((1, 4), np.float32), step=1)
    assert len(ev) == 1 and ev.stats().waiting == 0


def test_bloom_false_positive_rate_is_roughly_as_configured():
    n, p = 20_000, 0.01
    f = CountingBloomFilter(*bloom_size(n, p), seed=0, max_count=1)
    rng = np.random.default_rng(0)
    keys = rng.integers(-(1 << 62), 1 << 62, 2 * n + 60_000, dtype=np.int64)
    keys = np.unique(keys)
    rng.shuffle(keys)
    added, fresh = keys[:n], keys[n:n + 60_000]
    f.add(added, np.ones(n, dtype=np.int64))
    assert (f.estimate(added) >= 1).all()  # never a false negative
    fpr = float(np.mean(f.estimate(fresh) >= 1))
    assert 0.5 * p < fpr < 2 * p, fpr
    assert abs(f.approx_distinct() - n) < 0.05 * n


def test_bloom_memory_is_fixed_and_uses_the_narrowest_counters():
    m, k = bloom_size(100_000, 0.01)
    assert k == 7 and 9.5 < m / 100_000 < 9.7
    assert CountingBloomFilter(m, k, 0, max_count=3).counters.dtype == np.uint8
    assert CountingBloomFilter(m, k, 0, max_count=1000).counters.dtype == np.uint16
    ev = _ev("bloom", min_freq=5, expected_keys=50_000)
    before = ev.stats().bytes
    ev.apply_gradients(np.arange(30_000, dtype=np.int64), np.ones((30_000, 4), np.float32), step=1)
    assert ev.stats().bytes == before  # nothing admitted, nothing grown


def test_bloom_counts_saturate_instead_of_wrapping():
    f = CountingBloomFilter(1000, 3, seed=1, max_count=2)
    f.add(_k(7), _k(300))
    f.add(_k(7), _k(300))
    assert f.estimate(_k(7)).tolist() == [255]


def test_bloom_waiting_is_an_estimate():
    ev = _ev("bloom", min_freq=2, expected_keys=10_000)
    ev.apply_gradients(np.arange(3000, dtype=np.int64), np.ones((3000, 4), np.float32), step=1)
    ev.apply_gradients(np.arange(1000, dtype=np.int64), np.ones((1000, 4), np.float32), step=2)
    st = ev.stats()
    assert not st.waiting_exact
    assert st.admitted_total >= 1000 and st.rows == st.admitted_total
    assert abs(st.waiting - 2000) < 200


def test_no_filter_admits_everything():
    ev = EmbeddingVariable(EVConfig(dim=2, initializer=InitializerConfig(kind="zeros")))
    ev.apply_gradients(_k(1, 2), np.ones((2, 2), np.float32), step=1)
    st = ev.stats()
    assert st.rows == 2 and st.waiting == 0 and st.admitted_total == 2
