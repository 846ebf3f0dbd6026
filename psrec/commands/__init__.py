"""`psrec` subcommands, one module each.

A module here defines `register(subparsers)`, which adds its parser and sets `func` to a
function taking the parsed args and returning an exit code. The CLI imports every module
in this package, so a new command is one new file.
"""
import argparse
import json

from psrec.config import Config, load_config

__all__ = ["add_config_args", "add_run_args", "add_threads_arg", "config_from"]


def add_config_args(p: argparse.ArgumentParser) -> None:
    """`--config FILE` and repeatable `--set section.key=value`."""
    p.add_argument("--config", metavar="FILE", help="TOML configuration file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one configuration value (repeatable)")


class _SetKey(argparse.Action):
    """A flag that is a `--set KEY=VALUE` by another name: appended to the overrides in
    command-line order, so a later `--set` of the same key still wins."""

    def __init__(self, option_strings, dest, key: str, **kw) -> None:
        super().__init__(option_strings, dest, **kw)
        self.key = key

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        value = json.dumps(values) if isinstance(values, str) else values  # TOML strings are quoted
        namespace.overrides = [*(getattr(namespace, "overrides", None) or []), f"{self.key}={value}"]


def add_run_args(p: argparse.ArgumentParser) -> None:
    """`--name` (run.name), `--seed` (train.seed) and `--threads` (train.threads): the options
    every command that trains takes, spelled the same everywhere. A command that already
    defines one of them (with its own meaning, e.g. `chaos --seed`) keeps its own."""
    have = set(p._option_string_actions)
    for flag, key, typ, text in (("--name", "run.name", str, "run directory name (run.name)"),
                                 ("--seed", "train.seed", int, "seed of the model and the data order (train.seed)"),
                                 ("--threads", "train.threads", int, "torch intra-op threads (train.threads)")):
        if flag not in have:
            p.add_argument(flag, action=_SetKey, key=key, type=typ, dest=f"_set_{key.replace('.', '_')}", help=text)


def add_threads_arg(p: argparse.ArgumentParser) -> None:
    """`--threads N` (train.threads) for commands that train many models in one process."""
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads, train.threads (default 1: CTR steps are many small ops; on 2 "
                        "shared cores LR trained at 72K samples/s with 1 thread vs 25K with 2)")


def config_from(args: argparse.Namespace, extra: list[str] | None = None) -> Config:
    """The run configuration: file, then `extra` (from dedicated flags), then `--set`."""
    return load_config(args.config, list(extra or []) + list(args.overrides))
