"""`psrec`: run, compare and simulate parameter-server and collective training.

Each subcommand lives in its own module under `psrec.commands`.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

import psrec
import psrec.commands
from psrec.config import ConfigError
from psrec.core.checkpoint import CheckpointError
from psrec.core.job import JobFailed
from psrec.data.errors import DataError

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="psrec", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"psrec {psrec.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for m in sorted(pkgutil.iter_modules(psrec.commands.__path__), key=lambda m: m.name):
        importlib.import_module(f"psrec.commands.{m.name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as e:
        print(f"psrec: configuration error: {e}", file=sys.stderr)
        return 2
    except FileNotFoundError as e:
        print(f"psrec: {e}", file=sys.stderr)
        return 2
    except (JobFailed, CheckpointError) as e:
        print(f"psrec: {e}", file=sys.stderr)
        return 1
    except DataError as e:  # bad input files: one line naming the file, no traceback
        print(f"psrec: data error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
