"""Checkpoints are complete or absent, verified on reading; resume equals an uninterrupted
run; every run saves a model that predicts with the run's AUC. Kill tests use real processes."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import psrec
from psrec.core import checkpoint
from psrec.core.checkpoint import CheckpointError
from psrec.ev import EmbeddingVariable, EVConfig, load_snapshot

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["synthetic.num_fields=6", "synthetic.num_dense=2", "embedding.dim=4", "model.params.hidden=[8]",
         "data.batch_size=64", "data.eval_rows=512", "train.progress=false", "ps.metrics_port=-1",
         "collective.metrics_port=-1"]
PLAIN_SGD = ["embedding.optimizer.name=sgd", "embedding.optimizer.lr=0.5", "train.optimizer=sgd", "train.lr=0.1"]


def _write(root, step, payload=b"x" * 100):
    def files(d):
        (d / "a").mkdir()
        (d / "a" / "blob.bin").write_bytes(payload)
        return {"what": "test"}

    return checkpoint.write_checkpoint(root, step, files, keep=3)


def test_a_checkpoint_verifies_and_old_ones_are_pruned(tmp_path):
    for step in (2, 4, 6, 8):
        _write(tmp_path, step)
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == ["step-000000004", "step-000000006",
                                                                       "step-000000008"]
    m = checkpoint.verify(checkpoint.latest(tmp_path))
    assert m["step"] == 8 and m["holds"] == {"what": "test"} and "a/blob.bin" in m["files"]


@pytest.mark.parametrize("damage, message", [
    (lambda p, m: (p / "a" / "blob.bin").write_bytes(b"y" * 100), "fails its sha256"),
    (lambda p, m: (p / "a" / "blob.bin").write_bytes(b"x" * 99), "has 99 bytes"),
    (lambda p, m: (p / "a" / "blob.bin").unlink(), "is missing"),
    (lambda p, m: m.update(format_version="1"), "format_version must be a positive integer"),
    (lambda p, m: m.update(format_version=2), "newer than this reader"),
    (lambda p, m: m["files"].update({"../../etc/passwd": {"sha256": "0", "bytes": 1}}), "outside the checkpoint"),
    (lambda p, m: m["files"].update({"/etc/passwd": {"sha256": "0", "bytes": 1}}), "outside the checkpoint"),
    (lambda p, m: m.update(format="something-else"), "expected 'psrec-checkpoint'"),
])
def test_verify_refuses_a_damaged_checkpoint(tmp_path, damage, message):
    p = _write(tmp_path, 3)
    mf = p / checkpoint.MANIFEST
    m = json.loads(mf.read_text())
    damage(p, m)
    mf.write_text(json.dumps(m))
    with pytest.raises(CheckpointError, match=message):
        checkpoint.verify(p)
    assert checkpoint.latest(tmp_path) is None  # a damaged checkpoint is never the one resumed from


def test_latest_skips_a_damaged_newest_checkpoint(tmp_path):
    _write(tmp_path, 1)
    newest = _write(tmp_path, 2)
    (newest / "a" / "blob.bin").write_bytes(b"z" * 100)
    assert checkpoint.latest(tmp_path).name == "step-000000001"


def _ev(rows=200):
    ev = EmbeddingVariable(EVConfig(dim=4), name="t")
    keys = np.arange(rows, dtype=np.int64)
    ev.apply_gradients(keys, np.ones((rows, 4), np.float32), np.ones(rows, np.int64), step=1)
    return ev


@pytest.mark.parametrize("field, bad, message", [
    ("values", np.nan, "non-finite"),
    ("freqs", -3, "negative freq"),
    ("slot.accum", -1.0, "slot 'accum' is negative"),
])
def test_an_export_with_impossible_values_is_refused(tmp_path, field, bad, message):
    ev = _ev()
    ev.export(tmp_path / "t", evict=False)
    f = tmp_path / "t" / f"{field}.npy"
    a = np.load(f)
    a.flat[7] = bad
    np.save(f, a)
    with pytest.raises(ValueError, match=message):
        load_snapshot(tmp_path / "t")


_WRITER = """
import sys, numpy as np
from psrec.core import checkpoint
from psrec.ev import EVConfig, EmbeddingVariable
root, export = sys.argv[1], sys.argv[2]
rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 1 << 62  # bounded: the next writer after the kills
ev = EmbeddingVariable(EVConfig(dim=16), name="t")
keys = np.arange(40000, dtype=np.int64)
step = 0
print("ready", flush=True)
while step < rounds:
    step += 1
    ev.apply_gradients(keys, np.full((len(keys), 16), 0.01, np.float32), np.ones(len(keys), np.int64), step)
    checkpoint.write_checkpoint(root, step, lambda d: (ev.export(d / "t", evict=False), {"step": step})[1])
    ev.export(export, evict=False)  # the plain EV export, replaced in place every round
"""


def test_sigkill_while_writing_never_leaves_a_broken_checkpoint(tmp_path):
    """12 SIGKILLs of a real process at random moments while it writes checkpoints and replaces
    an EV export: afterwards every listed checkpoint verifies and the export always loads, and
    the next writer reclaims every temporary directory the killed ones left."""
    rng = np.random.default_rng(0)
    root, export = tmp_path / "ckpt", tmp_path / "export"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    kills = 0
    for i in range(12):
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(root), str(export)], stdout=subprocess.PIPE,
                                env=env)
        assert proc.stdout.readline().strip() == b"ready"
        if i == 0:  # let one checkpoint complete first (numba compiles on the first apply)
            deadline = time.monotonic() + 120
            while not checkpoint.list_checkpoints(root) and time.monotonic() < deadline:
                time.sleep(0.02)
        time.sleep(float(rng.uniform(0.05, 0.6)))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        kills += 1
        for p in checkpoint.list_checkpoints(root):
            checkpoint.verify(p)  # raises on a broken one
        if export.exists() or (export.parent / ".export.previous").exists():
            assert len(load_snapshot(export)) == 40000
    assert kills == 12 and checkpoint.latest(root) is not None
    subprocess.run([sys.executable, "-c", _WRITER, str(root), str(export), "1"], env=env, check=True,
                   stdout=subprocess.DEVNULL, timeout=300)
    assert [p.name for p in [*root.glob(".tmp-*"), *tmp_path.glob(".export*")]] == []


def _params(model_dir: Path) -> dict[str, np.ndarray]:
    """Every array of a saved model, by relative path."""
    return {str(p.relative_to(model_dir)): np.load(p) for p in sorted(model_dir.rglob("*.npy"))}


def _assert_same_model(a: Path, b: Path) -> None:
    pa, pb = _params(psrec.core.saved_model.find_model(a)), _params(psrec.core.saved_model.find_model(b))
    assert sorted(pa) == sorted(pb)
    for k in pa:
        if k.endswith("versions.npy"):
            continue
        np.testing.assert_array_equal(pa[k], pb[k], err_msg=k)


@pytest.mark.parametrize("mode, extra", [
    ("local", ["data.train_rows=1536", "data.epochs=2"]),  # Adam dense, Adagrad tables: optimizer state too
    ("ps", PLAIN_SGD + ["data.train_rows=1536", "ps.transport=inprocess", "ps.sync=true", "ps.workers=2",
                        "ps.num_ps=2"]),
    ("ps", ["data.train_rows=1536", "ps.transport=inprocess", "ps.sync=true", "ps.workers=2", "ps.num_ps=1",
            "ps.dense=allreduce"]),
])
def test_resume_from_a_checkpoint_equals_the_uninterrupted_run(mode, extra, tmp_path):
    import psrec.core.saved_model  # noqa: F401 - _assert_same_model reads through it

    whole = psrec.train(psrec.load_config(overrides=SMALL + extra + [f"run.dir={tmp_path}", "run.name=whole"]), mode)
    cfg = psrec.load_config(overrides=SMALL + extra + [f"run.dir={tmp_path}", "run.name=cut",
                                                       "run.checkpoint_every_steps=4", "run.keep_checkpoints=20"])
    cut = psrec.train(cfg, mode)
    assert cut["checkpoints"]["written"] >= 2
    _assert_same_model(whole.path, cut.path)  # checkpointing itself changes nothing
    # Resume from the first checkpoint, as if the run had died right after it.
    first = checkpoint.list_checkpoints(Path(cut.path) / "checkpoints")[0]
    again = (psrec.core.local.run_local(cfg, cut.path, resume_from=first) if mode == "local"
             else psrec.ps.runner.run_ps(cfg, cut.path, resume_from=first))
    step = checkpoint.verify(first)["step"]
    assert again["checkpoints"]["resumed_from_step"] == step and 0 < step < again.steps + step
    _assert_same_model(whole.path, again.path)
    assert again.auc == pytest.approx(whole.auc, abs=1e-9)


def test_a_killed_sync_ps_run_resumes_bit_identical(tmp_path):
    """The oracle with a real kill: `psrec train --mode ps --sync` (plain SGD) is SIGKILLed once
    its second checkpoint exists, `psrec train --resume` finishes it, and its model equals an
    uninterrupted run's, array for array."""
    import psrec.core.saved_model  # noqa: F401

    sets = SMALL + PLAIN_SGD + ["data.train_rows=6144", "ps.transport=inprocess", "ps.num_ps=2",
                                f"run.dir={tmp_path}"]
    args = [a for s in sets for a in ("--set", s)]
    whole = psrec.train(psrec.load_config(overrides=sets + ["run.name=whole", "ps.sync=true", "ps.workers=2"]), "ps")
    cmd = [sys.executable, "-m", "psrec.cli", "train", "--mode", "ps", "--sync", "--workers", "2", *args,
           "--set", "run.name=killed", "--set", "run.checkpoint_every_steps=8",
           "--set", 'stragglers.factors="0:3x"']  # slower, so that the kill lands mid-run
    proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    ckpts = tmp_path / "killed" / "checkpoints"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(checkpoint.list_checkpoints(ckpts)) < 2 and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert len(checkpoint.list_checkpoints(ckpts)) >= 2, "the run ended before its second checkpoint"
    assert not (tmp_path / "killed" / "results.json").exists()  # it really was cut short
    rc = subprocess.run([sys.executable, "-m", "psrec.cli", "train", "--resume", str(tmp_path / "killed"),
                         "--set", 'stragglers.factors=""'], env={**os.environ, "PYTHONPATH": str(ROOT)},
                        capture_output=True, text=True, timeout=300)
    assert rc.returncode == 0, rc.stderr[-2000:]
    assert "resumed ps-sync" in rc.stdout
    _assert_same_model(whole.path, tmp_path / "killed")


@pytest.mark.parametrize("mode, extra", [
    ("local", []),
    ("ps", ["ps.transport=inprocess", "ps.workers=2", "ps.num_ps=2"]),
    ("collective", ["collective.transport=inprocess", "collective.workers=2"]),
])
def test_the_saved_model_predicts_with_the_runs_auc(mode, extra, tmp_path):
    cfg = psrec.load_config(overrides=SMALL + extra + ["data.train_rows=2048", f"run.dir={tmp_path}", "run.name=r"])
    res = psrec.train(cfg, mode)
    out = tmp_path / "exported"
    from psrec.cli import main

    assert main(["export", res.path, str(out)]) == 0
    assert main(["export", res.path, str(out)]) == 2  # never overwrites
    model = psrec.load_model(str(out))
    from psrec.data.factory import make_source

    r = res["ranges"]
    got = model.evaluate(make_source(cfg), r["eval_start"], r["eval_end"])
    assert got["auc"] == pytest.approx(res.auc, abs=1e-9) and got["logloss"] == pytest.approx(res.logloss, abs=1e-7)


def test_a_mode_without_checkpoints_says_so_and_trains(tmp_path, capsys):
    cfg = psrec.load_config(overrides=SMALL + ["data.train_rows=1024", f"run.dir={tmp_path}",
                                               "collective.transport=inprocess", "collective.workers=2",
                                               "collective.data=queue", "run.checkpoint_every_steps=2"])
    res = psrec.train(cfg, "collective")
    assert "cannot be checkpointed yet" in capsys.readouterr().err
    assert res["checkpoints"]["written"] == 0 and not (Path(res.path) / "checkpoints").exists()
