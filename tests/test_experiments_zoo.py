"""Experiments: the model zoo (and its xDeepInt G-FTRL run) and field-dimension optimisation."""
import json

import numpy as np
import pytest

from psrec.cli import main
from psrec.config import load_config
from psrec.data.synthetic import SyntheticConfig, SyntheticSource
from psrec.experiments.fdo import FDOConfig, pca_dim, run_fdo
from psrec.experiments.gftrl import GFTRLConfig, run_xdeepint_gftrl
from psrec.experiments.zoo import MaterializedSource, ZooConfig, zoo_entries
from psrec.metrics.auc import auc
from psrec.metrics.delong import delong_diff

TINY = ["synthetic.num_fields=5", "synthetic.num_dense=2", "synthetic.interaction_fields=4",
        "synthetic.num_pairs=4", "synthetic.num_triples=2",
        "data.batch_size=256", "train.progress=false", "embedding.dim=8"]


def _sets(items):
    return [a for s in items for a in ("--set", s)]


def test_zoo_command_trains_sorts_and_writes(tmp_path, capsys):
    rc = main(["zoo", "--models", "lr,fm,dnn", "--rows", "3000", "--eval-rows", "2000", "--refiners", "none",
               *_sets(TINY + [f"run.dir={tmp_path}"])])
    assert rc == 0
    out = capsys.readouterr().out
    assert "notes" in out and "planted model AUC" in out
    assert "xDeepInt" not in out  # the G-FTRL run is on only when xdeepint is trained
    (run,) = tmp_path.iterdir()
    res = json.loads((run / "results.json").read_text())
    rows = res["models"]
    assert sorted(r["model"] for r in rows) == ["dnn", "fm", "lr"]
    aucs = [r["auc"] for r in rows]
    assert aucs == sorted(aucs, reverse=True)
    assert [r["rank"] for r in rows] == [1, 2, 3]
    for r in rows:
        assert r["train_rows"] == 3000 and r["dense_params"] >= 1 and r["emb_params"] > 0
    assert next(r for r in rows if r["model"] == "dnn")["vs_dnn"] == 0.0
    assert (run / "table.txt").read_text().startswith("rank")


def test_zoo_entries_add_references_and_refiners():
    entries = zoo_entries(ZooConfig(models=("fm",), refiners=("frnet_b",)))
    assert [e.label for e in entries] == ["lr", "dnn", "fm", "dnn+frnet_b"]
    assert entries[-1].refine == "frnet_b" and entries[-1].model == "dnn"
    with pytest.raises(ValueError, match="unknown model"):
        ZooConfig(models=("nope",))


def test_materialized_source_serves_identical_rows():
    src = SyntheticSource(SyntheticConfig(num_fields=3, num_dense=1, num_pairs=1, num_triples=1))
    mem = MaterializedSource(src, 100)
    a, b = src.read(17, 60), mem.read(17, 60)
    np.testing.assert_array_equal(a.keys, b.keys)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert b.start == 17
    with pytest.raises(IndexError):
        mem.read(90, 101)


def test_delong_difference_matches_auc_and_is_zero_for_itself():
    rng = np.random.default_rng(0)
    y = (rng.random(400) < 0.3).astype(np.float32)
    s1, s2 = y + rng.normal(size=400), y + 2 * rng.normal(size=400)
    d, se = delong_diff(y, s1, s2)
    assert d == pytest.approx(auc(y, s1) - auc(y, s2))
    assert 0 < se < 0.1
    assert delong_diff(y, s1, s1) == (0.0, 0.0)


def test_gftrl_large_l1_zeroes_rows(tmp_path):
    cfg = load_config(None, TINY + [f"run.dir={tmp_path}"])
    rep = run_xdeepint_gftrl(cfg, GFTRLConfig(l1s=(1000.0,)), train_rows=3000, eval_rows=1000, log=lambda s: None)
    (g,) = rep.runs
    assert g["emb_rows"] > 0 and 0 < g["zero_rows"] < g["emb_rows"]
    assert rep.adagrad["zero_rows"] == 0  # Adagrad never makes a row exactly zero
    assert rep.adagrad["emb_rows"] == g["emb_rows"]  # same rows seen, same keys
    assert g["emb_params"] == (g["emb_rows"] - g["zero_rows"]) * 8
    assert "exactly 0" in rep.text()


def test_pca_dim_counts_components():
    rng = np.random.default_rng(1)
    basis = rng.normal(size=(3, 8))
    x = rng.normal(size=(300, 3)) @ basis  # rank 3
    assert pca_dim(x, None, 0.999)[0] == 3
    k, share = pca_dim(x, None, 0.5)
    assert 1 <= k <= 3 and share >= 0.5
    # weights: a row repeated n times == weight n
    w = rng.integers(1, 4, size=300)
    assert pca_dim(np.repeat(x, w, axis=0), None, 0.9) == pytest.approx(pca_dim(x, w, 0.9))
    assert pca_dim(np.ones((5, 4)), None, 0.9) == (1, 1.0)  # no variance: min_dim


def test_fdo_picks_smaller_dims_and_retrains(tmp_path):
    cfg = load_config(None, TINY + [f"run.dir={tmp_path}"])
    rep = run_fdo(cfg, FDOConfig(model="dnn", threshold=0.9, train_rows=3000, eval_rows=1000), log=lambda s: None)
    assert len(rep.fields) == 5
    assert all(1 <= f.dim_after <= f.dim_before == 8 for f in rep.fields)
    assert rep.after["emb_params"] <= rep.before["emb_params"]
    assert rep.after["train_rows"] == 3000 and 0.0 <= rep.after["auc"] <= 1.0
    dims = [f.dim_after for f in rep.fields]
    assert f"dims: {','.join(map(str, dims))}" in rep.text()


def test_fdo_refuses_models_that_need_one_width():
    with pytest.raises(ValueError, match="one embedding width"):
        FDOConfig(model="deepfm")
    FDOConfig(model="dcn_v2")


def test_fdo_command_writes_field_dims(tmp_path, capsys):
    rc = main(["fdo", "--rows", "2000", "--eval-rows", "1000", "--threshold", "0.8",
               *_sets(TINY + [f"run.dir={tmp_path}"])])
    assert rc == 0
    (run,) = tmp_path.iterdir()
    res = json.loads((run / "results.json").read_text())
    assert len(res["field_dims"]) == 5 and max(res["field_dims"]) <= 8
    # the chosen dims are a valid config for the next run
    load_config(None, [f"embedding.field_dims={res['field_dims']}"])
    assert "variance kept" in capsys.readouterr().out
