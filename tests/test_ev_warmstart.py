"""Warm start: tables migrated across configuration changes, and dense torch parameters."""
from __future__ import annotations

import numpy as np
import torch

from psrec.ev import (
    EmbeddingVariable,
    EVConfig,
    FilterConfig,
    OptimizerConfig,
    initial_rows,
    warm_start,
    warm_start_dense,
)


def _train(ev: EmbeddingVariable, n_keys: int = 200, steps: int = 3) -> np.ndarray:
    rng = np.random.default_rng(0)
    keys = np.arange(n_keys, dtype=np.int64) | (np.arange(n_keys, dtype=np.int64) % 3 << 54)  # fields 0-2
    for step in range(1, steps + 1):
        ev.apply_gradients(keys, rng.standard_normal((n_keys, ev.dim)).astype(np.float32), step=step)
    return keys


def test_tables_added_removed_and_resized(tmp_path):
    old_user = EmbeddingVariable(EVConfig(dim=8), name="user")
    old_item = EmbeddingVariable(EVConfig(dim=8), name="item")
    old_ctx = EmbeddingVariable(EVConfig(dim=4), name="ctx")
    keys = _train(old_user)
    _train(old_item)
    _train(old_ctx)
    for ev in (old_user, old_item, old_ctx):
        ev.export(tmp_path / ev.name)
    new_tables = {
        "user": EVConfig(dim=8),  # unchanged: everything copied
        "item": EVConfig(dim=12, seed=5),  # wider: 8 columns copied, 4 initialised
        "ctx": EVConfig(dim=2, optimizer=OptimizerConfig(name="sgd")),  # narrower, new optimizer
        "geo": EVConfig(dim=4),  # new table
    }
    old = {name: [tmp_path / name] for name in ("user", "item", "ctx")}
    old["legacy"] = [tmp_path / "user"]  # a table the new model no longer has
    new, report = warm_start(new_tables, old)
    by = {m.table: m for m in report.migrated}
    assert report.new_tables == ("geo",) and report.dropped_tables == ("legacy",)
    assert set(new) == set(new_tables) and len(new["geo"]) == 0

    assert (by["user"].rows_copied, by["user"].slots, by["user"].columns_initialised) == (200, "copied", 0)
    a, b = old_user.snapshot(), new["user"].snapshot()
    for name in ("keys", "values", "freqs", "versions"):
        assert getattr(a, name).tobytes() == getattr(b, name).tobytes()
    assert a.slots["accum"].tobytes() == b.slots["accum"].tobytes() and b.step == a.step

    m = by["item"]
    assert (m.old_dim, m.new_dim, m.columns_copied, m.columns_initialised, m.slots) == (8, 12, 8, 4, "reset")
    got = new["item"].lookup(keys)
    np.testing.assert_array_equal(got[:, :8], old_item.lookup(keys))
    np.testing.assert_array_equal(got[:, 8:], initial_rows(new_tables["item"].initializer, 5, keys, 12,
                                                           np.arange(8, 12)))
    np.testing.assert_array_equal(new["item"].metadata(keys)[0], old_item.metadata(keys)[0])
    np.testing.assert_allclose(new["item"].slot("accum", keys), 0.1)  # fresh adagrad state

    m = by["ctx"]
    assert (m.columns_copied, m.columns_initialised, m.slots) == (2, 0, "reset")
    np.testing.assert_array_equal(new["ctx"].lookup(keys), old_ctx.lookup(keys)[:, :2])
    assert "geo: new" in report.summary() and "legacy: dropped" in report.summary()


def test_keep_predicate_drops_removed_fields_keys():
    old = EmbeddingVariable(EVConfig(dim=4), name="t")
    keys = _train(old)
    field = keys >> 54
    new, report = warm_start({"t": EVConfig(dim=4)}, {"t": [old.snapshot()]}, keep={"t": lambda k: (k >> 54) != 2})
    m = report.migrated[0]
    assert m.rows_dropped == int((field == 2).sum()) and m.rows_copied == int((field != 2).sum())
    assert new["t"].contains(keys).tolist() == (field != 2).tolist()


def test_warm_start_into_more_shards_and_filter_state():
    cfg = EVConfig(dim=4, filter=FilterConfig(kind="counter", min_freq=5))
    old = EmbeddingVariable(cfg, name="t")
    keys = _train(old, steps=3)  # every key seen 3 times: all waiting
    old.apply_gradients(keys[:10], np.ones((10, 4), np.float32), counts=np.full(10, 2), step=4)
    snap = old.snapshot()
    total_rows = total_waiting = 0
    for shard in range(3):
        new, report = warm_start({"t": cfg}, {"t": [snap]}, shard_index=shard, num_shards=3)
        assert report.migrated[0].filter_state == "copied"
        total_rows += len(new["t"])
        total_waiting += new["t"].stats().waiting
    assert total_rows == len(old) == 10 and total_waiting == old.stats().waiting == 190
    changed = EVConfig(dim=4, filter=FilterConfig(kind="bloom", min_freq=5, expected_keys=1000))
    _, report = warm_start({"t": changed}, {"t": [snap]})
    assert report.migrated[0].filter_state == "reset"


def test_ftrl_values_survive_a_warm_start_that_resets_slots():
    old = EmbeddingVariable(EVConfig(dim=4), name="t")
    keys = _train(old)
    new, report = warm_start({"t": EVConfig(dim=4, optimizer=OptimizerConfig(name="ftrl", l1=0.001))},
                             {"t": [old.snapshot()]})
    assert report.migrated[0].slots == "reset"
    new["t"].apply_gradients(keys, np.zeros((len(keys), 4), np.float32), step=10)
    np.testing.assert_allclose(new["t"].lookup(keys), old.lookup(keys), rtol=1e-5, atol=1e-6)


def test_dense_warm_start_copies_matching_names_and_shapes():
    torch.manual_seed(0)
    old = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1), torch.nn.BatchNorm1d(1))
    new = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2), torch.nn.Linear(2, 1),
                              torch.nn.Linear(1, 1))
    state = old.state_dict()
    state["extra.weight"] = torch.zeros(3)
    fresh_2w = new[2].weight.detach().clone()
    report = warm_start_dense(new, state)
    # Name and shape decide: BatchNorm's (1,) bias fits the new Linear(2, 1)'s bias.
    assert set(report.copied) == {"0.weight", "0.bias", "3.bias"}
    assert {n: (o, w) for n, o, w in report.mismatched} == {
        "2.weight": ((1, 8), (2, 8)), "2.bias": ((1,), (2,)), "3.weight": ((1,), (1, 2))}
    assert report.new == ("4.weight", "4.bias")
    assert set(report.dropped) == {"extra.weight", "3.running_mean", "3.running_var", "3.num_batches_tracked"}
    torch.testing.assert_close(new[0].weight, old[0].weight)
    torch.testing.assert_close(new[2].weight.detach(), fresh_2w)
