"""One CLI: the same run options on every command that trains, a description on every
subcommand, options that do not apply refused by name, named runs never overwritten, and
every error one line (a traceback only under --debug)."""
import pytest

import psrec.commands.models as models_cmd
from psrec.cli import build_parser, main
from psrec.commands import config_from

TRAINING = ("train", "compare", "longtail", "chaos", "fdo", "filter-sweep", "incremental", "zoo")


def _subparsers():
    p = build_parser()
    return next(a for a in p._actions if a.__class__.__name__ == "_SubParsersAction").choices


def test_every_training_command_takes_the_same_run_options_and_every_command_says_what_it_does():
    subs = _subparsers()
    for name in TRAINING:
        have = set(subs[name]._option_string_actions)
        assert {"--config", "--set", "--name", "--seed", "--threads"} <= have, name
    for name, sp in subs.items():
        assert sp.description and len(sp.description) > 10, name


def test_run_options_are_config_overrides_and_a_later_set_wins():
    p = build_parser()
    args = p.parse_args(["train", "--name", "exp 1", "--seed", "7", "--threads", "2", "--set", "train.threads=1"])
    cfg = config_from(args)
    assert cfg.run.name == "exp 1" and cfg.train.seed == 7 and cfg.train.threads == 1


def test_an_option_of_another_mode_is_refused_naming_it(capsys):
    assert main(["train", "--net", "bandwidth=1Gbit", "--rows", "256"]) == 2
    err = capsys.readouterr().err
    assert "--net does not apply to --mode local" in err and len(err.strip().splitlines()) == 1
    assert main(["train", "--mode", "collective", "--sync"]) == 2
    assert "--sync does not apply to --mode collective (only to ps)" in capsys.readouterr().err
    assert main(["train", "--resume", "nowhere", "--workers", "3"]) == 2
    assert "does not apply with --resume" in capsys.readouterr().err


def test_a_named_run_never_overwrites_another(tmp_path, capsys):
    args = ["train", "--model", "lr", "--rows", "512", "--name", "same", "--set", "train.progress=false",
            "--set", "data.eval_rows=256", "--set", f"run.dir={tmp_path}", "--set", "run.save_model=false"]
    assert main(args) == 0
    first = (tmp_path / "same" / "results.json").read_text()
    assert main(args + ["--seed", "5"]) == 0
    assert "holds a run already" in capsys.readouterr().err
    assert (tmp_path / "same" / "results.json").read_text() == first
    assert "seed = 5" in (tmp_path / "same-2" / "config.toml").read_text()


def test_an_unexpected_error_is_one_line_and_debug_shows_the_traceback(monkeypatch, capsys):
    def boom(args):
        raise RuntimeError("the shard said no\nsecond line")

    monkeypatch.setattr(models_cmd, "run", boom)
    assert main(["models"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "RuntimeError: the shard said no at " in err[0] and "--debug" in err[0]
    with pytest.raises(RuntimeError, match="the shard said no"):
        main(["--debug", "models"])
