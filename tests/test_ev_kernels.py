"""The compiled EV kernels (psrec.ev._kernels) against plain-Python / numpy references.

The hash-table references walk the documented layout one slot at a time (`ref_locate`); the
tables they run on are built by the real HashTable with tombstones, key 0, duplicates,
absent keys and probe sequences that wrap around a nearly full table.
"""
from __future__ import annotations

import numpy as np
import pytest

from psrec.ev import _kernels
from psrec.ev._mix import GOLDEN
from psrec.ev.config import OptimizerConfig
from psrec.ev.hashtable import HashTable
from psrec.ev.optim import make_optimizer

EMPTY, TOMB = -1, -2


def ref_home(keys: np.ndarray, nb: int) -> np.ndarray:
    """Home bucket of each int64 key in a table of `nb` buckets: the top log2(nb) bits of
    key * GOLDEN mod 2^64 (Fibonacci hashing)."""
    with np.errstate(over="ignore"):
        h = keys.astype(np.int64).view(np.uint64) * GOLDEN
    return (h >> np.uint64(64 - (nb.bit_length() - 1))).astype(np.int64)


def ref_locate(buckets: np.ndarray, key: int) -> int:
    """Slot (2 * bucket + j) of `key`'s live entry or -1, one slot at a time."""
    nb = len(buckets)
    b = int(ref_home(np.array([key]), nb)[0])
    for _ in range(nb):
        for j in range(2):
            row = buckets[b, 2 * j + 1]
            if row == EMPTY:
                return -1
            if buckets[b, 2 * j] == key:
                return 2 * b + j if row >= 0 else -1
        b = (b + 1) % nb
    return -1


def ref_find(buckets: np.ndarray, keys: np.ndarray) -> np.ndarray:
    out = []
    for k in keys.tolist():
        s = ref_locate(buckets, k)
        out.append(-1 if s < 0 else int(buckets[s // 2, 2 * (s % 2) + 1]))
    return np.array(out, dtype=np.int64)


def ref_place(buckets: np.ndarray, keys: np.ndarray, rows: np.ndarray) -> int:
    """Sequential first-free-slot insert; returns tombstones reused."""
    nb, reused = len(buckets), 0
    for k, r in zip(keys.tolist(), rows.tolist()):
        b = int(ref_home(np.array([k]), nb)[0])
        while True:
            j = next((j for j in range(2) if buckets[b, 2 * j + 1] < 0), None)
            if j is not None:
                reused += buckets[b, 2 * j + 1] == TOMB
                buckets[b, 2 * j], buckets[b, 2 * j + 1] = k, r
                break
            b = (b + 1) % nb
    return reused


def _churned_table(seed: int) -> tuple[HashTable, dict, np.ndarray]:
    """A 1K-slot table at ~80% load (live + tombstones, below its 0.9 rebuild point) after
    inserts and deletes, with key 0 and its neighbours in the key universe; returns it, a
    dict oracle and the universe. Runs of dozens of full buckets make long probe chains."""
    rng = np.random.default_rng(seed)
    table = HashTable(capacity=1 << 10, max_load=0.9)
    universe = np.unique(np.concatenate([rng.integers(-(1 << 62), 1 << 62, 900, dtype=np.int64),
                                         np.arange(-3, 4, dtype=np.int64)]))
    oracle: dict[int, int] = {}
    for _ in range(40):
        batch = np.unique(rng.choice(universe, 80))
        new = batch[table.find(batch) < 0]
        oracle.update(zip(new.tolist(), table.insert(new).tolist()))
        gone = rng.choice(universe, 25)
        for k in set(gone.tolist()):
            oracle.pop(k, None)
        table.delete(gone)
    assert table.capacity == 1 << 10, "rebuilt: the test would not probe a nearly full table"
    return table, oracle, universe


def _longest_full_run(buckets: np.ndarray) -> int:
    """Longest run of buckets without an EMPTY slot (wrapping): the longest probe chain."""
    full = np.concatenate([buckets[:, 3] != EMPTY] * 2)  # slot 1 not EMPTY: a search goes on past it
    run = best = 0
    for f in full.tolist():
        run = run + 1 if f else 0
        best = max(best, run)
    return min(best, len(buckets))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_find_matches_slot_walk_and_dict(seed):
    table, oracle, universe = _churned_table(seed)
    assert table._tombs > 100 and _longest_full_run(table._b) >= 16
    probe = np.concatenate([universe, universe[::-7], np.array([0, 0, 5, 1 << 61], dtype=np.int64)])
    rows = np.empty(len(probe), dtype=np.int64)
    missing = _kernels.find(table._b, table._shift, probe, rows)
    np.testing.assert_array_equal(rows, ref_find(table._b, probe))
    np.testing.assert_array_equal(rows, [oracle.get(k, -1) for k in probe.tolist()])
    assert missing == np.count_nonzero(rows < 0)


def test_find_gather_is_find_plus_take():
    table, oracle, universe = _churned_table(3)
    values = np.random.default_rng(0).standard_normal((table.high_water, 5)).astype(np.float32)
    keys = np.random.default_rng(1).choice(universe, 400)
    rows, out, missing = table.find_gather(keys, values)
    np.testing.assert_array_equal(rows, table.find(keys))
    want = np.where(rows[:, None] >= 0, values[np.maximum(rows, 0)], 0)
    np.testing.assert_array_equal(out, want)
    assert missing == np.count_nonzero(rows < 0) > 0


def test_probe_chain_through_a_table_without_empty_slots_ends():
    # 4 buckets, every slot live or tombstoned: absent keys must still come back -1.
    b = np.empty((4, 4), dtype=np.int64)
    b[:, 0::2] = np.arange(8).reshape(4, 2) + 100
    b[:, 1::2] = np.arange(8).reshape(4, 2)
    b[1, 3] = TOMB
    keys = np.array([100, 103, 107, 0, 999], dtype=np.int64)
    rows = np.empty(5, dtype=np.int64)
    _kernels.find(b, np.uint64(62), keys, rows)
    np.testing.assert_array_equal(rows, [0, -1, 7, -1, -1])
    np.testing.assert_array_equal(rows, ref_find(b, keys))


def test_place_matches_sequential_reference_and_reuses_tombstones():
    table, _, universe = _churned_table(4)
    b = table._b.copy()
    new = np.setdiff1d(np.arange(-40, 40, dtype=np.int64), universe)[:30]  # never inserted
    if table.find(np.zeros(1, np.int64))[0] < 0:
        new = np.append(new, np.int64(0))  # key 0 against EMPTY slots' zeroed key column
    rows = np.arange(10_000, 10_000 + len(new), dtype=np.int64)
    want = b.copy()
    want_reused = ref_place(want, new, rows)
    got_reused = _kernels.place(b, table._shift, new, rows)
    np.testing.assert_array_equal(b, want)
    assert got_reused == want_reused
    found = np.empty(len(new), dtype=np.int64)
    _kernels.find(b, table._shift, new, found)
    np.testing.assert_array_equal(found, rows)


def test_place_into_a_full_table_reports_instead_of_spinning():
    b = np.zeros((2, 4), dtype=np.int64)  # both buckets full: keys 0, rows 0..3
    b[:, 1::2] = np.arange(4).reshape(2, 2)
    assert _kernels.place(b, np.uint64(63), np.array([9], dtype=np.int64), np.array([4], dtype=np.int64)) == -1


def test_delete_tombstones_live_entries_once():
    table, oracle, universe = _churned_table(5)
    b = table._b.copy()
    live = np.array(sorted(oracle), dtype=np.int64)
    keys = np.concatenate([live[:20], live[:5], universe[:10]])  # repeats and maybe-absent keys
    freed = np.empty(len(keys), dtype=np.int64)
    m = _kernels.delete(b, table._shift, keys, freed)
    expect = []
    for k in dict.fromkeys(keys.tolist()):  # first occurrences, batch order
        if k in oracle:
            expect.append(oracle[k])
    np.testing.assert_array_equal(freed[:m], expect)
    rows = np.empty(len(keys), dtype=np.int64)
    _kernels.find(b, table._shift, keys, rows)
    assert (rows == -1).all()
    rest = np.setdiff1d(live, keys)
    rest_rows = np.empty(len(rest), dtype=np.int64)
    _kernels.find(b, table._shift, rest, rest_rows)
    np.testing.assert_array_equal(rest_rows, [oracle[k] for k in rest.tolist()])
    assert np.count_nonzero(b[:, 1::2] == TOMB) == np.count_nonzero(table._b[:, 1::2] == TOMB) + m


def test_merge_duplicates_matches_add_at():
    rng = np.random.default_rng(4)
    rows = rng.integers(0, 50, 2000).astype(np.int64) * 1_000_003  # large, sparse row ids
    grads = rng.standard_normal((2000, 8)).astype(np.float32)
    counts = rng.integers(0, 5, 2000).astype(np.int64)
    r, g, c = _kernels.merge_duplicates(rows, grads, counts)
    _, first = np.unique(rows, return_index=True)
    np.testing.assert_array_equal(r, rows[np.sort(first)])  # order of first occurrence
    inv = np.searchsorted(r[np.argsort(r)], rows)
    want = np.zeros((len(r), 8), np.float32)
    np.add.at(want, np.argsort(r)[inv], grads)
    np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(c, np.bincount(np.argsort(r)[inv], weights=counts).astype(np.int64))
    # Front-to-back sums: bit-exact against a sequential float32 loop, and deterministic.
    seq = {}
    for k, row in zip(rows.tolist(), grads):
        seq[k] = seq[k] + row if k in seq else row.copy()
    assert g.tobytes() == np.stack([seq[k] for k in r.tolist()]).tobytes()
    one = np.array([7], dtype=np.int64)
    r1, g1, c1 = _kernels.merge_duplicates(one, grads[:1], counts[:1])
    assert r1.tolist() == [7] and c1.tolist() == counts[:1].tolist()


def test_touch_gather_scatter():
    rng = np.random.default_rng(6)
    meta = rng.integers(0, 9, (30, 2)).astype(np.int64)
    rows = rng.permutation(30)[:12].astype(np.int64)
    counts = rng.integers(0, 4, 12).astype(np.int64)
    want = meta.copy()
    want[rows, 0] += counts
    want[rows, 1] = 17
    _kernels.touch(meta, rows, counts, 17)
    np.testing.assert_array_equal(meta, want)
    a = rng.standard_normal((30, 3)).astype(np.float32)
    out = np.empty((12, 3), dtype=np.float32)
    _kernels.gather_rows(a, rows, out)
    np.testing.assert_array_equal(out, a[rows])
    block = rng.standard_normal((12, 3)).astype(np.float32)
    b = a.copy()
    b[rows] = block
    _kernels.scatter_rows(a, rows, block)
    np.testing.assert_array_equal(a, b)


def _state(seed: int, r: int = 400, d: int = 7, u: int = 300):
    rng = np.random.default_rng(seed)
    values = rng.standard_normal((r, d)).astype(np.float32)
    accum = rng.uniform(0.01, 2.0, (r, d)).astype(np.float32)
    meta = rng.integers(0, 9, (r, 2)).astype(np.int64)
    rows = rng.permutation(r)[:u].astype(np.int64)
    grads = rng.standard_normal((u, d)).astype(np.float32)
    counts = rng.integers(1, 4, u).astype(np.int64)
    return values, accum, meta, rows, grads, counts


def _touched_meta(meta, rows, counts, step):
    want = meta.copy()
    want[rows, 0] += counts
    want[rows, 1] = step
    return want


def test_apply_sgd_matches_block_update():
    values, _, meta, rows, grads, counts = _state(7)
    opt = make_optimizer(OptimizerConfig(name="sgd", lr=0.3), values.shape[1])
    want_v = values.copy()
    block = want_v[rows]
    opt.update(block, grads, {})
    want_v[rows] = block
    want_m = _touched_meta(meta, rows, counts, 5)
    _kernels.apply_sgd(values, meta, rows, grads, counts, 5, 0.3)
    np.testing.assert_array_equal(values, want_v)
    np.testing.assert_array_equal(meta, want_m)


def test_apply_adagrad_matches_torch_block_update():
    values, accum, meta, rows, grads, counts = _state(8)
    opt = make_optimizer(OptimizerConfig(name="adagrad", lr=0.2, eps=1e-7), values.shape[1])
    want_v, want_a = values.copy(), accum.copy()
    w, a = want_v[rows], want_a[rows]
    opt.update(w, grads, {"accum": a})  # torch's fused Adagrad kernel
    want_v[rows], want_a[rows] = w, a
    want_m = _touched_meta(meta, rows, counts, 9)
    _kernels.apply_adagrad(values, accum, meta, rows, grads, counts, 9, 0.2, 1e-7)
    np.testing.assert_array_equal(accum, want_a)  # bit-exact: same float32 operations as torch
    np.testing.assert_array_equal(values, want_v)
    np.testing.assert_array_equal(meta, want_m)


@pytest.mark.parametrize("name", ["adam", "adam_async", "ftrl", "gftrl"])
def test_default_apply_rows_is_gather_update_scatter(name):
    values, _, meta, rows, grads, counts = _state(9)
    opt = make_optimizer(OptimizerConfig(name=name, lr=0.1, l1=0.01), values.shape[1])
    rng = np.random.default_rng(1)
    slots = {s.name: (rng.uniform(0.1, 1.0, s.shape(len(values), values.shape[1])).astype(s.dtype)
                      if s.dtype == "float32" else np.full(len(values), 3, dtype=s.dtype))
             for s in opt.slots()}
    want_v, want_s = values.copy(), {k: a.copy() for k, a in slots.items()}
    w, blocks = want_v[rows], {k: a[rows] for k, a in want_s.items()}
    opt.update(w, grads, blocks, 4)
    want_v[rows] = w
    for k in want_s:
        want_s[k][rows] = blocks[k]
    want_m = _touched_meta(meta, rows, counts, 4)
    opt.apply_rows(values, slots, meta, rows, grads, counts, 4)
    np.testing.assert_array_equal(values, want_v)
    for k in slots:
        np.testing.assert_array_equal(slots[k], want_s[k])
    np.testing.assert_array_equal(meta, want_m)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, None])
def test_any_nonfinite_matches_isfinite(bad):
    g = np.full((257, 16), 3e38, dtype=np.float32)  # finite, yet a float32 sum overflows to inf
    g[::2] *= -1
    if bad is not None:
        g[200, 11] = bad
    assert bool(_kernels.any_nonfinite(g.reshape(-1).view(np.int32))) == (not np.isfinite(g).all())


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, None])
def test_find_check_is_find_plus_batch_tests(bad):
    table, _, universe = _churned_table(5)
    keys = np.concatenate([np.random.default_rng(2).choice(universe, 300), np.array([0, 5, 1 << 61], np.int64)])
    g = np.full((len(keys), 3), 3e38, dtype=np.float32)
    if bad is not None:
        g[-1, 2] = bad  # the last key's row: the test must run to the end of the batch
    rows, missing, nonfinite, ascending = table.find_check(keys, g)
    np.testing.assert_array_equal(rows, table.find(keys))
    assert missing == np.count_nonzero(rows < 0) > 0
    assert nonfinite == (bad is not None) and not ascending
    assert _kernels.check_rows(keys, rows, g.view(np.int32)) == (missing, nonfinite, False)
    up = np.unique(keys)
    g_up = g[:len(up)]
    assert table.find_check(up, g_up)[3] and _kernels.check_rows(up, table.find(up), g_up.view(np.int32))[2]
    up[-1] = up[-2]  # equal neighbours are not strictly ascending
    assert not table.find_check(up, g_up)[3]
    assert table.find_check(keys[:0], g[:0])[1:] == (0, False, True)
    assert table.find_check(keys[:1], g[:1])[3]


def test_table_arrays_are_cache_line_aligned_after_growth_and_restore():
    from psrec.ev import EVConfig
    from psrec.ev.variable import EmbeddingVariable

    ev = EmbeddingVariable(EVConfig(dim=16, optimizer=OptimizerConfig(name="adam")), initial_rows=16)
    keys = np.arange(3000, dtype=np.int64) * 7919
    ev.apply_gradients(keys, np.ones((3000, 16), np.float32), step=1)  # grows rows and buckets
    restored = EmbeddingVariable(ev.config)
    restored.restore([ev.snapshot()])
    for v in (ev, restored):
        arrays = [v._values, v._meta, v._table._b, *v._slots.values()]
        assert all(a.ctypes.data % 64 == 0 and a.flags.c_contiguous for a in arrays)
    np.testing.assert_array_equal(restored.lookup(keys), ev.lookup(keys))


def test_apply_with_huge_finite_gradients_is_not_rejected_and_nan_rejects_everything():
    from psrec.ev import EVConfig
    from psrec.ev.variable import EmbeddingVariable

    ev = EmbeddingVariable(EVConfig(dim=4, optimizer=OptimizerConfig(name="sgd", lr=1e-40)), name="t")
    keys = np.arange(1, 9, dtype=np.int64)
    ev.apply_gradients(keys, np.full((8, 4), 3e38, np.float32), step=1)  # sums past float32 max
    before = ev.lookup(keys, train=False).copy()
    g = np.zeros((8, 4), np.float32)
    g[5, 2] = np.nan
    with pytest.raises(ValueError, match="non-finite gradient .* for 1 of 8 keys"):
        ev.apply_gradients(keys, g, step=2)
    np.testing.assert_array_equal(ev.lookup(keys, train=False), before)
    assert (ev.metadata(keys)[1] == 1).all()  # versions untouched by the rejected update
