"""`psrec compare` on a tiny job: every mode runs, the table prints, the report and its
pictures are written (on the suite's one Ray: the ray_session fixture)."""
import json

from psrec.cli import main
from psrec.commands.compare import MODES, TABLE_HEADERS


def test_compare_runs_every_mode_and_writes_the_report(ray_session, tmp_path, capsys):
    rc = main(["compare", "--rows", "1024", "--name", "cmp", "--repeats", "1", "--net", "bandwidth=20Mbit,latency=1ms",
               "--set", "data.eval_rows=512", "--set", "data.batch_size=128", "--set", "synthetic.num_fields=6",
               "--set", "synthetic.num_dense=2", "--set", "model.params.hidden=[16]", "--set", "train.progress=false",
               "--set", "ps.metrics_port=-1", "--set", f"run.dir={tmp_path}"])
    assert rc == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0].split()
    assert header[:2] == ["mode", "samples/s"] and "logloss" in header
    run_dir = tmp_path / "cmp"
    table = {r["mode"]: r for r in json.loads((run_dir / "compare.json").read_text())["modes"]}
    assert list(table) == list(MODES)
    for mode, r in table.items():
        assert r["samples_per_s"] > 0 and 0.3 < r["auc"] < 1.0, mode
        assert (run_dir / mode / "results.json").is_file(), mode
        assert r["train_rows"] == 1024, mode  # the same rows in every mode
    assert table["local"]["bytes_per_step"] == 0 and table["local"]["comm_pct"] == 0
    for mode in ("ps-async", "ps-sync", "hybrid", "collective"):
        assert table[mode]["bytes_per_step"] > 0 and table[mode]["comm_pct"] > 0, mode
        assert table[mode]["emulated_net_ms"] > 0, mode  # --net reaches every distributed mode
    # sync PS and collective both train on the union of the workers' batches: same model
    assert abs(table["ps-sync"]["auc"] - table["collective"]["auc"]) < 2e-3
    report = (run_dir / "report.md").read_text()
    assert "![where a step's time goes](time_breakdown.png)" in report and "![throughput](throughput.png)" in report
    assert all(h in report for h in TABLE_HEADERS)
    for png in ("time_breakdown.png", "throughput.png"):
        assert (run_dir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
