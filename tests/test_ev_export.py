"""Export / import: bit-exact round trip, numpy-only format, N -> M re-sharding, consistency."""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from psrec.ev import (
    EmbeddingVariable,
    EVConfig,
    FilterConfig,
    InitializerConfig,
    OptimizerConfig,
    hash_mod_shard,
    load_snapshot,
)


def _k(*xs) -> np.ndarray:
    return np.array(xs, dtype=np.int64)


def _train(ev: EmbeddingVariable, steps: range, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for step in steps:
        keys = rng.integers(0, 400, 300).astype(np.int64) | (np.int64(3) << 54)
        uniq, counts = np.unique(keys, return_counts=True)
        ev.apply_gradients(uniq, rng.standard_normal((len(uniq), ev.dim)).astype(np.float32), counts, step)


def _assert_same(a, b) -> None:
    assert (a.dim, a.step, a.optimizer, a.filter_kind) == (b.dim, b.step, b.optimizer, b.filter_kind)
    for name in ("keys", "values", "freqs", "versions"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes(), name
    assert sorted(a.slots) == sorted(b.slots)
    for name in a.slots:
        assert a.slots[name].tobytes() == b.slots[name].tobytes(), name
    assert sorted(a.filter_arrays) == sorted(b.filter_arrays)
    for name in a.filter_arrays:
        assert a.filter_arrays[name].tobytes() == b.filter_arrays[name].tobytes(), name


CONFIGS = {
    "adagrad+counter": EVConfig(dim=8, filter=FilterConfig(kind="counter", min_freq=2)),
    "adam+bloom": EVConfig(dim=5, optimizer=OptimizerConfig(name="adam"),
                           filter=FilterConfig(kind="bloom", min_freq=2, expected_keys=5000)),
    "gftrl": EVConfig(dim=4, optimizer=OptimizerConfig(name="gftrl", l1=0.01)),
}


@pytest.mark.parametrize("which", sorted(CONFIGS))
def test_round_trip_is_bit_exact_and_training_continues_identically(which, tmp_path):
    cfg = CONFIGS[which]
    a = EmbeddingVariable(cfg, name="emb")
    _train(a, range(1, 6))
    a.export(tmp_path / "emb")
    b = EmbeddingVariable.load(cfg, [tmp_path / "emb"])
    assert b.name == "emb"
    _assert_same(a.snapshot(), b.snapshot())
    assert a.stats().waiting == b.stats().waiting
    _train(a, range(6, 9), seed=1)
    _train(b, range(6, 9), seed=1)
    _assert_same(a.snapshot(), b.snapshot())


def test_export_is_readable_with_numpy_and_json_alone(tmp_path):
    ev = EmbeddingVariable(CONFIGS["adagrad+counter"], name="emb")
    _train(ev, range(1, 4))
    ev.export(tmp_path / "e")
    m = json.loads((tmp_path / "e" / "manifest.json").read_text())
    assert m["format"] == "psrec-ev" and m["format_version"] == 1
    keys = np.load(tmp_path / "e" / m["files"]["keys"]["file"], allow_pickle=False)
    values = np.load(tmp_path / "e" / "values.npy", allow_pickle=False)
    accum = np.load(tmp_path / "e" / m["slots"]["accum"]["file"], allow_pickle=False)
    waiting = np.load(tmp_path / "e" / m["filter"]["files"]["keys"]["file"], allow_pickle=False)
    assert keys.dtype == np.int64 and values.shape == (len(keys), 8) and accum.shape == values.shape
    assert (np.diff(keys) > 0).all() and m["num_rows"] == len(keys) == len(ev)
    assert len(waiting) == ev.stats().waiting > 0
    np.testing.assert_array_equal(ev.lookup(keys), values)


def test_incomplete_or_newer_exports_are_refused(tmp_path):
    ev = EmbeddingVariable(EVConfig(dim=2))
    _train(ev, range(1, 2))
    ev.export(tmp_path / "e")
    mf = tmp_path / "e" / "manifest.json"
    m = json.loads(mf.read_text())
    m["format_version"] = 99
    mf.write_text(json.dumps(m))
    with pytest.raises(ValueError, match="format_version 99"):
        load_snapshot(tmp_path / "e")
    mf.unlink()
    with pytest.raises(ValueError, match="no manifest"):
        load_snapshot(tmp_path / "e")


def test_restore_refuses_an_incompatible_export(tmp_path):
    ev = EmbeddingVariable(EVConfig(dim=4), name="emb")
    _train(ev, range(1, 2))
    snap = ev.snapshot()
    for other in (EVConfig(dim=5), EVConfig(dim=4, optimizer=OptimizerConfig(name="sgd")),
                  EVConfig(dim=4, filter=FilterConfig(kind="counter"))):
        with pytest.raises(ValueError, match="warm_start"):
            EmbeddingVariable(other).restore([snap])


def test_overwriting_an_export_replaces_it(tmp_path):
    ev = EmbeddingVariable(EVConfig(dim=2), name="emb")
    _train(ev, range(1, 2))
    ev.export(tmp_path / "e")
    ev.evict()
    _train(ev, range(2, 4), seed=5)
    ev.export(tmp_path / "e")
    _assert_same(load_snapshot(tmp_path / "e"), ev.snapshot())
    assert [p.name for p in tmp_path.iterdir()] == ["e"]  # no temporary directories left


@pytest.mark.parametrize("n_old,n_new", [(3, 2), (2, 5), (1, 4)])
def test_n_shards_load_into_m_shards(n_old, n_new, tmp_path):
    cfg = EVConfig(dim=4, filter=FilterConfig(kind="counter", min_freq=3))
    whole = EmbeddingVariable(cfg, name="emb")
    _train(whole, range(1, 6))
    full = whole.snapshot()
    # Split into n_old shards by the default partition and export each.
    paths = []
    for i in range(n_old):
        shard = EmbeddingVariable.load(cfg, [full], shard_index=i, num_shards=n_old)
        assert (hash_mod_shard(shard.snapshot().keys, n_old) == i).all()
        shard.export(tmp_path / f"old{i}")
        paths.append(tmp_path / f"old{i}")
    # Load those into n_new shards and check they partition the original exactly.
    parts = [EmbeddingVariable.load(cfg, paths, shard_index=j, num_shards=n_new).snapshot() for j in range(n_new)]
    for j, p in enumerate(parts):
        assert (hash_mod_shard(p.keys, n_new) == j).all()
        assert (hash_mod_shard(p.filter_arrays["keys"], n_new) == j).all()
    keys = np.concatenate([p.keys for p in parts])
    order = np.argsort(keys)
    assert keys[order].tobytes() == full.keys.tobytes()
    for name in ("values", "freqs", "versions"):
        got = np.concatenate([getattr(p, name) for p in parts])[order]
        assert got.tobytes() == getattr(full, name).tobytes(), name
    got = np.concatenate([p.slots["accum"] for p in parts])[order]
    assert got.tobytes() == full.slots["accum"].tobytes()
    wk = np.concatenate([p.filter_arrays["keys"] for p in parts])
    wc = np.concatenate([p.filter_arrays["counts"] for p in parts])
    o = np.argsort(wk)
    assert wk[o].tobytes() == full.filter_arrays["keys"].tobytes()
    assert wc[o].tobytes() == full.filter_arrays["counts"].tobytes()


def test_custom_partition_function():
    cfg = EVConfig(dim=2)
    ev = EmbeddingVariable(cfg)
    _train(ev, range(1, 3))
    snap = ev.snapshot()
    even = EmbeddingVariable.load(cfg, [snap], shard_index=0, num_shards=2, partition=lambda k: k & 1)
    assert (even.snapshot().keys % 2 == 0).all() and len(even) == int((snap.keys % 2 == 0).sum())


def test_duplicate_keys_across_sources_are_an_error():
    ev = EmbeddingVariable(EVConfig(dim=2))
    _train(ev, range(1, 2))
    snap = ev.snapshot()
    with pytest.raises(ValueError, match="two sources"):
        EmbeddingVariable(EVConfig(dim=2)).restore([snap, snap])


def test_snapshot_is_consistent_while_updates_run_on_another_thread():
    # Adam's per-row step slot must equal the row's freq in every snapshot (each update
    # touches every key once); a snapshot mixing moments would break that.
    # adam_async keeps a per-row update count (slot "step"): it must equal the row's freq here
    cfg = EVConfig(dim=16, optimizer=OptimizerConfig(name="adam_async"), initializer=InitializerConfig(kind="zeros"))
    ev = EmbeddingVariable(cfg)
    keys = np.arange(3000, dtype=np.int64)
    ev.apply_gradients(keys, np.ones((3000, 16), np.float32), step=0)
    stop = threading.Event()

    def writer():
        step = 1
        while not stop.is_set():
            ev.apply_gradients(keys, np.ones((3000, 16), np.float32), step=step)
            step += 1

    t = threading.Thread(target=writer)
    t.start()
    try:
        for _ in range(20):
            s = ev.snapshot()
            assert (s.slots["step"] == s.freqs).all()
            assert (s.versions == s.versions[0]).all()
    finally:
        stop.set()
        t.join()
