"""psrec.sim.keys: distinct keys per batch and load per shard, golden numbers computed by hand
on tiny key laws (each expected value written out as the arithmetic that produces it)."""
import math

import numpy as np
import pytest

from psrec.sim import key_stats, shard_load, touched_shards, zipf_normalizer
from psrec.sim.keys import KeyStats


def test_key_stats_tiny_zipf():
    # n = 2, s = 1: H = 1 + 1/2 = 3/2, p = (2/3, 1/3). Two draws:
    # q1 = 1 - (1/3)^2 = 8/9, q2 = 1 - (2/3)^2 = 5/9; D = 13/9; Q2 = 64/81 + 25/81 = 89/81
    st = key_stats(2, 1.0, 2)
    assert st.distinct == pytest.approx(13 / 9)
    assert st.sum_q2 == pytest.approx(89 / 81)
    assert st.q_max == pytest.approx(8 / 9)


def test_key_stats_uniform():
    # n = 4, s = 0: p = 1/4, two draws: q = 1 - (3/4)^2 = 7/16; D = 4 * 7/16 = 1.75
    st = key_stats(4, 0.0, 2)
    assert st.distinct == pytest.approx(1.75)
    assert st.sum_q2 == pytest.approx(4 * (7 / 16) ** 2)
    assert key_stats(1, 1.1, 1000).distinct == pytest.approx(1.0)  # one row: always touched
    assert key_stats(10, 1.1, 0).distinct == 0.0


@pytest.mark.parametrize("n,s,m", [(100_000, 1.1, 51_200), (300_000, 0.0, 10_000), (200_000, 1.3, 1e5)])
def test_key_stats_tail_integral_matches_exact_sum(n, s, m):
    # Above 4096 ranks the sum is an integral; check it against the sum itself.
    p = np.arange(1, n + 1, dtype=np.float64) ** -s
    p /= p.sum()
    q = -np.expm1(m * np.log1p(-p))
    st = key_stats(n, s, m)
    assert st.distinct == pytest.approx(q.sum(), rel=1e-6)
    assert st.sum_q2 == pytest.approx((q * q).sum(), rel=1e-6)


def test_zipf_normalizer():
    assert zipf_normalizer(3, 1.0) == pytest.approx(1 + 1 / 2 + 1 / 3)
    exact = float(np.sum(np.arange(1, 1_000_001, dtype=np.float64) ** -1.1))
    assert zipf_normalizer(1_000_000, 1.1) == pytest.approx(exact, rel=1e-10)


def test_touched_shards():
    assert touched_shards(2, 2) == pytest.approx(2 * (1 - (1 / 2) ** 2))  # 1.5
    assert touched_shards(5, 1) == 1.0
    assert touched_shards(1e6, 8) == pytest.approx(8.0)


def test_shard_load_hash_and_balanced():
    st = KeyStats(draws=20, distinct=10, sum_q2=4, q_max=1)
    # W = 2 workers, M = 2 shards: mean = W D / M = 2*10/2 = 10
    # hash: var = W (D - Q2)/M + W^2 Q2 (M-1)/M^2 = 2*6/2 + 4*4*1/4 = 6 + 4 = 10
    h = shard_load([(st, 1.0)], num_shards=2, workers=2, partitioner="hash")
    assert h.mean == pytest.approx(10)
    assert h.std == pytest.approx(math.sqrt(10))
    assert h.max == pytest.approx(10 + math.sqrt(10) * math.sqrt(2 * math.log(2)))
    assert h.imbalance == pytest.approx(h.max / 10)
    # balanced: the placement term goes, var = 6
    b = shard_load([(st, 1.0)], num_shards=2, workers=2, partitioner="balanced")
    assert b.max == pytest.approx(10 + math.sqrt(6) * math.sqrt(2 * math.log(2)))
    assert b.imbalance < h.imbalance
    # weights (bytes per row) scale mean by w and std by w
    h8 = shard_load([(st, 8.0)], 2, 2)
    assert (h8.mean, h8.std) == pytest.approx((80, 8 * math.sqrt(10)))
    assert shard_load([(st, 1.0)], 1, 2).imbalance == 1.0  # one shard: nothing to balance
    with pytest.raises(ValueError, match="partitioner"):
        shard_load([(st, 1.0)], 2, 2, partitioner="range")
