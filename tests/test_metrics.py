import itertools

import numpy as np
import pytest

from psrec.metrics import auc, logloss


def brute_force_auc(y, s):
    pos = [v for v, lab in zip(s, y) if lab == 1]
    neg = [v for v, lab in zip(s, y) if lab == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_pairwise_count_with_ties(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 300)
    s = rng.integers(0, 8, 300).astype(float)  # few distinct values: many ties
    assert auc(y, s) == pytest.approx(brute_force_auc(y, s), abs=1e-12)


def test_auc_edges():
    assert auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert auc([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.4]) == 0.0
    assert auc([0, 1], [0.5, 0.5]) == 0.5
    assert np.isnan(auc([1, 1], [0.1, 0.2]))
    with pytest.raises(ValueError):
        auc([0, 1], [0.1])


def test_logloss_known_value():
    assert logloss([1, 0], [0.5, 0.5]) == pytest.approx(np.log(2))
    assert logloss([1], [1.0]) == pytest.approx(-np.log(1 - 1e-7))
