"""`psrec compare --repeats N`: medians with 95% intervals, and the differences the repeats do
not separate are marked (golden figures for the interval, a real two-repeat run)."""
import json
import math

import pytest

from psrec.cli import main
from psrec.commands.compare import combine_repeats, mark_unseparated, table_text, unseparated_groups
from psrec.report.intervals import Interval, interval, separated, t_quantile


def test_interval_golden_figures():
    # [1, 2, 3]: mean 2, sample sd 1, t(0.975, 2 df) = 4.303 -> half-width 4.303 / sqrt(3) = 2.4843
    iv = interval([3.0, 1.0, 2.0])
    assert iv.median == 2.0
    assert iv.low == pytest.approx(2 - 2.48434, abs=1e-4) and iv.high == pytest.approx(2 + 2.48434, abs=1e-4)
    # even count: the median is the middle pair's mean; [10, 12, 14, 20]: mean 14, sd 4.320, t(3) = 3.182
    iv = interval([20, 10, 14, 12])
    assert iv.median == 13.0 and iv.half_width == pytest.approx(3.182 * 4.3205 / 2, rel=1e-4)
    assert interval([5.0]) == (5.0, 5.0, 5.0)
    assert interval([math.nan, 4.0]) == (4.0, 4.0, 4.0)
    assert all(math.isnan(v) for v in interval([]))
    assert t_quantile(1) == 12.706 and t_quantile(30) == 2.042
    assert t_quantile(60) == pytest.approx(2.000, abs=0.002) and t_quantile(120) == pytest.approx(1.980, abs=0.002)
    with pytest.raises(ValueError, match="degrees of freedom"):
        t_quantile(0)
    assert separated(Interval(1, 0.5, 1.5), Interval(3, 2.0, 4.0))
    assert not separated(Interval(1, 0.5, 2.5), Interval(3, 2.0, 4.0))


def _rep(mode, sps, auc=0.7):
    return {"mode": mode, "samples_per_s": sps, "step_mean_ms": 1e6 / sps, "step_p50_ms": 1e6 / sps,
            "step_p95_ms": 1e6 / sps, "comm_pct": 10.0, "bytes_per_step": 100, "auc": auc, "logloss": 0.5,
            "phases_ms": {"compute": 1e6 / sps}, "wall_seconds": 1.0, "run_dir": f"/r/{mode}"}


def test_repeats_combine_into_medians_and_mark_what_they_do_not_separate():
    # a and b overlap in samples/s; c is far above both; AUC is identical for all (one group)
    rows = [combine_repeats([_rep("a", 100), _rep("a", 104), _rep("a", 96)]),
            combine_repeats([_rep("b", 103), _rep("b", 99), _rep("b", 107)]),
            combine_repeats([_rep("c", 200), _rep("c", 201), _rep("c", 199)])]
    assert rows[0]["samples_per_s"] == 100 and rows[1]["samples_per_s"] == 103 and rows[0]["repeats"] == 3
    assert rows[0]["bytes_per_step"] == 100 and isinstance(rows[0]["bytes_per_step"], int)
    assert rows[2]["phases_ms"]["compute"] == pytest.approx(1e6 / 200)
    assert [r["samples_per_s"] for r in rows[2]["per_repeat"]] == [200, 201, 199]
    groups = unseparated_groups(rows)
    assert groups["samples_per_s"] == [["a", "b"]]
    assert groups["auc"] == [["a", "b", "c"]]  # zero-width intervals at one value: all touch
    mark_unseparated(rows)
    assert "samples_per_s" in rows[0]["unseparated"] and "samples_per_s" not in rows[2]["unseparated"]
    text = table_text(rows)
    assert "samples/s: a ~ b" in text and "±" in text
    assert "medians of 3 repeats" in text


def test_compare_with_two_repeats_writes_both_and_their_intervals(ray_session, tmp_path, capsys):
    rc = main(["compare", "--rows", "512", "--name", "rep", "--repeats", "2", "--modes", "local,ps-async",
               "--set", "data.eval_rows=256", "--set", "data.batch_size=64", "--set", "synthetic.num_fields=6",
               "--set", "synthetic.num_dense=2", "--set", "model.params.hidden=[8]", "--set", "train.progress=false",
               "--set", "ps.metrics_port=-1", "--set", f"run.dir={tmp_path}"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "medians of 2 repeats" in out and "±" in out
    run_dir = tmp_path / "rep"
    rows = {r["mode"]: r for r in json.loads((run_dir / "compare.json").read_text())["modes"]}
    for mode, r in rows.items():
        assert r["repeats"] == 2 and len(r["per_repeat"]) == 2, mode
        for rep in (1, 2):
            assert (run_dir / f"repeat-{rep}" / mode / "results.json").is_file(), mode
        med, lo, hi = r["intervals"]["samples_per_s"]
        seen = sorted(p["samples_per_s"] for p in r["per_repeat"])
        assert med == pytest.approx(sum(seen) / 2) and lo <= min(seen) and hi >= max(seen), mode
    assert rows["local"]["auc"] == pytest.approx(rows["local"]["per_repeat"][0]["auc"])  # same job each time
    assert "repeats: every mode ran 2 times" in (run_dir / "report.md").read_text()


def test_compare_refuses_zero_repeats(capsys):
    assert main(["compare", "--repeats", "0"]) == 2
    assert "--repeats 0" in capsys.readouterr().err
