"""Fair sharing of one link by equal transfers: a hand-worked golden and a brute-force oracle."""
import random

import pytest

from psrec.sim.fair_share import arrival_offsets, fair_share_durations


def test_fair_share_golden_hand_worked():
    # size 3 each, starts 0, 1, 2. [0, 1]: a alone, 1 done. [1, 2]: a and b at 1/2: a 1.5 done,
    # b 0.5. From 2 three at 1/3: a's last 1.5 takes 4.5, ends at 6.5; b has 1.0 left, c 1.5;
    # two at 1/2: b ends 2 later, at 8.5; c has 0.5 left alone: ends at 9.0.
    assert fair_share_durations(3.0, [0.0, 1.0, 2.0]) == pytest.approx([6.5, 7.5, 7.0])
    # given out of order, answered in the order given
    assert fair_share_durations(3.0, [2.0, 0.0, 1.0]) == pytest.approx([7.0, 6.5, 7.5])


def _brute(size, starts, dt=1e-4):
    left = {k: size for k in range(len(starts))}
    end, t = {}, 0.0
    while left:
        active = [k for k in left if starts[k] <= t + 1e-12]
        for k in active:
            left[k] -= dt / len(active)
            if left[k] <= 1e-12:
                end[k] = t + dt
                del left[k]
        t += dt
    return [end[k] - starts[k] for k in range(len(starts))]


def test_fair_share_matches_a_time_stepped_oracle():
    rng = random.Random(3)
    for _ in range(4):
        starts = [rng.uniform(0, 0.2) for _ in range(rng.randint(1, 5))]
        assert fair_share_durations(0.05, starts) == pytest.approx(_brute(0.05, starts), abs=1e-3)


def test_fair_share_keeps_the_link_busy_and_limits():
    starts = arrival_offsets(64, 0.001)
    d = fair_share_durations(0.01, starts)
    # offsets well under one transfer: the link never idles, the last ends after 64 transfers
    assert max(s + x for s, x in zip(starts, d)) == pytest.approx(64 * 0.01)
    assert all(0.01 <= x <= 64 * 0.01 + 1e-12 for x in d)
    assert fair_share_durations(0.01, []) == []
    with pytest.raises(ValueError, match="size"):
        fair_share_durations(-1.0, [0.0])


def test_arrival_offsets_are_symmetric_order_statistics():
    off = arrival_offsets(5, 2.0)
    assert off[0] == 0.0 and off == sorted(off)
    assert off[2] == pytest.approx(off[4] / 2)  # the median worker sits halfway
    assert arrival_offsets(1, 5.0) == [0.0]
    with pytest.raises(ValueError):
        arrival_offsets(0, 1.0)
