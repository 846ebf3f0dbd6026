"""`psrec` command line: train, inspect configuration, list models.

Every command that runs something takes `--config run.toml` and repeated
`--set section.key=value` overrides, and writes a run directory.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from psrec.config import Config, ConfigError, load_config

__all__ = ["main"]

RESULT_COLUMNS = ["mode", "model", "auc", "logloss", "samples_per_s", "train_seconds", "steps"]


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="TOML configuration file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one configuration value (repeatable)")


def _config_from(args: argparse.Namespace, extra: list[str] | None = None) -> Config:
    return load_config(args.config, list(extra or []) + list(args.overrides))


def _cmd_train(args: argparse.Namespace) -> int:
    from psrec.report.table import format_table
    from psrec.train.local import run_local

    extra = []
    if args.model:
        extra.append(f"model.name={args.model}")
    if args.rows:
        extra.append(f"data.train_rows={args.rows}")
    cfg = _config_from(args, extra)
    if args.mode != "local":
        print(f"psrec train: mode {args.mode!r} is not available yet", file=sys.stderr)
        return 2
    res = run_local(cfg)
    row = dict(res)
    print(format_table([row], RESULT_COLUMNS))
    if "planted_auc" in res:
        print(f"planted model AUC on the same rows (best achievable): {res['planted_auc']:.4f}")
    if res.get("malformed_lines"):
        print(f"skipped {len(res['malformed_lines'])} malformed lines (listed in results.json)")
    print(f"run directory: {res['run_dir']}")
    return 0


def _cmd_config_show(args: argparse.Namespace) -> int:
    print(_config_from(args).to_toml(), end="")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from psrec.models import model_names

    print("\n".join(model_names()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="psrec", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model and evaluate it on held-out rows")
    p.add_argument("--mode", default="local", choices=["local"], help="where embeddings live")
    p.add_argument("--model", help="registered model name (see `psrec models`)")
    p.add_argument("--rows", type=int, help="training rows (data.train_rows)")
    _add_config_args(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("config", help="configuration tools")
    csub = p.add_subparsers(dest="config_command", required=True)
    ps = csub.add_parser("show", help="print the resolved configuration as TOML")
    _add_config_args(ps)
    ps.set_defaults(func=_cmd_config_show)

    p = sub.add_parser("models", help="list registered model names, one a line")
    p.set_defaults(func=_cmd_models)
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


if __name__ == "__main__":
    sys.exit(main())
