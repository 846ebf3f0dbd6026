"""Incremental checkpoints: between full ones only the rows updated since the previous
checkpoint; restore = full + increments, verified, each chained to its base; resuming from an
increment ends bit-identical to an uninterrupted run (local, sync PS, collective)."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import psrec
from psrec.core import checkpoint, incremental
from psrec.core.checkpoint import CheckpointError
from psrec.ev import EmbeddingVariable, EVConfig, load_snapshot
from psrec.ev.export import load_increment
from psrec.ev.increment import apply_increment

SMALL = ["synthetic.num_fields=6", "synthetic.num_dense=2", "embedding.dim=4", "model.params.hidden=[8]",
         "data.batch_size=64", "data.eval_rows=512", "train.progress=false", "ps.metrics_port=-1"]
PLAIN_SGD = ["embedding.optimizer.name=sgd", "embedding.optimizer.lr=0.5", "train.optimizer=sgd", "train.lr=0.1"]


def _train(ev, keys, step):
    g = np.random.default_rng(step).normal(size=(len(keys), ev.dim)).astype(np.float32)
    ev.apply_gradients(np.asarray(keys, np.int64), g, np.ones(len(keys), np.int64), step)


def _same(a, b):
    for f in ("keys", "values", "freqs", "versions"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)
    assert sorted(a.slots) == sorted(b.slots)
    for k in a.slots:
        np.testing.assert_array_equal(a.slots[k], b.slots[k], err_msg=k)
    assert a.step == b.step


@pytest.mark.parametrize("cfg", [EVConfig(dim=4), EVConfig(dim=4, steps_to_live=2)])
def test_an_increment_holds_the_updated_rows_and_merges_back_bit_exact(tmp_path, cfg):
    ev = EmbeddingVariable(cfg, name="t")
    _train(ev, range(0, 100), 1)
    ev.export(tmp_path / "full", evict=False)
    _train(ev, range(90, 130), 2)
    _train(ev, range(5, 8), 3)
    if cfg.steps_to_live:
        ev.evict(4)  # keys 0..4, 8..89 were last updated at step 1 < 4 - 2: gone
    ev.export(tmp_path / "inc1", evict=False, base=tmp_path / "full")
    _train(ev, [7, 200], 4)
    ev.export(tmp_path / "inc2", evict=False, base=tmp_path / "inc1")

    d1, since1, live1 = load_increment(tmp_path / "inc1")
    assert since1 == 1 and d1.keys.tolist() == [5, 6, 7, *range(90, 130)]
    assert (live1 is not None) == bool(cfg.steps_to_live)  # the key list only once a row has gone
    d2, since2, live2 = load_increment(tmp_path / "inc2")
    assert since2 == 3 and d2.keys.tolist() == [7, 200]
    merged = apply_increment(apply_increment(load_snapshot(tmp_path / "full"), d1, since1, live1), d2, since2, live2)
    _same(merged, ev.snapshot())
    with pytest.raises(ValueError, match="an incremental export"):
        load_snapshot(tmp_path / "inc1")  # not the whole table: never restored on its own
    with pytest.raises(ValueError, match="broken chain"):
        apply_increment(load_snapshot(tmp_path / "full"), d2, since2, live2)  # skips inc1


def _ckpt(root, step, ev, base):
    on = incremental.next_base(base, 3)
    return checkpoint.write_checkpoint(
        root, step, lambda d: (ev.export(d / "tables" / "t", evict=False, base=None if on is None else
                                         on / "tables" / "t"), incremental.link(on))[1], keep=1)


def test_chain_restore_pruning_and_broken_chains(tmp_path):
    ev = EmbeddingVariable(EVConfig(dim=4), name="t")
    root, base, kinds = tmp_path / "ckpt", None, []
    for step in range(1, 6):
        _train(ev, range(step * 10, step * 10 + 30), step)
        base = _ckpt(root, step, ev, base)
        kinds.append(checkpoint.verify(base)["holds"]["kind"])
    assert kinds == ["full", "increment", "increment", "full", "increment"]
    # keep=1, but the newest increment needs its full base: both stay, the older chain goes
    assert [p.name for p in checkpoint.list_checkpoints(root)] == ["step-000000004", "step-000000005"]
    assert [p.name for p in checkpoint.chain(base)] == ["step-000000004", "step-000000005"]
    with incremental.restorable(base) as whole:
        assert whole != base and not (whole / "tables" / "t" / "live_keys.npy").exists()
        _same(load_snapshot(whole / "tables" / "t"), ev.snapshot())
    assert not list(root.glob(".tmp-*"))  # the merged copy is gone again

    m = json.loads((root / "step-000000004" / checkpoint.MANIFEST).read_text())
    m["created"] += 1  # the base replaced by another checkpoint of the same step
    (root / "step-000000004" / checkpoint.MANIFEST).write_text(json.dumps(m))
    with pytest.raises(CheckpointError, match=r"its base step-000000004 was replaced") as e:
        checkpoint.chain(base)
    assert "\n" not in str(e.value)
    assert checkpoint.latest(root).name == "step-000000004"  # the increment is never resumed from
    shutil.rmtree(root / "step-000000004")
    with pytest.raises(CheckpointError, match=r"its base step-000000004 is missing \(broken increment chain"):
        with incremental.restorable(base):
            pass
    assert checkpoint.latest(root) is None


def _resume(mode, cfg, run_dir, ckpt):
    if mode == "local":
        return psrec.core.local.run_local(cfg, run_dir, resume_from=ckpt)
    if mode == "ps":
        return psrec.ps.runner.run_ps(cfg, run_dir, resume_from=ckpt)
    from collective.runner import run_collective

    return run_collective(cfg, run_dir, resume_from=ckpt)


def test_a_rewritten_step_drops_the_later_ones_of_the_abandoned_trajectory(tmp_path):
    ev = EmbeddingVariable(EVConfig(dim=4), name="t")
    base = None
    for step in range(1, 4):  # full, increment, increment
        _train(ev, range(step, step + 5), step)
        base = _ckpt(tmp_path, step, ev, base)
    # resumed from step 1: its next checkpoint (step 2) continues step 1; the old step 3 followed the old step 2
    again = _ckpt(tmp_path, 2, ev, tmp_path / "step-000000001")
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == ["step-000000001", "step-000000002"]
    assert [p.name for p in checkpoint.chain(again)] == ["step-000000001", "step-000000002"]


def _model_arrays(run_dir: Path) -> dict[str, np.ndarray]:
    model = Path(run_dir) / "model"
    d = checkpoint.list_checkpoints(model)[-1]
    return {str(p.relative_to(d)): np.load(p) for p in sorted(d.rglob("*.npy"))}


@pytest.mark.parametrize("mode, extra", [
    ("local", ["data.train_rows=1536"]),  # Adam dense, Adagrad tables: optimizer state too
    ("ps", PLAIN_SGD + ["data.train_rows=3072", "ps.transport=inprocess", "ps.sync=true", "ps.workers=2",
                        "ps.num_ps=2"]),  # 2 workers: 24 rounds, as the local run's 24 steps
    ("collective", PLAIN_SGD + ["data.train_rows=3072", "collective.transport=inprocess", "collective.workers=2",
                                "collective.metrics_port=-1"]),
])
def test_resume_from_full_plus_increments_equals_the_uninterrupted_run(mode, extra, tmp_path):
    whole = psrec.train(psrec.load_config(overrides=SMALL + extra + [f"run.dir={tmp_path}", "run.name=whole"]), mode)
    cfg = psrec.load_config(overrides=SMALL + extra + [
        f"run.dir={tmp_path}", "run.name=cut", "run.checkpoint_every_steps=4", "run.keep_checkpoints=20",
        "run.full_checkpoint_every=3"])
    cut = psrec.train(cfg, mode)
    assert cut["checkpoints"]["kinds"] == ["full", "increment", "increment", "full", "increment"]
    ckpts = checkpoint.list_checkpoints(Path(cut.path) / "checkpoints")
    third = ckpts[2]  # the second increment: step-4 full + step-8 + step-12
    assert [p.name for p in checkpoint.chain(third)] == [p.name for p in ckpts[:3]]
    inc_rows = sum(len(np.load(f)) for f in third.rglob("keys.npy"))
    full_rows = sum(len(np.load(f)) for f in ckpts[0].rglob("keys.npy"))
    assert 0 < inc_rows  # a real increment, not an empty one, and not a copy of everything held
    assert inc_rows < sum(len(np.load(f)) for f in ckpts[3].rglob("keys.npy")) and full_rows > 0
    again = _resume(mode, cfg, cut.path, third)
    assert again["checkpoints"]["resumed_from_step"] == 12
    assert again["checkpoints"]["kinds"][0] == "full"  # step-12's chain is 3 long: the next one is full
    a, b = _model_arrays(whole.path), _model_arrays(again.path)
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)  # versions too: the same global steps
    assert again.auc == whole.auc
