"""`psrec validate-sim --address`: the testbed validation's pieces that need no root. The
prediction of testbed runs from one-node runs (here tiny in-process runs play both), its
refusals, and its summary line. The testbed itself runs in benchmarks/testbed_bench.py."""
import math
import re
from pathlib import Path

import pytest

from psrec.cli import main
from psrec.commands.validate_sim.testbed import (
    TESTBED_RUNS,
    TestbedRun,
    TestbedValidation,
    predict_runs,
    summary_line,
    validate_testbed,
)


def _tiny_run(tmp_path: Path, name: str, mode: str, bandwidth: str) -> Path:
    from collective.runner import run_collective
    from psrec.config import load_config
    from psrec.ps.runner import run_ps

    sets = ["data.train_rows=1536", "data.eval_rows=256", "data.batch_size=128", "train.threads=1",
            "train.progress=false", f'run.dir="{tmp_path}"', f'run.name="{name}"', "run.save_model=false"]
    if mode == "collective":
        sets += ["collective.workers=3", f'collective.net="bandwidth={bandwidth}"', 'collective.transport="inprocess"',
                 "collective.metrics_port=-1"]
    else:
        sets += ["ps.workers=3", "ps.num_ps=1", f"ps.sync={str(mode == 'ps-sync').lower()}",
                 f'ps.dense="{"allreduce" if mode == "hybrid" else "ps"}"', f'ps.net="bandwidth={bandwidth}"',
                 'ps.transport="inprocess"', "ps.metrics_port=-1"]
    cfg = load_config(None, sets)
    res = run_collective(cfg) if mode == "collective" else run_ps(cfg)
    return Path(res["run_dir"])


def test_testbed_runs_are_predicted_from_the_one_node_calibration(tmp_path):
    runs = []
    for name, (mode, w, p, _) in TESTBED_RUNS.items():
        d = _tiny_run(tmp_path, name, mode, "1Gbit")
        runs.append(TestbedRun(name, "1Gbit", mode, w, p, testbed=d, one_node=d))
    preds, summary = predict_runs(runs, cores=2.0)
    assert [p.name for p in preds] == [f"{n}@1Gbit" for n in TESTBED_RUNS]
    assert [p.mode for p in preds] == ["ps-async", "ps-sync", "hybrid", "collective"]
    assert all(p.measured_step > 0 and p.predicted_step > 0 and 0 <= p.predicted_comm <= 1 for p in preds)
    assert summary.configs == 4 and math.isfinite(summary.median_step_err)
    # every prediction uses the one calibration fitted on the one-node runs
    assert len({id(p.calibration) for p in preds}) == 1
    v = TestbedValidation(4, runs, preds, summary, {"sync-w3-ps1@1Gbit": 0.9, "async-w3-ps1@1Gbit": 0.8})
    assert re.fullmatch(r"testbed_nodes=4 median_step_err=\d\.\d{3} max_commfrac_err_pts=\d+\.\d{2} "
                        r"ranking_preserved=[01] nic_util=0\.900", summary_line(v)), summary_line(v)


def test_address_that_is_no_testbed_is_refused_in_one_line_and_makes_nothing(tmp_path, capsys):
    assert main(["validate-sim", "--address", "10.9.9.9:6379", "--run-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not the head of a testbed" in err[0]
    assert list(tmp_path.iterdir()) == []


def test_unknown_configuration_is_refused_before_any_training(tmp_path, monkeypatch):
    import psrec.cluster.testbed as testbed

    monkeypatch.setattr(testbed, "find_by_address", lambda addr: object())
    with pytest.raises(ValueError, match="unknown testbed configuration.*nope"):
        validate_testbed("10.9.9.9:6379", tmp_path, ["sync-w3-ps1", "nope"])
    assert list(tmp_path.iterdir()) == []
