"""DeepRec EmbeddingVariable semantics: freq, version, read-only lookups, initial rows,
duplicate summing and input validation (state untouched on error)."""
from __future__ import annotations

import numpy as np
import pytest

from psrec.embedding.local import LocalStore
from psrec.ev import EmbeddingVariable, EVConfig, FilterConfig, InitializerConfig, OptimizerConfig, initial_rows


def _k(*xs) -> np.ndarray:
    return np.array(xs, dtype=np.int64)


def _same_state(a, b) -> None:
    assert a.step == b.step
    for name in ("keys", "values", "freqs", "versions"):
        assert getattr(a, name).tobytes() == getattr(b, name).tobytes(), name
    assert sorted(a.slots) == sorted(b.slots)
    for name in a.slots:
        assert a.slots[name].tobytes() == b.slots[name].tobytes(), name
    assert sorted(a.filter_arrays) == sorted(b.filter_arrays)
    for name in a.filter_arrays:
        assert a.filter_arrays[name].tobytes() == b.filter_arrays[name].tobytes(), name


def test_freq_counts_occurrences_with_multiplicity():
    ev = EmbeddingVariable(EVConfig(dim=4), name="t")
    ids = _k(1, 1, 1, 2, 2, 3)
    for step in (1, 2):
        ev.apply_gradients(ids, np.zeros((6, 4), np.float32), step=step)
    freqs, versions = ev.metadata(_k(1, 2, 3))
    assert freqs.tolist() == [6, 4, 2]
    assert versions.tolist() == [2, 2, 2]


def test_unique_keys_with_counts_give_the_same_freqs():
    ev = EmbeddingVariable(EVConfig(dim=4))
    for step in (1, 2):
        ev.apply_gradients(_k(1, 2, 3), np.zeros((3, 4), np.float32), counts=_k(3, 2, 1), step=step)
    assert ev.metadata(_k(1, 2, 3))[0].tolist() == [6, 4, 2]


def test_version_is_step_of_latest_update_and_minus_one_when_never_updated():
    ev = EmbeddingVariable(EVConfig(dim=2))
    ev.apply_gradients(_k(5, 6), np.zeros((2, 2), np.float32), step=3)
    ev.apply_gradients(_k(6), np.zeros((1, 2), np.float32), step=7)
    ev.insert_rows(_k(8), np.zeros((1, 2), np.float32))  # loaded, never updated
    assert ev.metadata(_k(5, 6, 8, 9))[1].tolist() == [3, 7, -1, -1]
    assert ev.step == 7


def test_lookups_never_count_or_create():
    ev = EmbeddingVariable(EVConfig(dim=3))
    ev.apply_gradients(_k(1), np.zeros((1, 3), np.float32), step=1)
    before = ev.snapshot()
    for train in (True, False):
        ev.lookup(_k(1, 2, 3, 1), train=train)
    _same_state(before, ev.snapshot())
    assert len(ev) == 1


def test_absent_key_reads_as_its_initial_row_without_storing_it():
    cfg = EVConfig(dim=8, seed=7)
    ev = EmbeddingVariable(cfg)
    got = ev.lookup(_k(42, -9))
    np.testing.assert_array_equal(got, initial_rows(cfg.initializer, 7, _k(42, -9), 8))
    assert len(ev) == 0
    # The row a key is created with is the row it read as.
    ev.apply_gradients(_k(42), np.zeros((1, 8), np.float32), step=1)
    np.testing.assert_array_equal(ev.lookup(_k(42)), got[:1])


def test_same_key_same_initial_row_in_two_variables():
    cfg = EVConfig(dim=16, seed=3, optimizer=OptimizerConfig(name="sgd", lr=0.1))
    a, b = EmbeddingVariable(cfg, "shard0"), EmbeddingVariable(cfg, "shard1")
    rng = np.random.default_rng(0)
    keys = rng.integers(-(1 << 62), 1 << 62, 300, dtype=np.int64)
    # Different creation orders and batchings, other keys interleaved.
    a.apply_gradients(keys, np.zeros((300, 16), np.float32), step=1)
    for chunk in np.array_split(np.concatenate([keys[::-1], _k(1, 2, 3)]), 5):
        b.apply_gradients(chunk, np.zeros((len(chunk), 16), np.float32), step=1)
    np.testing.assert_array_equal(a.lookup(keys), b.lookup(keys))
    # A different seed gives different rows.
    c = EmbeddingVariable(EVConfig(dim=16, seed=4))
    assert not np.array_equal(c.lookup(keys), a.lookup(keys))


@pytest.mark.parametrize("kind", ["truncated_normal", "normal", "uniform", "zeros"])
def test_initializer_kinds(kind):
    cfg = InitializerConfig(kind=kind, scale=0.5)
    x = initial_rows(cfg, 0, np.arange(20_000, dtype=np.int64), 8)
    assert x.dtype == np.float32 and x.shape == (20_000, 8)
    if kind == "zeros":
        assert not x.any()
        return
    assert abs(x.mean()) < 0.01
    want_std = {"truncated_normal": 0.5 * 0.8796, "normal": 0.5, "uniform": 0.5 / np.sqrt(3)}[kind]
    assert abs(x.std() - want_std) < 0.01
    if kind == "truncated_normal":
        assert np.abs(x).max() <= 1.0 + 1e-6
    # Columns are independent of the width: a wider table starts with the same columns.
    np.testing.assert_array_equal(initial_rows(cfg, 0, np.arange(5, dtype=np.int64), 8)[:, :4],
                                  initial_rows(cfg, 0, np.arange(5, dtype=np.int64), 8, np.arange(4)))


@pytest.mark.parametrize("opt", ["adagrad", "adam", "ftrl"])
def test_duplicate_keys_are_summed_before_one_update(opt):
    cfg = EVConfig(dim=4, optimizer=OptimizerConfig(name=opt, lr=0.1))
    rng = np.random.default_rng(1)
    g = rng.standard_normal((5, 4)).astype(np.float32)
    dup, uniq = EmbeddingVariable(cfg), EmbeddingVariable(cfg)
    dup.apply_gradients(_k(7, 3, 7, 7, 3), g, step=1)
    uniq.apply_gradients(_k(3, 7), np.stack([g[1] + g[4], g[0] + g[2] + g[3]]), counts=_k(2, 3), step=1)
    np.testing.assert_allclose(dup.lookup(_k(3, 7)), uniq.lookup(_k(3, 7)), rtol=1e-6, atol=1e-7)
    assert dup.metadata(_k(3, 7))[0].tolist() == [2, 3]
    # Summed once, not applied three times: differs from three separate updates.
    seq = EmbeddingVariable(cfg)
    for i, k in enumerate([7, 3, 7, 7, 3]):
        seq.apply_gradients(_k(k), g[i:i + 1], step=1)
    assert not np.allclose(seq.lookup(_k(7)), dup.lookup(_k(7)))


def _twin_updates(reuse: bool):
    cfg = EVConfig(dim=4, optimizer=OptimizerConfig(name="adagrad", lr=0.1))
    ev = EmbeddingVariable(cfg)
    rng = np.random.default_rng(5)
    for step in range(1, 6):
        keys = rng.integers(0, 40, 30).astype(np.int64)
        if reuse:
            ev.lookup(keys)
        ev.apply_gradients(keys, rng.standard_normal((30, 4)).astype(np.float32), step=step)
    return ev.snapshot()


def test_apply_after_lookup_reuses_rows_and_changes_nothing():
    _same_state(_twin_updates(reuse=False), _twin_updates(reuse=True))


def test_rows_remembered_by_a_lookup_are_not_used_once_stale():
    cfg = EVConfig(dim=2, optimizer=OptimizerConfig(name="sgd", lr=1.0), steps_to_live=1,
                   initializer=InitializerConfig(kind="zeros"))
    ev = EmbeddingVariable(cfg)
    ev.apply_gradients(_k(5), np.ones((1, 2), np.float32), step=1)
    keys = _k(5)
    ev.lookup(keys)  # remembers key 5's row
    ev.evict(step=10)  # frees it ...
    ev.apply_gradients(_k(6), np.zeros((1, 2), np.float32), step=10)  # ... and key 6 takes it
    ev.apply_gradients(keys, np.ones((1, 2), np.float32), step=11)
    np.testing.assert_array_equal(ev.lookup(_k(5, 6)), [[-1, -1], [0, 0]])
    # The caller reusing its key array for other keys after the lookup:
    ev.lookup(keys)
    keys[0] = 6
    ev.apply_gradients(keys, np.ones((1, 2), np.float32), step=12)
    np.testing.assert_array_equal(ev.lookup(_k(5, 6)), [[-1, -1], [-1, -1]])


def test_unsorted_unique_keys_take_the_general_path():
    cfg = EVConfig(dim=2, optimizer=OptimizerConfig(name="sgd", lr=1.0), initializer=InitializerConfig(kind="zeros"))
    ev = EmbeddingVariable(cfg)
    ev.apply_gradients(_k(9, 1, 5), np.array([[1, 1], [2, 2], [3, 3]], np.float32), step=1)
    np.testing.assert_array_equal(ev.lookup(_k(1, 5, 9)), -np.array([[2, 2], [3, 3], [1, 1]], np.float32))


def test_growth_keeps_rows():
    ev = EmbeddingVariable(EVConfig(dim=4, optimizer=OptimizerConfig(name="sgd")), initial_rows=16)
    keys = np.arange(5000, dtype=np.int64) * 7919
    first = ev.lookup(keys)
    for chunk in np.array_split(keys, 9):
        ev.apply_gradients(chunk, np.zeros((len(chunk), 4), np.float32), step=1)
    assert len(ev) == 5000
    np.testing.assert_array_equal(ev.lookup(keys), first)


# ---- bad input -------------------------------------------------------------------------------

def _trained() -> EmbeddingVariable:
    ev = EmbeddingVariable(EVConfig(dim=4, filter=FilterConfig(kind="counter", min_freq=2)), name="clicks")
    ev.apply_gradients(_k(1, 1, 2, 3), np.ones((4, 4), np.float32), step=1)
    return ev


def test_nan_gradient_rejects_whole_update_and_leaves_state_untouched():
    ev = _trained()
    before = ev.snapshot()
    g = np.ones((4, 4), np.float32)
    g[2, 1] = np.nan
    with pytest.raises(ValueError, match="clicks.*non-finite"):
        ev.apply_gradients(_k(1, 2, 9, 10), g, step=2)  # 9, 10 would be new/waiting keys
    g[2, 1] = np.inf
    with pytest.raises(ValueError, match="clicks"):
        ev.apply_gradients(_k(1, 2, 9, 10), g, step=2)
    _same_state(before, ev.snapshot())
    assert ev.filter_counts(_k(2, 3, 9)).tolist() == [1, 1, 0]


def test_nan_gradient_after_a_training_lookup_rejects_whole_update_too():
    # The apply reuses the rows the lookup resolved, so it tests the gradients without a probe.
    ev = _trained()
    keys = _k(1, 2, 3)
    ev.lookup(keys)
    before = ev.snapshot()
    g = np.ones((3, 4), np.float32)
    g[2, 3] = -np.inf
    with pytest.raises(ValueError, match="clicks.*non-finite gradient .* for 1 of 3 keys"):
        ev.apply_gradients(keys, g, step=2)
    _same_state(before, ev.snapshot())


def test_huge_but_finite_gradients_are_accepted():
    ev = EmbeddingVariable(EVConfig(dim=4, optimizer=OptimizerConfig(name="sgd", lr=1e-30)))
    ev.apply_gradients(_k(1), np.full((1, 4), 3e38, np.float32), step=1)  # their sum overflows
    assert len(ev) == 1 and np.isfinite(ev.lookup(_k(1))).all()


def test_wrong_grad_shape_is_a_clear_error():
    ev = _trained()
    before = ev.snapshot()
    with pytest.raises(ValueError, match=r"clicks.*\(2, 4\)"):
        ev.apply_gradients(_k(1, 2), np.ones((2, 3), np.float32), step=2)
    with pytest.raises(ValueError, match="clicks"):
        ev.apply_gradients(_k(1, 2), np.ones((3, 4), np.float32), step=2)
    with pytest.raises(ValueError, match="counts"):
        ev.apply_gradients(_k(1, 2), np.ones((2, 4), np.float32), counts=_k(1), step=2)
    with pytest.raises(ValueError, match="step"):
        ev.apply_gradients(_k(1, 2), np.ones((2, 4), np.float32), step=-1)
    _same_state(before, ev.snapshot())


@pytest.mark.parametrize("bad", [np.array([1, 2], dtype=np.int32), np.array([1.0, 2.0]), [1, 2],
                                 np.array([1, 2], dtype=np.uint64)])
def test_non_int64_keys_are_refused(bad):
    ev = _trained()
    with pytest.raises(TypeError, match="clicks.*int64"):
        ev.lookup(bad)
    with pytest.raises(TypeError, match="clicks.*int64"):
        ev.apply_gradients(bad, np.ones((2, 4), np.float32), step=2)


def test_empty_batches_are_fine():
    ev = _trained()
    assert ev.lookup(np.empty(0, np.int64)).shape == (0, 4)
    ev.apply_gradients(np.empty(0, np.int64), np.empty((0, 4), np.float32), step=5)
    assert ev.step == 5


# ---- LocalStore ------------------------------------------------------------------------------

def test_local_store_implements_the_store_interface():
    store = LocalStore({"user": EVConfig(dim=4), "item": EVConfig(dim=8, optimizer=OptimizerConfig(name="sgd"))})
    assert store.dim("user") == 4 and store.dim("item") == 8
    keys = _k(1, 2)
    rows = store.lookup("item", keys, train=False)
    assert rows.shape == (2, 8) and rows.dtype == np.float32
    store.apply_gradients("item", keys, np.ones((2, 8), np.float32), _k(4, 1), step=3)
    np.testing.assert_allclose(store.lookup("item", keys), rows - 0.05, rtol=1e-6)
    assert store.variable("item").metadata(keys)[0].tolist() == [4, 1]
    assert len(store.variable("user")) == 0
    with pytest.raises(KeyError, match="nope.*user"):
        store.lookup("nope", keys)
    assert set(store.stats()) == {"user", "item"}


def test_local_store_export_restore(tmp_path):
    tables = {"user": EVConfig(dim=4)}
    a = LocalStore(tables)
    a.apply_gradients("user", _k(1, 2), np.ones((2, 4), np.float32), _k(1, 1), step=1)
    a.export(tmp_path / "ckpt")
    b = LocalStore(tables)
    b.restore(tmp_path / "ckpt")
    _same_state(a.variable("user").snapshot(), b.variable("user").snapshot())


def test_local_store_from_planned_tables():
    from types import SimpleNamespace

    from psrec.config import load_config

    tables = [SimpleNamespace(name="emb", dim=4), SimpleNamespace(name="linear", dim=1)]
    emb = load_config(None, ["embedding.optimizer.name=sgd", "embedding.optimizer.lr=0.5"]).embedding
    store = LocalStore.from_tables(tables, emb, seed=3)
    assert store.table_names == ("emb", "linear")
    cfg = store.variable("emb").config
    assert (cfg.dim, cfg.optimizer.name, cfg.optimizer.lr, cfg.initializer.kind) == (4, "sgd", 0.5, "normal")
    keys = _k(1, 2, 3)
    # Different tables start a key from unrelated rows; the same table is reproducible.
    assert not np.allclose(store.lookup("emb", keys)[:, :1], store.lookup("linear", keys))
    again = LocalStore.from_tables(tables, emb, seed=3)
    np.testing.assert_array_equal(again.lookup("emb", keys), store.lookup("emb", keys))
    zero = LocalStore.from_tables(tables, load_config(None, ["embedding.initializer.kind=zeros"]).embedding)
    assert not zero.lookup("emb", keys).any()
    with pytest.raises(TypeError, match="emb"):
        LocalStore({"emb": {"dim": 4}})
