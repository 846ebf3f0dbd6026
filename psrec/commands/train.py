"""`psrec train`: train one model and evaluate it on held-out rows."""
from __future__ import annotations

import argparse
import sys

from psrec.commands import add_config_args, config_from

RESULT_COLUMNS = ["mode", "model", "auc", "logloss", "samples_per_s", "train_seconds", "steps"]


def register(sub) -> None:
    p = sub.add_parser("train", help="train a model and evaluate it on held-out rows")
    p.add_argument("--mode", default="local", choices=["local"], help="where embeddings live")
    p.add_argument("--model", help="registered model name (see `psrec models`)")
    p.add_argument("--rows", type=int, help="training rows (data.train_rows)")
    add_config_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from psrec.report.table import format_table
    from psrec.train.local import run_local

    extra = []
    if args.model:
        extra.append(f"model.name={args.model}")
    if args.rows:
        extra.append(f"data.train_rows={args.rows}")
    cfg = config_from(args, extra)
    if args.mode != "local":
        print(f"psrec train: mode {args.mode!r} is not available yet", file=sys.stderr)
        return 2
    res = run_local(cfg)
    print(format_table([res], RESULT_COLUMNS))
    if "planted_auc" in res:
        print(f"planted model AUC on the same rows (best achievable): {res['planted_auc']:.4f}")
    if res.get("malformed_lines"):
        print(f"skipped {len(res['malformed_lines'])} malformed lines (listed in results.json)")
    print(f"run directory: {res['run_dir']}")
    return 0
