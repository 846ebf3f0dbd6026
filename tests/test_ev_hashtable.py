"""HashTable against a Python dict oracle: insert, find, delete, row reuse, growth."""
from __future__ import annotations

import numpy as np
import pytest
from test_ev_kernels import ref_home

from psrec.ev.hashtable import HashTable


def _check(table: HashTable, oracle: dict[int, int], probe: np.ndarray) -> None:
    got = table.find(probe)
    want = np.array([oracle.get(k, -1) for k in probe.tolist()], dtype=np.int64)
    np.testing.assert_array_equal(got, want)
    assert len(table) == len(oracle)
    keys, rows = table.items()
    assert dict(zip(keys.tolist(), rows.tolist())) == oracle


def test_random_ops_match_dict_oracle():
    rng = np.random.default_rng(0)
    table = HashTable(capacity=16)
    oracle: dict[int, int] = {}
    # Keys span the whole int64 range, including negatives, 0 and the extremes.
    universe = np.concatenate([rng.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, 3000,
                                            dtype=np.int64),
                               np.array([0, -1, 1, np.iinfo(np.int64).min, np.iinfo(np.int64).max])])
    universe = np.unique(universe)
    for step in range(40):
        batch = rng.choice(universe, size=200)
        present = table.find(batch) >= 0
        new = np.unique(batch[~present])
        rows = table.insert(new)
        assert len(set(rows.tolist())) == len(rows)
        assert not set(rows.tolist()) & set(oracle.values()), "a live row was handed out twice"
        oracle.update(zip(new.tolist(), rows.tolist()))
        if step % 3 == 2:
            dele = rng.choice(universe, size=150)
            freed = table.delete(dele)
            expect = {oracle.pop(k) for k in set(dele.tolist()) if k in oracle}
            assert set(freed.tolist()) == expect
        _check(table, oracle, rng.choice(universe, size=500))
    assert table.high_water <= len(universe)


def test_freed_rows_are_reused_first():
    table = HashTable()
    rows = table.insert(np.arange(100, dtype=np.int64))
    freed = table.delete(np.arange(0, 100, 2, dtype=np.int64))
    np.testing.assert_array_equal(np.sort(freed), np.sort(rows[::2]))
    new = table.insert(np.arange(1000, 1050, dtype=np.int64))
    assert set(new.tolist()) == set(freed.tolist())
    assert table.high_water == 100


def test_growth_keeps_all_keys_and_load_bounded():
    table = HashTable(capacity=16)
    i = np.arange(50_000, dtype=np.int64)
    keys = ((i % 500) << 54) | (i // 500)  # field-tagged keys with small dense ids
    for chunk in np.array_split(keys, 7):
        table.insert(chunk)
    assert len(table) == len(keys)
    assert table.capacity >= 2 * len(keys)
    rows = table.find(keys)
    assert (rows >= 0).all() and len(np.unique(rows)) == len(keys)


def test_tombstones_do_not_accumulate_forever():
    table = HashTable(capacity=64)
    rng = np.random.default_rng(1)
    for _ in range(200):
        k = rng.integers(0, 1 << 62, 20, dtype=np.int64)
        k = np.unique(k)
        table.insert(k[table.find(k) < 0])
        table.delete(k)
    assert len(table) == 0
    assert table.capacity <= 256  # churn rebuilds in place instead of doubling
    assert table.high_water <= 40  # rows recycled


def test_delete_absent_and_duplicates():
    table = HashTable()
    table.insert(np.array([5, 6], dtype=np.int64))
    freed = table.delete(np.array([5, 5, 9], dtype=np.int64))
    assert len(freed) == 1
    assert table.find(np.array([5, 6], dtype=np.int64)).tolist()[0] == -1
    assert len(table) == 1


def test_reinsert_after_delete_finds_new_row():
    table = HashTable(capacity=16)
    keys = np.arange(6, dtype=np.int64)
    table.insert(keys)
    table.delete(keys[:3])
    rows = table.insert(keys[:3])
    np.testing.assert_array_equal(table.find(keys[:3]), rows)
    table.delete(keys[1:2])
    assert table.find(keys).tolist()[1] == -1


@pytest.mark.parametrize("cap", [16, 1 << 12])
def test_empty_batches(cap):
    table = HashTable(capacity=cap)
    empty = np.empty(0, dtype=np.int64)
    assert table.find(empty).shape == (0,)
    assert table.insert(empty).shape == (0,)
    assert table.delete(empty).shape == (0,)


def test_heavy_churn_in_a_small_table_matches_oracle():
    # Few slots, many collisions, tombstones and reinsertions of the same keys.
    rng = np.random.default_rng(7)
    table = HashTable(capacity=16)
    oracle: dict[int, int] = {}
    universe = np.arange(-20, 20, dtype=np.int64) * 1_000_003
    for _ in range(300):
        batch = np.unique(rng.choice(universe, size=rng.integers(1, 12)))
        new = batch[table.find(batch) < 0]
        oracle.update(zip(new.tolist(), table.insert(new).tolist()))
        dele = rng.choice(universe, size=rng.integers(0, 10))
        freed = table.delete(dele)
        assert set(freed.tolist()) == {oracle.pop(k) for k in set(dele.tolist()) if k in oracle}
        _check(table, oracle, universe)
    assert table.high_water <= len(universe)


def test_long_probe_sequences_are_found():
    # A nearly full small table forces probes across many buckets, wrapping past the end.
    table = HashTable(capacity=1 << 12, max_load=0.9)
    keys = np.random.default_rng(3).integers(-(1 << 62), 1 << 62, 3600, dtype=np.int64)
    keys = np.unique(keys)
    rows = table.insert(keys)
    assert table.capacity == 1 << 12
    np.testing.assert_array_equal(table.find(keys), rows)
    table.delete(keys[::2])
    np.testing.assert_array_equal(table.find(keys[1::2]), rows[1::2])
    assert (table.find(keys[::2]) == -1).all()


def _same_home(table: HashTable, n: int) -> np.ndarray:
    """n distinct keys that share one home bucket in `table`."""
    cand = np.arange(1, 1 << 14, dtype=np.int64)
    home = ref_home(cand, table.capacity // 2)
    return cand[home == home[0]][:n]


def test_key_in_slot_zero_with_its_own_tombstone_behind_it():
    # X in slot 0, K in slot 1; delete K then X; K comes back into slot 0, its old tombstone in
    # slot 1: both slots of the home bucket carry K's key, and slot 0 is the live one.
    table = HashTable(capacity=64)
    x, k = _same_home(table, 2)
    table.insert(np.array([x, k]))
    table.delete(np.array([k]))
    table.delete(np.array([x]))
    row = table.insert(np.array([k]))
    np.testing.assert_array_equal(table.find(np.array([k, x])), [row[0], -1])
    np.testing.assert_array_equal(table.delete(np.array([k])), row)
    assert (table.find(np.array([k, x])) == -1).all()


def test_key_zero_next_to_empty_slots():
    # An EMPTY slot's key field is 0, so key 0 "matches" empty slots; only a live slot counts.
    table = HashTable(capacity=64)
    assert table.find(np.array([0], dtype=np.int64)).tolist() == [-1]
    row = table.insert(np.array([0], dtype=np.int64))
    assert table.find(np.array([0, 0], dtype=np.int64)).tolist() == [row[0], row[0]]
    table.delete(np.array([0], dtype=np.int64))
    assert table.find(np.array([0], dtype=np.int64)).tolist() == [-1]


def test_generation_changes_exactly_when_rows_may_change():
    table = HashTable(capacity=16)
    g = table.generation
    table.find(np.arange(5, dtype=np.int64))
    assert table.generation == g
    table.insert(np.arange(100, dtype=np.int64))  # grows: a rebuild, rows kept
    assert table.generation > g
    g = table.generation
    table.delete(np.array([1000], dtype=np.int64))  # absent: nothing changes
    assert table.generation == g
    table.delete(np.array([3], dtype=np.int64))
    assert table.generation > g
    g = table.generation
    table.clear()
    assert table.generation > g
