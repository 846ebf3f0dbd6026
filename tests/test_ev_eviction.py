"""Eviction by global-step TTL and by L2 weight, on demand and at export time."""
from __future__ import annotations

import numpy as np

from psrec.ev import EmbeddingVariable, EVConfig, InitializerConfig, OptimizerConfig, load_snapshot


def _k(*xs) -> np.ndarray:
    return np.array(xs, dtype=np.int64)


def _touch(ev: EmbeddingVariable, keys: np.ndarray, step: int) -> None:
    ev.apply_gradients(keys, np.zeros((len(keys), ev.dim), np.float32), step=step)


def test_ttl_evicts_keys_not_updated_within_steps_to_live():
    ev = EmbeddingVariable(EVConfig(dim=4, steps_to_live=10), name="ttl")
    _touch(ev, _k(1, 2, 3), step=1)
    _touch(ev, _k(2), step=5)
    _touch(ev, _k(3), step=12)
    rep = ev.evict(step=14)  # stale: version < 14 - 10 = 4
    assert rep.rows_ttl == 1 and rep.rows_l2 == 0 and rep.rows_evicted == 1
    assert rep.bytes_freed == ev.row_bytes == 4 * 4 + 16 + 4 * 4  # values, freq+version, adagrad accum
    assert ev.contains(_k(1, 2, 3)).tolist() == [False, True, True]
    rep = ev.evict()  # default step: the latest applied (12): nothing older than 2
    assert rep.rows_evicted == 0 and rep.step == 12
    assert ev.stats().evicted_total == 1


def test_l2_evicts_small_rows():
    cfg = EVConfig(dim=2, l2_evict_threshold=0.5, initializer=InitializerConfig(kind="zeros"),
                   optimizer=OptimizerConfig(name="sgd", lr=1.0))
    ev = EmbeddingVariable(cfg, name="l2")
    # Rows become -g: 0.5 * ||v||^2 = 0.25, 0.5, 4.0.
    ev.apply_gradients(_k(1, 2, 3), np.array([[0.5, 0.5], [1.0, 0.0], [2.0, 2.0]], np.float32), step=1)
    rep = ev.evict()
    assert (rep.rows_ttl, rep.rows_l2) == (0, 1)
    assert ev.contains(_k(1, 2, 3)).tolist() == [False, True, True]
    assert rep.bytes_freed == 2 * 4 + 16


def test_both_rules_count_each_row_once():
    cfg = EVConfig(dim=2, steps_to_live=1, l2_evict_threshold=1.0, initializer=InitializerConfig(kind="zeros"))
    ev = EmbeddingVariable(cfg)
    _touch(ev, _k(1, 2), step=1)
    _touch(ev, _k(3), step=10)
    rep = ev.evict()
    assert rep.rows_ttl == 2 and rep.rows_l2 == 1 and len(ev) == 0
    assert rep.bytes_freed == 3 * ev.row_bytes


def test_evicted_rows_are_reused_and_evicted_keys_start_fresh():
    ev = EmbeddingVariable(EVConfig(dim=4, steps_to_live=1), initial_rows=16)
    keys = np.arange(100, dtype=np.int64)
    _touch(ev, keys, step=1)
    ev.evict(step=10)
    _touch(ev, keys + 1000, step=10)
    assert len(ev) == 100 and ev.stats().rows_used == 100  # freed rows taken again
    _touch(ev, keys[:1], step=11)
    assert ev.metadata(keys[:1])[0].tolist() == [1]  # a fresh row, freq counted from zero


def test_export_runs_eviction_first(tmp_path):
    ev = EmbeddingVariable(EVConfig(dim=4, steps_to_live=5))
    _touch(ev, _k(1, 2), step=1)
    _touch(ev, _k(2), step=20)
    rep = ev.export(tmp_path / "x")
    assert rep is not None and rep.rows_ttl == 1
    assert load_snapshot(tmp_path / "x").keys.tolist() == [2]
    assert EmbeddingVariable(EVConfig(dim=4)).export(tmp_path / "y") is None  # nothing configured


def test_no_eviction_when_disabled():
    ev = EmbeddingVariable(EVConfig(dim=4))
    _touch(ev, _k(1), step=1)
    rep = ev.evict(step=10**9)
    assert rep.rows_evicted == 0 and rep.bytes_freed == 0 and len(ev) == 1
