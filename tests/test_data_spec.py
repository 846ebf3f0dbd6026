"""The spec-driven reader: one feature spec over CSV, Parquet, libsvm and libFM files, many
files with train/valid/test splits, the source registry, bad input and
`psrec data inspect`."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import psrec
from psrec.cli import main
from psrec.config import ConfigError, load_config
from psrec.core.flat import flat_params
from psrec.core.local import build_local, predict_range, train_range
from psrec.data.base import concat_batches
from psrec.data.features import FeatureConfig
from psrec.data.libsvm import LibsvmSource
from psrec.data.parquet import ParquetSource
from psrec.data.registry import make_source, register_source
from psrec.data.tabular import FeatureCsvSource

sys.path.insert(0, str(Path(__file__).parent))
from data_planted import FEATURES, planted_csv  # noqa: E402

SPEC = (FeatureConfig("user"), FeatureConfig("item"), FeatureConfig("price", type="numeric"),
        FeatureConfig("tags", type="sequence"))
QUIET = ["train.progress=false", "ps.metrics_port=-1", "collective.metrics_port=-1"]


def _rows(n: int = 300, seed: int = 1):
    rng = np.random.default_rng(seed)
    return [(int(rng.random() < 0.4), int(rng.integers(0, 30)), int(rng.integers(0, 9)), round(float(rng.normal()), 4),
             sorted(set(rng.integers(0, 5, 2).tolist()))) for _ in range(n)]


def _write_all(tmp: Path, rows) -> dict[str, Path]:
    """The same rows as CSV, Parquet, libsvm (user: indices 0-29, item 30-38, price 39, tags
    40-44) and libFM (fields 0-3)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    csv = tmp / "d.csv"
    csv.write_text("clicked,user,item,price,tags\n" + "".join(
        f"{y},{u},{i},{p},{'|'.join(map(str, t))}\n" for y, u, i, p, t in rows))
    table = pa.table({"clicked": [r[0] for r in rows], "user": [r[1] for r in rows], "item": [r[2] for r in rows],
                      "price": [r[3] for r in rows], "tags": [[str(x) for x in r[4]] for r in rows]})
    pq.write_table(table, tmp / "d.parquet", row_group_size=70)  # batches straddle row groups
    (tmp / "d.svm").write_text("".join(
        f"{y} {u}:1 {30 + i}:1 39:{p} " + " ".join(f"{40 + x}:1" for x in t) + "\n" for y, u, i, p, t in rows))
    (tmp / "d.fm").write_text("".join(
        f"{y} 0:{u}:1 1:{i}:1 2:0:{p} " + " ".join(f"3:{x}:1" for x in t) + "\n" for y, u, i, p, t in rows))
    return {"csv": csv, "parquet": tmp / "d.parquet", "libsvm": tmp / "d.svm", "libfm": tmp / "d.fm"}


SVM_SPEC = (FeatureConfig("user", index=0, size=30), FeatureConfig("item", index=30, size=9),
            FeatureConfig("price", type="numeric", index=39), FeatureConfig("tags", type="sequence", index=40, size=5))
FM_SPEC = tuple(FeatureConfig(f.name, type=f.type, index=j) for j, f in enumerate(SPEC))


def _sources(paths):
    return {"csv": FeatureCsvSource(paths["csv"], SPEC, "clicked"),
            "parquet": ParquetSource(paths["parquet"], SPEC, "clicked"),
            "libsvm": LibsvmSource(paths["libsvm"], SVM_SPEC),
            "libfm": LibsvmSource(paths["libfm"], FM_SPEC, fmt="libfm")}


def _same(a, b):
    np.testing.assert_array_equal(a.keys, b.keys)
    np.testing.assert_array_equal(a.dense, b.dense)
    np.testing.assert_array_equal(a.labels, b.labels)
    for ra, rb in zip(a.multi, b.multi, strict=True):
        np.testing.assert_array_equal(ra.values, rb.values)
        np.testing.assert_array_equal(ra.offsets, rb.offsets)


def test_every_format_serves_the_same_batches(tmp_path):
    src = _sources(_write_all(tmp_path, _rows()))
    ref = src["csv"].read(0, 300)
    assert ref.keys.shape == (300, 2) and ref.dense.shape == (300, 1) and len(ref.multi) == 1
    for name, s in src.items():
        assert s.num_rows == 300 and s.schema == src["csv"].schema, name
        _same(s.read(0, 300), ref)
        _same(concat_batches(list(s.batches(0, 300, 64))), ref)  # any split of the range
        assert s.malformed_lines() == [], name


def test_every_format_trains_to_the_same_parameters(tmp_path):
    paths = _write_all(tmp_path, _rows())
    out = {}
    for name, s in _sources(paths).items():
        cfg = load_config(overrides=QUIET + ["model.name=deepfm", "model.params.hidden=[8]", "embedding.dim=4"])
        setup = build_local(cfg, s)
        train_range(setup.step, s, 0, 256, 32)
        out[name] = (flat_params(setup.model), predict_range(setup.step, s, 256, 300, 64)[1])
    for name, (dense, pred) in out.items():
        np.testing.assert_array_equal(dense, out["csv"][0], err_msg=name)
        np.testing.assert_array_equal(pred, out["csv"][1], err_msg=name)
    assert not np.allclose(out["csv"][1], out["csv"][1][0])  # it learned something row-specific


def test_transforms_max_len_and_presets_are_the_legacy_readers(shared_data):
    from psrec.data.criteo import CriteoSource
    from psrec.data.presets import preset_options

    a = FeatureCsvSource(shared_data / "criteo_sample.txt", **preset_options("criteo"))
    _same(a.read(0, 200), CriteoSource(shared_data / "criteo_sample.txt").read(0, 200))
    f = FeatureConfig("x", type="numeric", transform="log1p")
    with pytest.raises(ValueError, match="does not apply"):
        FeatureConfig("x", transform="log1p")
    assert f.column == "x"


def test_file_set_splits_per_file_in_the_result(tmp_path):
    rows = _rows(600)
    for i, part in enumerate((rows[:250], rows[250:450], rows[450:520], rows[520:])):
        _write_all(tmp_path, part)["csv"].rename(tmp_path / f"part{i}.csv")
    feats = ('data.features=[{name="user"}, {name="item"}, {name="price", type="numeric"}, '
             '{name="tags", type="sequence"}]')
    cfg = load_config(overrides=QUIET + [f"data.train_path={tmp_path}/part[01].csv",
                                         f"data.valid_path={tmp_path}/part2.csv",
                                         f"data.test_path={tmp_path}/part3.csv", "data.label=clicked", feats,
                                         "model.name=lr", "data.batch_size=50", f"run.dir={tmp_path / 'runs'}"])
    res = psrec.train(cfg, "local")
    sp = res.extra["splits"]
    assert [(Path(x["file"]).name, x["rows"]) for x in sp["train"]] == [("part0.csv", 250), ("part1.csv", 200)]
    assert [(Path(x["file"]).name, x["rows"]) for x in sp["valid"]] == [("part2.csv", 70)]
    assert [(Path(x["file"]).name, x["rows"]) for x in sp["test"]] == [("part3.csv", 80)]
    assert res.train_rows == 450 and res.eval_rows == 80 and res.extra["valid_eval_rows"] == 70
    assert sp["test_from"] == "test_path"
    again = load_config(res.path + "/config.toml")  # the resolved config, features included, reads back
    assert again.data.features == cfg.data.features


def test_malformed_lines_name_their_file_and_an_all_bad_batch_is_skipped(tmp_path):
    good = _write_all(tmp_path, _rows(200))["csv"].read_text().splitlines()
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("\n".join(good[:101]) + "\n")
    bad = [good[0]] + good[101:121] + [line.replace(",", ";") for line in good[121:141]] + good[141:]
    b.write_text("\n".join(bad) + "\n")
    feats = 'data.features=[{name="user"}, {name="price", type="numeric"}]'
    cfg = load_config(overrides=QUIET + [f"data.train_path={a},{b}", "data.label=clicked", feats, "model.name=lr",
                                         "data.batch_size=20", f"run.dir={tmp_path / 'runs'}"])
    res = psrec.train(cfg, "local")  # rows 120-139 (one whole batch) are all malformed
    m = res.malformed_lines
    assert len(m) == 20 and {x["file"] for x in m} == {str(b)} and m[0]["line_no"] == 22
    assert m[0]["reason"] == "expected 5 columns, got 1"


@pytest.mark.parametrize("case, message", [
    ("empty", "empty file"), ("dir", "is a directory"), ("parquet", "not a Parquet file"),
    ("column", "column 'nope' (named in the spec) is not in the header"),
    ("label", "clicked must be 0 or 1, got '3'"), ("source", "unknown source 'bogus'")])
def test_bad_input_is_one_line_and_a_nonzero_exit(case, message, tmp_path, capsys):
    p = _write_all(tmp_path, _rows(50))["csv"]
    args = [f"data.train_path={p}", "data.label=clicked", 'data.features=[{name="user"}]']
    if case == "empty":
        (tmp_path / "e.csv").write_text("")
        args[0] = f"data.train_path={tmp_path / 'e.csv'}"
    elif case == "dir":
        args[0] = f"data.train_path={tmp_path}"
    elif case == "parquet":
        args.append("data.format=parquet")
    elif case == "column":
        args[2] = 'data.features=[{name="nope"}]'
    elif case == "label":
        lines = p.read_text().splitlines()
        p.write_text("\n".join([lines[0]] + ["3" + x[1:] for x in lines[1:]]) + "\n")
    else:
        args.append("data.source=bogus")
    rc = main(["train", "--set", "train.progress=false", *sum((["--set", x] for x in args), [])])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_a_registered_source_is_named_in_toml(tmp_path):
    from psrec.data.synthetic import SyntheticConfig, SyntheticSource

    @register_source("test_tiny")
    def _tiny(cfg):
        return SyntheticSource(SyntheticConfig(num_fields=3, num_dense=1, num_pairs=1, num_triples=0))

    cfg = load_config(overrides=["data.source=test_tiny"])
    assert make_source(cfg).schema.num_fields == 3
    with pytest.raises(ConfigError, match="unknown source 'nope'.*test_tiny"):
        load_config(overrides=["data.source=nope"])


def test_unknown_feature_key_is_refused_by_name():
    with pytest.raises(ConfigError, match=r"data.features\[0\].colour"):
        load_config(overrides=['data.train_path=x.csv', 'data.features=[{name="a", colour="red"}]'])


@pytest.mark.parametrize("fmt", ["csv", "parquet", "libsvm", "libfm"])
def test_data_inspect_suggests_a_block_that_loads(fmt, tmp_path, capsys):
    paths = _write_all(tmp_path, _rows(120))
    assert main(["data", "inspect", str(paths[fmt])]) == 0
    out = capsys.readouterr().out
    assert "120 rows" in out
    toml = out[out.index("[data]"):]
    (tmp_path / "s.toml").write_text(toml)
    cfg = load_config(tmp_path / "s.toml")
    assert cfg.data.format == fmt and cfg.data.features
    src = make_source(cfg)
    assert len(src.read(0, 120)) == 120
    if fmt == "csv":
        assert "label 'clicked': rate" in out
        assert [(f.name, f.type) for f in cfg.data.features] == [
            ("user", "categorical"), ("item", "categorical"), ("price", "numeric"), ("tags", "sequence")]


# -- the planted signal in every mode -------------------------------------------------------
@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    path = tmp_path_factory.mktemp("planted") / "planted.csv"
    return path, planted_csv(path, 40000)


PLANTED = ["data.label=clicked", "model.name=lr", "data.batch_size=256", "data.epochs=3",
           "embedding.optimizer.lr=0.1", "train.lr=0.01", FEATURES] + QUIET


@pytest.mark.parametrize("mode, extra", [
    ("local", []), ("ps", ["ps.transport=inprocess", "ps.workers=2"]),
    ("collective", ["collective.transport=inprocess", "collective.workers=2"]),
    ("ps", ["ps.transport=ray", "ps.workers=2"])], ids=["local", "ps-inprocess", "collective-inprocess", "ps-ray"])
def test_planted_signal_is_learned_in_every_mode(mode, extra, planted, tmp_path, request):
    if "ps.transport=ray" in extra:
        request.getfixturevalue("ray_session")
    path, planted_auc = planted
    res = psrec.train(load_config(overrides=PLANTED + extra + [f"data.train_path={path}",
                                                               f"run.dir={tmp_path}"]), mode)
    assert res.eval_rows == 4000 and res.extra["splits"]["test_from"].startswith("held out")
    print(f"{mode} {extra}: planted AUC {planted_auc:.4f}, learned {res.auc:.4f}, gap {planted_auc - res.auc:.4f}")
    assert abs(planted_auc - res.auc) < 0.01
