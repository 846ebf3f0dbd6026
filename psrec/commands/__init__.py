"""`psrec` subcommands, one module each.

A module here defines `register(subparsers)`, which adds its parser and sets `func` to a
function taking the parsed args and returning an exit code. The CLI imports every module
in this package, so a new command is one new file.
"""
import argparse

from psrec.config import Config, load_config

__all__ = ["add_config_args", "config_from"]


def add_config_args(p: argparse.ArgumentParser) -> None:
    """`--config FILE` and repeatable `--set section.key=value`."""
    p.add_argument("--config", metavar="FILE", help="TOML configuration file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one configuration value (repeatable)")


def config_from(args: argparse.Namespace, extra: list[str] | None = None) -> Config:
    """The run configuration: file, then `extra` (from dedicated flags), then `--set`."""
    return load_config(args.config, list(extra or []) + list(args.overrides))
