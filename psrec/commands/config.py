"""`psrec config show`: print the resolved configuration."""
from __future__ import annotations

import argparse

from psrec.commands import add_config_args, config_from


def register(sub) -> None:
    p = sub.add_parser("config", help="configuration tools")
    csub = p.add_subparsers(dest="config_command", required=True)
    ps = csub.add_parser("show", help="print the resolved configuration as TOML")
    add_config_args(ps)
    ps.set_defaults(func=run_show)


def run_show(args: argparse.Namespace) -> int:
    print(config_from(args).to_toml(), end="")
    return 0
