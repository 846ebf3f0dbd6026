"""Single-process training end to end: CLI, run directory, results, and learning."""
import json

import pytest

from psrec.cli import main
from psrec.config import load_config
from psrec.core.local import run_local

SMALL = ["synthetic.num_fields=8", "synthetic.num_dense=3", "data.eval_rows=20000",
         "train.progress=false"]


def test_cli_train_writes_run_dir(tmp_path, capsys):
    rc = main(["train", "--model", "lr", "--rows", "4000", "--set", f"run.dir={tmp_path}",
               *[a for s in SMALL for a in ("--set", s)]])
    assert rc == 0
    out = capsys.readouterr().out
    assert "auc" in out and "samples_per_s" in out
    (run,) = tmp_path.iterdir()
    res = json.loads((run / "results.json").read_text())
    for key in ("auc", "logloss", "samples_per_s", "phases", "planted_auc"):
        assert key in res
    for phase in ("data", "lookup", "compute", "apply"):
        assert res["phases"][phase] > 0
    assert load_config(run / "config.toml").model.name == "lr"


def test_interactions_beat_logistic_regression(tmp_path):
    """On planted interactions an FM-style model must clearly beat LR (the data's purpose)."""
    over = SMALL + ["data.train_rows=120000", "data.batch_size=512", f"run.dir={tmp_path}"]
    lr = run_local(load_config(None, over + ["model.name=lr"]))
    fm = run_local(load_config(None, over + ["model.name=deepfm", "model.params.hidden=[32]"]))
    assert fm["planted_auc"] > fm["auc"] > lr["auc"] + 0.01
    assert lr["auc"] > 0.6


def test_criteo_sample_trains_and_reports_malformed(tmp_path, shared_data, capsys):
    bad = tmp_path / "criteo.txt"
    lines = (shared_data / "criteo_sample.txt").read_text().splitlines()
    bad.write_text("\n".join(lines[:50] + ["1,2,3"] + lines[50:]) + "\n")
    rc = main(["train", "--model", "fm", "--set", "data.source=criteo", "--set", f"data.path={bad}",
               "--set", f"run.dir={tmp_path / 'runs'}", "--set", "data.batch_size=32",
               "--set", "train.progress=false"])
    assert rc == 0
    assert "malformed" in capsys.readouterr().out
    (run,) = (tmp_path / "runs").iterdir()
    res = json.loads((run / "results.json").read_text())
    assert res["malformed_lines"][0]["line_no"] == 51
    assert res["train_rows"] + res["eval_rows"] == 200


def test_strict_mode_fails_on_malformed(tmp_path, shared_data):
    bad = tmp_path / "criteo.txt"
    lines = (shared_data / "criteo_sample.txt").read_text().splitlines()
    bad.write_text("\n".join(lines[:5] + ["1,x"] + lines[5:]) + "\n")
    cfg = load_config(None, ["data.source=criteo", f"data.path={bad}", "data.strict=true",
                             f"run.dir={tmp_path}", "train.progress=false"])
    with pytest.raises(ValueError, match="line 6"):
        run_local(cfg)


def test_refinement_module_in_front_of_any_model(tmp_path):
    res = run_local(load_config(None, SMALL + ["model.name=dnn", "model.refine=senet", "data.train_rows=4000",
                                               "model.refine_params.reduction_ratio=2", f"run.dir={tmp_path}"]))
    assert res["auc"] > 0.5
