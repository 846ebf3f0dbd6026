import pytest

from psrec.cli import main
from psrec.config import ConfigError, load_config


def test_defaults_and_overrides(tmp_path):
    f = tmp_path / "run.toml"
    f.write_text('[data]\nbatch_size = 512\n[model]\nname = "dnn"\n[model.params]\nhidden = [32, 16]\n')
    cfg = load_config(f, ["train.lr=0.01", "embedding.dim=8"])
    assert cfg.data.batch_size == 512 and cfg.model.name == "dnn"
    assert cfg.model_params().hidden == (32, 16)
    assert cfg.train.lr == 0.01 and cfg.embedding.dim == 8


@pytest.mark.parametrize("override, named", [
    ("train.bogus=1", "train.bogus"),
    ("nosection.x=1", "nosection"),
    ("data.batch_size=abc", "data.batch_size"),
    ("data.batch_size=1.5", "data.batch_size"),
    ("train.progress=3", "train.progress"),
    ("data.source=parquet", "data.source"),
    ("model.params.nope=1", "model.params.nope"),
    ("model.name=nosuchmodel", "model.name"),
    ("synthetic.cardinalities=[1, 'a']", "synthetic.cardinalities[1]"),
    ("data.batch_size=0", "batch_size"),
    ("model.refine=bogus", "model.refine"),
])
def test_bad_keys_and_values_name_the_key(override, named):
    with pytest.raises(ConfigError, match=named.replace("[", r"\[").replace("]", r"\]")):
        load_config(None, [override])


def test_toml_file_errors(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text("[train]\nlr = 0.1\nunknown_thing = 2\n")
    with pytest.raises(ConfigError, match="train.unknown_thing"):
        load_config(f)
    f.write_text("[train\n")
    with pytest.raises(ConfigError, match="bad.toml"):
        load_config(f)


def test_show_round_trips(tmp_path, capsys):
    assert main(["config", "show", "--set", "model.params.hidden=[8]", "--set", "synthetic.day=3"]) == 0
    text = capsys.readouterr().out
    f = tmp_path / "shown.toml"
    f.write_text(text)
    cfg = load_config(f)
    assert cfg.synthetic.day == 3 and cfg.model_params().hidden == (8,)
    assert cfg == load_config(None, ["model.params.hidden=[8]", "synthetic.day=3"])


def test_cli_reports_config_error(capsys):
    assert main(["config", "show", "--set", "train.bogus=1"]) == 2
    assert "train.bogus" in capsys.readouterr().err


def test_partial_nested_section_keeps_section_defaults():
    cfg = load_config(None, ["embedding.optimizer.lr=0.1"])
    default = load_config(None)
    assert cfg.embedding.optimizer.lr == 0.1
    assert cfg.embedding.optimizer.initial_accumulator == default.embedding.optimizer.initial_accumulator
    with pytest.raises(ConfigError, match="embedding.optimizer.nope"):
        load_config(None, ["embedding.optimizer.nope=1"])
    with pytest.raises(ConfigError, match="optimizer.name"):
        load_config(None, ["embedding.optimizer.name=rmsprop"])
