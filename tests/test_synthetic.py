import numpy as np
import pytest

from psrec.data import concat_batches, key_field
from psrec.data.synthetic import SyntheticConfig, SyntheticSource
from psrec.metrics import auc


def small(**kw) -> SyntheticSource:
    return SyntheticSource(SyntheticConfig(**{"num_fields": 8, "num_dense": 3, **kw}))


def test_same_range_twice_is_identical():
    a, b = small().read(100, 900), small().read(100, 900)
    assert np.array_equal(a.keys, b.keys)
    assert np.array_equal(a.dense, b.dense)
    assert np.array_equal(a.labels, b.labels)


def test_split_range_concatenates_to_whole():
    src = small()
    whole = src.read(0, 20_000)  # crosses the generator's internal chunking
    parts = concat_batches([src.read(0, 7), src.read(7, 9_000), src.read(9_000, 20_000)])
    assert np.array_equal(whole.keys, parts.keys)
    assert np.array_equal(whole.labels, parts.labels)
    assert np.array_equal(whole.dense, parts.dense)


def test_row_depends_only_on_seed_and_index():
    src = small()
    far = src.read(10**12, 10**12 + 5)  # no need to generate what comes before
    assert np.array_equal(src.read(10**12 + 2, 10**12 + 5).keys, far.keys[2:])
    other = small(seed=1).read(0, 100)
    assert not np.array_equal(other.keys, src.read(0, 100).keys)


def test_keys_carry_field_and_respect_cardinality():
    cards = (3, 50, 10**9, 7, 100, 1000, 5, 2)
    src = small(cardinalities=cards)
    b = src.read(0, 50_000)
    assert np.array_equal(key_field(b.keys), np.broadcast_to(np.arange(8), b.keys.shape))
    for f, c in enumerate(cards):
        assert len(np.unique(b.keys[:, f])) <= c
    assert len(np.unique(b.keys[:, 2])) > 1000  # a huge field really has a long tail


def test_zipf_head_is_popular():
    src = small(cardinalities=(1000,) * 8, zipf=(1.2,) * 8)
    col = src.read(0, 50_000).keys[:, 0]
    _, counts = np.unique(col, return_counts=True)
    top = np.sort(counts)[::-1]
    assert top[0] > 20 * np.median(counts)


def test_labels_follow_planted_logit():
    src = small()
    b = src.read(0, 50_000)
    z = src.planted_logits(0, 50_000)
    assert 0.15 < b.labels.mean() < 0.4
    assert auc(b.labels, z) > 0.7
    # the planted logit is the best score: a noisy copy of it does worse
    rng = np.random.default_rng(0)
    assert auc(b.labels, z + rng.normal(0, 2, len(z))) < auc(b.labels, z)


def test_drift_adds_new_ids_and_keeps_most():
    d0 = small(cardinalities=(100,) * 8).read(0, 20_000).keys
    d5 = small(cardinalities=(100,) * 8, day=5, drift=0.1).read(0, 20_000).keys
    same = np.mean(d0 == d5)
    assert 0.4 < same < 0.95  # most slots keep their entity, some were taken over
    assert len(np.setdiff1d(d5, d0)) > 0


def test_bad_config_names_the_field():
    with pytest.raises(ValueError, match="cardinalities"):
        SyntheticConfig(num_fields=3, cardinalities=(1, 2))
    with pytest.raises(ValueError, match="drift"):
        SyntheticConfig(drift=2.0)
    with pytest.raises(IndexError):
        small(num_rows=10).read(5, 11)
