"""`psrec longtail --mode sync` on a tiny job, in process: every scenario runs, the last line
has the issue's figures, results.json holds them, and the picture is drawn."""
from __future__ import annotations

import json
import re

import pytest


def test_longtail_sync_mode_in_process(tmp_path, capsys):
    from psrec.cli import main

    rc = main(["longtail", "--mode", "sync", "--workers", "2", "--straggler", "1:4x", "--rows", "3000",
               "--staleness", "2", "--backup", "1", "--model", "lr", "--set", "synthetic.num_fields=8",
               "--set", "synthetic.num_dense=3", "--set", "data.batch_size=125", "--set", "data.eval_rows=1000",
               "--set", "collective.transport=\"inprocess\"", "--set", "ps.transport=\"inprocess\"",
               "--set", f"run.dir={tmp_path}", "--name", "sync"])
    assert rc == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    m = re.fullmatch(r"sync_vs_ideal=(\S+) proportional_vs_ideal=(\S+) backup_vs_ideal=(\S+) ssp2_vs_ideal=(\S+) "
                     r"auc_delta_proportional=(\S+) ps_sync_vs_ideal=(\S+) ps_proportional_vs_ideal=(\S+) "
                     r"ps_backup_vs_ideal=(\S+)", last)
    assert m, last
    res = json.loads((tmp_path / "sync" / "results.json").read_text())["sync"]
    sc = res["scenarios"]
    assert sorted(sc) == ["backup", "ideal", "proportional", "ps_backup", "ps_ideal", "ps_proportional", "ps_sync",
                          "ssp2", "sync"]
    assert float(m.group(2)) == pytest.approx(sc["proportional"]["vs_ideal"], abs=1e-3)
    # the same rows per step as the baseline: only float summation order differs
    assert abs(float(m.group(5))) < 2e-3
    prop = sc["proportional"]["rows_by_worker"]
    assert sum(prop) == 3000 and prop[1] < prop[0]  # the straggler trained fewer rows
    assert sc["backup"]["workers"] == 3 and sc["backup"]["dropped_rows_per_step"] == 125
    assert sc["ps_backup"]["workers"] == 3 and sc["ps_backup"]["dropped_rows_per_step"] == 125
    assert float(m.group(8)) == pytest.approx(sc["ps_backup"]["vs_ideal"], abs=1e-3)
    ps_prop = sc["ps_proportional"]["rows_by_worker"]
    assert sum(ps_prop) == 3000 and ps_prop[1] < ps_prop[0]
    assert sc["ideal"]["dropped_rows"] == 0 and sc["ssp2"]["staleness"] == 2
    assert [s["worker"] for s in sc["proportional"]["slow_workers"]] == [1]
    assert (tmp_path / "sync" / "sync" / "step_times.png").stat().st_size > 0
