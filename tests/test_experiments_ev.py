"""The EV experiments end to end on tiny data: incremental (warm start) and filter-sweep."""
import json

import numpy as np
import pytest

from psrec.cli import main
from psrec.config import load_config
from psrec.data.synthetic import SyntheticConfig, SyntheticSource
from psrec.embedding.local import LocalStore
from psrec.experiments import (
    DropFields,
    FilterSetting,
    FilterSweepConfig,
    IncrementalConfig,
    export_bytes,
    run_incremental,
)

TINY = ["synthetic.num_fields=6", "synthetic.num_dense=2", "synthetic.interaction_fields=4",
        "synthetic.num_pairs=3", "synthetic.num_triples=1", "model.params.hidden=[16]",
        "data.batch_size=256", "train.progress=false"]


def _sets(items):
    return [a for s in items for a in ("--set", s)]


def _last_line_values(out: str) -> dict[str, str]:
    last = out.strip().splitlines()[-1]
    pairs = dict(tok.split("=", 1) for tok in last.split())
    assert pairs, last
    return pairs


def test_incremental_cli_writes_results_plot_and_migration(tmp_path, capsys):
    rc = main(["incremental", "--train-days", "2", "--eval-days", "2", "--rows", "3000",
               "--eval-rows", "1500",
               "--new-set", "model.params.hidden=[16,8]", "--drop-field", "C6",
               *_sets(TINY + [f"run.dir={tmp_path}"])])
    assert rc == 0
    out = capsys.readouterr().out
    (run,) = tmp_path.iterdir()
    res = json.loads((run / "results.json").read_text())
    assert (run / "auc_per_day.png").stat().st_size > 0
    assert load_config(run / "config_new.toml").model.params["hidden"] == [16, 8]
    assert [d["day"] for d in res["days"]] == [3, 4]
    vals = _last_line_values(out)
    assert vals["days"] == "2"
    for key in ("warm_auc", "cold_auc", "long_auc", "recovered_share"):
        assert float(vals[key]) == pytest.approx(res["summary"][key], abs=1e-3)
    # The migration report is real: rows of the dropped field dropped, the changed layer fresh.
    m = res["migration"]
    emb = next(t for t in m["tables"]["migrated"] if t["table"] == "emb")
    assert emb["rows_dropped"] > 0 and emb["rows_copied"] > 0
    assert any(name == "mlp.net.0.weight" for name, _, _ in m["dense"]["mismatched"])  # one field fewer in
    assert "mlp.net.4.weight" in m["dense"]["new"]  # the added layer's output
    assert "dropped" in out and "freshly initialised" in out


def test_warm_start_keeps_old_rows_and_beats_cold_on_first_day(tmp_path):
    cfg = load_config(None, TINY + [f"run.dir={tmp_path}"])
    exp = IncrementalConfig(train_days=2, eval_days=1, rows_per_day=5000, eval_rows=3000,
                            new_overrides=("model.params.hidden=[16,8]",))
    res = run_incremental(cfg, exp, run_dir=tmp_path)
    old_rows = {t: s["rows"] for t, s in res["old_tables"].items()}
    copied = {t["table"]: t["rows_copied"] for t in res["migration"]["tables"]["migrated"]}
    assert copied == old_rows and min(copied.values()) > 0  # every old row migrated, none dropped
    day = res["days"][0]
    assert day["warm_auc"] > day["cold_auc"] + 0.01
    assert res["summary"]["first_day_share"] == pytest.approx(
        (day["warm_auc"] - day["cold_auc"]) / (day["long_auc"] - day["cold_auc"]))


def test_incremental_rejects_unknown_field_before_training(tmp_path, capsys):
    rc = main(["incremental", "--drop-field", "C99", *_sets(TINY + [f"run.dir={tmp_path}"])])
    assert rc == 2
    assert "C99" in capsys.readouterr().err


def test_drop_fields_view_keeps_key_tags():
    src = SyntheticSource(SyntheticConfig(num_fields=4, num_dense=1, num_pairs=2, num_triples=1))
    view = DropFields(src, ("C2",))
    assert [f.name for f in view.schema.fields] == ["C1", "C3", "C4"]
    full, cut = src.read(10, 20), view.read(10, 20)
    np.testing.assert_array_equal(cut.keys, full.keys[:, [0, 2, 3]])
    np.testing.assert_array_equal(cut.labels, full.labels)


def test_filter_sweep_cli_filters_keep_fewer_rows(tmp_path, capsys):
    rc = main(["filter-sweep", "--rows", "6000", "--eval-rows", "2000", "--min-freq", "1,3", "--ttl", "0,4",
               "--evict-every", "3", *_sets(TINY + [f"run.dir={tmp_path}"])])
    assert rc == 0
    out = capsys.readouterr().out
    (run,) = tmp_path.iterdir()
    res = json.loads((run / "results.json").read_text())
    assert (run / "filter_sweep.png").stat().st_size > 0
    rows = {r["setting"]: r for r in res["settings"]}
    assert list(rows) == ["none", "ttl4", "mf3", "mf3+ttl4"]
    base = rows["none"]
    for name in ("ttl4", "mf3", "mf3+ttl4"):
        assert rows[name]["rows"] < base["rows"]
        assert rows[name]["bytes"] < base["bytes"]
    assert rows["mf3"]["waiting"] > 0 and rows["ttl4"]["evicted"] > 0
    assert base["bytes_share"] == 1.0 and base["auc_delta"] == 0.0
    vals = _last_line_values(out)
    assert vals["best_setting"] in rows
    assert float(vals["best_bytes_saved"]) == pytest.approx(res["summary"]["best_bytes_saved"], abs=1e-3)


def test_sweep_grid_puts_baseline_first():
    grid = FilterSweepConfig(min_freqs=(3, 1), ttls=(10, 0)).settings()
    assert grid[0] == FilterSetting() and len(grid) == len(set(grid)) == 4
    with pytest.raises(ValueError):
        FilterSweepConfig(evict_every=0)


def test_export_bytes_matches_export_files(tmp_path):
    """export_bytes counts what an export writes, less the .npy headers (<= 128 bytes a file)."""
    cfg = load_config(None, ["embedding.filter.kind=counter", "embedding.filter.min_freq=2"])
    store = LocalStore({"t": cfg.embedding.ev_config(4, 0)})
    keys = np.array([1, 2, 2, 3, 3, 3], np.int64)
    store.apply_gradients("t", keys, np.ones((6, 4), np.float32), np.ones(6, np.int64), step=1)
    store.export(tmp_path / "x")
    files = list((tmp_path / "x" / "t").glob("*.npy"))
    on_disk = sum(f.stat().st_size for f in files)
    assert 0 < on_disk - export_bytes(store) <= 128 * len(files)
