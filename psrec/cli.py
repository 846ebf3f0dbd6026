"""`psrec`: run, compare and simulate parameter-server and collective training.

Each subcommand lives in its own module under `psrec.commands`.
"""
from __future__ import annotations

import argparse
import importlib
import os
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
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error (also: PSREC_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True)
    for m in sorted(pkgutil.iter_modules(psrec.commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"psrec.commands.{m.name}")
        before = set(sub.choices)
        module.register(sub)
        for name in set(sub.choices) - before:  # `psrec X --help` opens with what X does
            if not sub.choices[name].description:
                sub.choices[name].description = (module.__doc__ or "").strip().splitlines()[0]
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand. Every expected error is one line on stderr, exit 2 for what the user
    asked (configuration, data, files) and 1 for what happened at run time; anything else is one
    line too, naming the error, with the traceback under `--debug`."""
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get("PSREC_DEBUG", "") not in ("", "0")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("psrec: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if debug:
            raise
        code, text = _one_line(e)
        print(f"psrec: {text}", file=sys.stderr)
        return code


def _one_line(e: BaseException) -> tuple[int, str]:
    """(exit code, message) of an error."""
    if isinstance(e, ConfigError):
        return 2, f"configuration error: {e}"
    if isinstance(e, DataError):  # bad input files: one line naming the file
        return 2, f"data error: {e}"
    if isinstance(e, FileNotFoundError):
        return 2, str(e)
    if isinstance(e, (JobFailed, CheckpointError)):
        return 1, str(e)
    first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), "")
    where = ""
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is not None:
        where = f" at {os.path.relpath(tb.tb_frame.f_code.co_filename)}:{tb.tb_lineno}"
    return 1, f"{type(e).__name__}: {first}{where} (rerun with --debug for the traceback)"


if __name__ == "__main__":
    sys.exit(main())
