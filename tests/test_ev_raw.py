"""The raw-batch path (`EmbeddingVariable.lookup_raw` / `apply_raw`, `psrec.ev.raw`) against
the path it replaces: `unique` + `lookup` + `expand` forward, `segment_sum` +
`apply_gradients` backward. Same rows out, and the same parameters after training, bit for bit."""
from __future__ import annotations

import doctest

import numpy as np
import pytest

import psrec.ev.raw
from psrec.ev import EmbeddingVariable, EVConfig, FilterConfig, OptimizerConfig, expand, segment_sum, unique
from psrec.ev.raw import RawBatch

CONFIGS = {
    "adagrad": EVConfig(dim=8, optimizer=OptimizerConfig(name="adagrad", lr=0.05)),
    "sgd": EVConfig(dim=3, optimizer=OptimizerConfig(name="sgd", lr=0.1)),
    "adam": EVConfig(dim=4, optimizer=OptimizerConfig(name="adam", lr=0.01)),
    "ftrl": EVConfig(dim=5, optimizer=OptimizerConfig(name="ftrl", lr=0.05)),
    "adagrad+counter": EVConfig(dim=8, filter=FilterConfig(kind="counter", min_freq=3)),
}


def _draws(rng: np.random.Generator, n: int, universe: np.ndarray) -> np.ndarray:
    """n Zipf-like draws (heavy head, repeats) of arbitrary int64 keys."""
    ranks = np.minimum(rng.zipf(1.2, n) - 1, len(universe) - 1)
    return universe[ranks]


def _assert_same_state(a: EmbeddingVariable, b: EmbeddingVariable) -> None:
    sa, sb = a.snapshot(), b.snapshot()
    np.testing.assert_array_equal(sa.keys, sb.keys)
    np.testing.assert_array_equal(sa.values, sb.values)
    np.testing.assert_array_equal(sa.freqs, sb.freqs)
    np.testing.assert_array_equal(sa.versions, sb.versions)
    assert sa.slots.keys() == sb.slots.keys()
    for k in sa.slots:
        np.testing.assert_array_equal(sa.slots[k], sb.slots[k])
    np.testing.assert_array_equal(a.filter_counts(sa.keys), b.filter_counts(sb.keys))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_raw_path_trains_exactly_as_unique_lookup_expand(name):
    cfg = CONFIGS[name]
    rng = np.random.default_rng(7)
    universe = rng.permutation(rng.integers(-(1 << 62), 1 << 62, 3000, dtype=np.int64))
    ref, raw = EmbeddingVariable(cfg, "ref"), EmbeddingVariable(cfg, "raw")
    for step in range(1, 13):
        keys = _draws(rng, int(rng.integers(1, 700)), universe)
        grads = rng.standard_normal((len(keys), cfg.dim)).astype(np.float32)
        u = unique(keys)
        want = expand(ref.lookup(u.keys), u.inverse)
        got, batch = raw.lookup_raw(keys)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(got, raw.lookup(keys, train=False))
        # The batch is np.unique's answer up to the order of the distinct keys.
        np.testing.assert_array_equal(batch.keys[batch.inverse], keys)
        assert len(np.unique(batch.keys)) == len(batch.keys) == len(u.keys)
        order = np.argsort(batch.keys)
        np.testing.assert_array_equal(batch.keys[order], u.keys)
        np.testing.assert_array_equal(batch.counts[order], u.counts)
        ref.apply_gradients(u.keys, segment_sum(grads, u.inverse, len(u.keys)), u.counts, step)
        raw.apply_raw(batch, grads, step)
        _assert_same_state(ref, raw)
    assert len(raw) > 0 and raw.step == 12


def test_a_stale_or_foreign_batch_is_probed_again():
    """Keys inserted between lookup and apply, or a batch of another variable: rows are
    resolved anew, never taken from the batch."""
    cfg = CONFIGS["adagrad"]
    rng = np.random.default_rng(3)
    ref, raw, other = (EmbeddingVariable(cfg, n) for n in ("ref", "raw", "other"))
    warm = np.arange(50, dtype=np.int64) * 11
    for ev in (ref, raw):
        ev.apply_gradients(warm, np.ones((50, cfg.dim), np.float32), step=1)
    other.apply_gradients(warm[::-1].copy(), np.ones((50, cfg.dim), np.float32), step=1)  # other rows
    keys = rng.choice(np.arange(100, dtype=np.int64) * 11, 300)
    grads = rng.standard_normal((300, cfg.dim)).astype(np.float32)
    _, stale = raw.lookup_raw(keys)
    _, foreign = other.lookup_raw(keys)
    extra = np.array([100_001, 100_002], dtype=np.int64)
    for ev in (ref, raw):  # a concurrent update creates rows: the generation moves on
        ev.apply_gradients(extra, np.ones((2, cfg.dim), np.float32), step=2)
    u = unique(keys)
    for step, batch in ((3, stale), (4, foreign)):
        ref.apply_gradients(u.keys, segment_sum(grads, u.inverse, len(u.keys)), u.counts, step)
        raw.apply_raw(batch, grads, step)
        _assert_same_state(ref, raw)


def test_bad_input_is_refused_and_changes_nothing():
    ev = EmbeddingVariable(CONFIGS["adagrad"], "t")
    keys = np.array([5, 9, 5, 2], dtype=np.int64)
    ev.apply_gradients(np.array([2, 5], dtype=np.int64), np.ones((2, 8), np.float32), step=1)
    before = ev.snapshot()
    _, batch = ev.lookup_raw(keys)
    grads = np.ones((4, 8), np.float32)
    grads[2, 3] = np.nan
    with pytest.raises(ValueError, match="non-finite gradient.*'t'|'t'.*non-finite gradient"):
        ev.apply_raw(batch, grads, step=2)
    with pytest.raises(ValueError, match=r"grads must have shape \(4, 8\)"):
        ev.apply_raw(batch, np.ones((3, 8), np.float32), step=2)
    with pytest.raises(TypeError, match="RawBatch of lookup_raw"):
        ev.apply_raw(tuple(batch), np.ones((4, 8), np.float32), step=2)
    with pytest.raises(ValueError, match="inverse indices"):
        ev.apply_raw(batch._replace(inverse=np.array([0, 1, 7, 2], np.int32)), np.ones((4, 8), np.float32), 2)
    with pytest.raises(ValueError, match="step must be an integer"):
        ev.apply_raw(batch, np.ones((4, 8), np.float32), step=-1)
    with pytest.raises(TypeError, match="int64"):
        ev.lookup_raw(np.array([1, 2], dtype=np.int32))
    after = ev.snapshot()
    np.testing.assert_array_equal(before.values, after.values)
    np.testing.assert_array_equal(before.slots["accum"], after.slots["accum"])
    np.testing.assert_array_equal(before.freqs, after.freqs)
    assert after.step == 1


def test_empty_batch_and_scratch_reuse():
    """An empty batch is a no-op but for the step; the slot map is left all -1 after batches
    of growing and shrinking size (a slot left behind would alias the next batch's keys)."""
    ev = EmbeddingVariable(CONFIGS["sgd"], "t")
    out, batch = ev.lookup_raw(np.empty(0, np.int64))
    assert out.shape == (0, 3) and isinstance(batch, RawBatch) and len(batch.keys) == 0
    ev.apply_raw(batch, np.empty((0, 3), np.float32), step=4)
    assert ev.step == 4 and len(ev) == 0
    rng = np.random.default_rng(0)
    for n in (10, 5000, 3, 700):
        keys = rng.integers(0, 40, n).astype(np.int64)
        out, batch = ev.lookup_raw(keys)
        np.testing.assert_array_equal(batch.keys[batch.inverse], keys)
        np.testing.assert_array_equal(batch.counts, np.bincount(batch.inverse))
        assert (psrec.ev.raw._scratch.ids == -1).all()
        ev.apply_raw(batch, np.ones((n, 3), np.float32), step=5)


def test_docstring_example():
    result = doctest.testmod(psrec.ev.raw, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
