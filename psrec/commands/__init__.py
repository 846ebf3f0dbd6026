"""`psrec` subcommands, one module each.

A module here defines `register(subparsers)`, which adds its parser and sets `func` to a
function taking the parsed args and returning an exit code. The CLI imports every module
in this package, so a new command is one new file.
"""
import argparse

from psrec.config import Config, load_config

__all__ = ["add_config_args", "add_threads_arg", "config_from"]


def add_config_args(p: argparse.ArgumentParser) -> None:
    """`--config FILE` and repeatable `--set section.key=value`."""
    p.add_argument("--config", metavar="FILE", help="TOML configuration file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one configuration value (repeatable)")


def add_threads_arg(p: argparse.ArgumentParser) -> None:
    """`--threads N` (train.threads) for commands that train many models in one process."""
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads, train.threads (default 1: CTR steps are many small ops; on 2 "
                        "shared cores LR trained at 72K samples/s with 1 thread vs 25K with 2)")


def config_from(args: argparse.Namespace, extra: list[str] | None = None) -> Config:
    """The run configuration: file, then `extra` (from dedicated flags), then `--set`."""
    return load_config(args.config, list(extra or []) + list(args.overrides))
