"""Hardware presets, user-defined hardware in TOML, and the GPU comparison of the design note."""
import json
import math
from pathlib import Path

import pytest

from psrec.sim.gpu_compare import cost_per_million
from psrec.sim.hardware import PRESETS, Hardware, get_hardware

GPU_NOTE = Path(__file__).resolve().parents[1] / "configs" / "design_note_gpu.toml"


def test_presets_and_their_links():
    assert {"cpu-xeon2017-10g", "cpu-xeon2017-25g", "cpu-xeon2017-100g", "a100-ib200", "h100-ib400"} <= set(PRESETS)
    h = get_hardware("h100-ib400")
    net = h.net()
    assert net.bandwidth == pytest.approx(8 * 400e9 / 8)  # the node's 8 NICs
    assert net.link(intra=True) == (450e9, 3e-6)
    assert get_hardware("cpu-xeon2017-25g").inter_bandwidth == pytest.approx(25e9 / 8)
    with pytest.raises(ValueError, match="unknown hardware 'b200'.*h100-ib400"):
        get_hardware("b200")
    with pytest.raises(ValueError, match="mlp_efficiency"):
        Hardware(name="x", mlp_efficiency=2.0)


def test_cost_per_million_golden():
    assert cost_per_million(4, 90.0, 5e5) == pytest.approx(4 * 90 / 3600 / 5e5 * 1e6)  # $0.2
    assert math.isnan(cost_per_million(4, 0.0, 5e5))


def test_user_hardware_from_toml(tmp_path, capsys):
    from psrec.cli import main

    cfg = tmp_path / "gpu.toml"
    cfg.write_text('[cluster]\nworkers = 4\nhardware = "my-gpu"\n[model]\nbatch_size = 1024\n'
                   '[[model.tables]]\nrows = 1000000\ndim = 16\nkeys_per_sample = 4\n'
                   '[[hardware]]\nname = "my-gpu"\ndevices_per_node = 4\npeak_flops = 1e14\nhbm_bytes = 1.6e10\n'
                   'hbm_bandwidth = 9e11\nhost_bandwidth = 1.2e10\nintra_bandwidth = 1.5e11\n'
                   'inter_bandwidth = 1.25e10\n')
    assert main(["simulate", "--config", str(cfg), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["fits"] and out["collective"]["step_s"] > 0 and len(out["plan"]) == 1
    cfg.write_text(cfg.read_text().replace("peak_flops", "peek_flops"))
    assert main(["simulate", "--config", str(cfg)]) == 2
    assert "peek_flops" in capsys.readouterr().err


def test_design_note_gpu_answers_the_question(capsys):
    from psrec.cli import main

    assert main(["simulate", "--config", str(GPU_NOTE), "--mode", "ps-async"]) == 0
    out = capsys.readouterr().out
    assert "GPU jobs vs the CPU cluster" in out and "h100-ib400: " in out and "a100-ib200: " in out
    rows = [line.split() for line in out.splitlines() if line.startswith(("h100-ib400 ", "a100-ib200 "))]
    assert len(rows) == 8 and all(r[-1] == "yes" for r in rows)
    # H100 steps are shorter than A100 steps at every size
    h100 = {r[1]: float(r[2]) for r in rows if r[0] == "h100-ib400"}
    a100 = {r[1]: float(r[2]) for r in rows if r[0] == "a100-ib200"}
    assert all(h100[g] < a100[g] for g in h100)


def test_gpu_job_from_set_and_unknown_hardware(capsys):
    from psrec.cli import main

    assert main(["simulate", "--config", str(GPU_NOTE), "--set", "cluster.hardware=h100-ib400",
                 "--set", "cluster.workers=16", "--set", "model.batch_size=4096"]) == 0
    out = capsys.readouterr().out
    assert "16 x h100-ib400" in out and "sharding" in out and "fits" in out
    assert main(["simulate", "--config", str(GPU_NOTE), "--set", "cluster.hardware=tpu"]) == 2
    assert "unknown hardware 'tpu'" in capsys.readouterr().err
