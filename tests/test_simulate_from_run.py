"""One schema for `psrec simulate`: a training config plus [cluster], `--from-run` on a measured
run (in-process PS, seconds), the published DLRM reproduction's config, and sweeps that apply
`cluster.hardware`."""
import json
from pathlib import Path

import pytest

from psrec.config_io import ConfigError

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = ROOT / "configs" / "published_dlrm_v100.toml"
TRAIN = """
[data]
train_rows = 2048
eval_rows = 256
batch_size = 128
[model]
name = "deepfm"
[ps]
workers = 2
num_ps = 1
transport = "inprocess"
metrics_port = -1
[train]
threads = 1
progress = false
"""


def test_training_config_plus_cluster(tmp_path, capsys):
    from psrec.cli import main
    from psrec.commands.simulate import load_spec
    from psrec.config import load_config
    from psrec.core.plan import plan_model

    f = tmp_path / "run.toml"
    f.write_text(TRAIN + '[cluster]\nworkers = 64\nnet = "bandwidth=25Gbit,latency=20us"\n')
    spec = load_spec(f, ["data.batch_size=256", "cluster.ps=4"])
    cfg = load_config(None, ["data.train_rows=2048", "data.batch_size=256"])
    mp = plan_model(cfg)
    # dense parameters from the model the registry builds; one sim table per (table, field)
    assert spec.model.dense_params == sum(p.numel() for p in mp.model.parameters())
    assert len(spec.model.tables) == sum(len(t.fields) for t in mp.tables)
    assert [t.rows for t in spec.model.tables[:3]] == list(cfg.synthetic.field_cardinalities[:3])
    assert spec.data.zipf_per_table[:3] == tuple(cfg.synthetic.field_zipf[:3])
    # [cluster] wins over [ps]; --set routes training keys to the config, cluster keys to the spec
    assert (spec.cluster.workers, spec.cluster.ps, spec.model.batch_size) == (64, 4, 256)
    assert spec.cluster.net.bandwidth == pytest.approx(25e9 / 8) and spec.cluster.cores == 0
    assert main(["simulate", "--config", str(f), "--json", "--mode", "ps-async"]) == 0
    assert json.loads(capsys.readouterr().out)["ps-async"]["step_s"] > 0


def test_keys_that_fit_neither_schema_are_named(tmp_path):
    from psrec.commands.simulate import load_spec

    f = tmp_path / "x.toml"
    f.write_text("[model]\nfoo = 3\n")
    with pytest.raises(ConfigError, match="model.foo fits neither schema"):
        load_spec(f)
    f.write_text("[model]\ndense_params = 3\n[ps]\nworkers = 2\n")
    with pytest.raises(ConfigError, match=r"mixes the training schema \(\[ps\]\).*model.dense_params"):
        load_spec(f)
    f.write_text("[clutser]\nworkers = 2\n")
    with pytest.raises(ConfigError, match=r"unknown section \[clutser\]"):
        load_spec(f)
    f.write_text(TRAIN + "[cluster]\nwrokers = 2\n")
    with pytest.raises(ConfigError, match="cluster.wrokers"):
        load_spec(f)


@pytest.fixture(scope="module")
def ps_run(tmp_path_factory):
    import psrec

    d = tmp_path_factory.mktemp("runs")
    f = d / "run.toml"
    f.write_text(TRAIN)
    cfg = psrec.load_config(f, [f'run.dir="{d}"', 'run.name="ps-w2"'])
    res = psrec.train(cfg, mode="ps")
    return Path(res.path)


def test_from_run_measured_vs_predicted_then_elsewhere(ps_run, capsys):
    from psrec.cli import main
    from psrec.sim.results_map import load_run

    assert main(["simulate", "--from-run", str(ps_run), "--json", "--cores", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["mode"] == "ps-async" and "fitted on this run itself" in out["calibration"]
    rows = {r["phase"]: r for r in out["here"]}
    assert set(rows) == {"compute", "pull", "push", "wait", "step", "comm %"}
    measured = load_run(ps_run / "results.json", 2.0)["measured"]
    assert rows["step"]["measured_ms"] == pytest.approx(1e3 * measured["step"])
    assert rows["comm %"]["measured_ms"] == pytest.approx(100 * measured["comm_fraction"])
    # in-sample, through the origin: one run's compute is fitted exactly
    assert rows["compute"]["predicted_ms"] == pytest.approx(rows["compute"]["measured_ms"], rel=1e-6)
    assert main(["simulate", "--from-run", str(ps_run), "--json", "--calibration", "defaults"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert "default constants" in out["calibration"]
    # the default 0.1 ms/sample: 128 samples = 12.8 ms of compute per step (cores = this machine's)
    assert {r["phase"]: r for r in out["here"]}["compute"]["predicted_ms"] > 0
    assert main(["simulate", "--from-run", str(ps_run), "--json", "--set", "cluster.workers=256",
                 "--set", "cluster.hardware=h100-ib400"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["elsewhere"]["gpu"]["step_s"] > 0 and out["elsewhere"]["fits"]
    assert main(["simulate", "--from-run", str(ps_run), "--workers", "64", "--set", "cluster.ps=8"]) == 0
    text = capsys.readouterr().out
    assert "measured ms" in text and "elsewhere: 64 workers" in text and "ps-sync" in text


def test_from_run_refuses_what_it_cannot_use(ps_run, tmp_path, capsys):
    from psrec.cli import main

    assert main(["simulate", "--from-run", str(tmp_path)]) == 2
    assert "config.toml and results.json" in capsys.readouterr().err
    assert main(["simulate", "--from-run", str(ps_run), "--sweep", "workers=1,2"]) == 2
    assert main(["simulate", "--from-run", str(ps_run), "--set", "cluster.wrokers=3"]) == 2
    assert "wrokers" in capsys.readouterr().err


def test_published_dlrm_config_loads_and_predicts(capsys):
    from psrec.cli import main
    from psrec.sim.hardware import get_hardware

    assert main(["simulate", "--config", str(PUBLISHED), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["fits"] and out["reference"]["samples_per_s"] == 875_000
    # golden compute: B flops / (peak x efficiency) + launch overhead + the dense optimizer's HBM traffic
    # + the eager release's interaction padding (27 vectors computed as 64 x 64 tiles, width 128)
    v = get_hardware("v100-dgx1")
    compute = 32768 * 14_779_398 / (125e12 * 0.4) + 5e-4 + 2 * 2_369_921 * 12 / 900e9
    compute += 32768 * 3 * 2 * (64 * 64 - 27 * 27) * 128 / (125e12 * 0.4)
    assert (v.peak_flops, v.hbm_bandwidth, v.hbm_bytes) == (125e12, 900e9, 32e9)
    assert out["collective"]["compute_ms"] == pytest.approx(1e3 * compute)
    assert out["collective"]["samples_per_s"] > 0  # the error against the reference is reported, not asserted


def test_sweep_applies_the_hardware():
    from psrec.sim.config import SimSpec
    from psrec.sim.costs import simulate
    from psrec.sim.hardware import apply_hardware
    from psrec.sim.sweep import set_input, sweep

    spec = set_input(SimSpec(), "cluster.hardware", "cpu-xeon2017-100g")
    res = sweep(spec, "workers", [16, 32], ("ps-async",))
    want = simulate(apply_hardware(set_input(spec, "workers", 32)), ("ps-async",))["ps-async"]
    assert res.costs["ps-async"][1].total == pytest.approx(want.total)
    plain = simulate(set_input(SimSpec(), "workers", 32), ("ps-async",))["ps-async"]
    assert want.total != pytest.approx(plain.total)  # 100 Gbit, not the default 10 Gbit
    hw = sweep(SimSpec(), "cluster.hardware", ["cpu-xeon2017-10g", "cpu-xeon2017-100g"], ("ps-async",))
    assert hw.costs["ps-async"][1].total < hw.costs["ps-async"][0].total
    with pytest.raises(ValueError, match="GPU node"):
        sweep(SimSpec(), "cluster.hardware", ["h100-ib400"], ("ps-async",))
    with pytest.raises(ValueError, match="sets cluster.net.bandwidth"):
        sweep(spec, "bandwidth", ["1Gbit"], ("ps-async",))
