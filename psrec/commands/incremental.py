"""`psrec incremental`: a new model version warm-started from the old one vs started cold."""
from __future__ import annotations

import argparse
import sys

from psrec.commands import add_config_args, add_run_args, config_from

DAY_COLUMNS = ["day", "long_auc", "warm_auc", "cold_auc", "gain", "recovered"]


def register(sub) -> None:
    from psrec.experiments.incremental import IncrementalConfig

    d = IncrementalConfig()
    p = sub.add_parser("incremental", help="warm-started vs cold new model version over drifting days",
                       description="Train an old model version on synthetic days 1..K, then compare on days "
                                   "K+1..K+M: the old version continuing (long), a changed new version "
                                   "warm-started from it (warm), and the new version from scratch (cold).")
    p.add_argument("--train-days", type=int, default=d.train_days,
                   help=f"K, days of the old version (default {d.train_days})")
    p.add_argument("--eval-days", type=int, default=d.eval_days,
                   help=f"M, days compared after K (default {d.eval_days})")
    p.add_argument("--rows", type=int, default=d.rows_per_day,
                   help=f"training rows per day (default {d.rows_per_day})")
    p.add_argument("--eval-rows", type=int, default=d.eval_rows,
                   help=f"held-out rows per day (default {d.eval_rows})")
    p.add_argument("--drift", type=float,
                   help="share of id slots taken over by new ids per day (synthetic.drift)")
    p.add_argument("--new-set", dest="new_overrides", action="append", metavar="SECTION.KEY=VALUE",
                   help="how the new version differs from the old (repeatable; default: "
                        f"{' '.join(d.new_overrides)})")
    p.add_argument("--drop-field", dest="drop_fields", action="append", default=[], metavar="NAME",
                   help="a field (e.g. C5) the new version no longer reads (repeatable)")
    add_config_args(p)
    add_run_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from psrec.experiments.incremental import IncrementalConfig, run_incremental
    from psrec.report.table import format_table

    extra = [f"synthetic.drift={args.drift}"] if args.drift is not None else []
    cfg = config_from(args, extra)
    try:
        exp = IncrementalConfig(
            train_days=args.train_days, eval_days=args.eval_days, rows_per_day=args.rows,
            eval_rows=args.eval_rows, drop_fields=tuple(args.drop_fields),
            **({"new_overrides": tuple(args.new_overrides)} if args.new_overrides else {}))
    except ValueError as e:
        print(f"psrec incremental: {e}", file=sys.stderr)
        return 2
    res = run_incremental(cfg, exp, log=lambda s: print(s, file=sys.stderr, flush=True))
    s = res["summary"]
    print(f"new version: {' '.join(exp.new_overrides) or '(same configuration)'}"
          + (f"; dropped fields {', '.join(exp.drop_fields)}" if exp.drop_fields else ""))
    print("warm start migration:")
    print("  " + res["migration"]["text"].replace("\n", "\n  "))
    print(format_table(res["days"], DAY_COLUMNS))
    print("recovered = (warm - cold) / (long - cold) per day; recovered_share = the same over the "
          f"{s['eval_days']}-day mean AUCs")
    print(f"run directory: {res['run_dir']}")
    print(f"days={s['eval_days']} train_days={s['train_days']} warm_auc={s['warm_auc']:.4f} "
          f"cold_auc={s['cold_auc']:.4f} long_auc={s['long_auc']:.4f} "
          f"recovered_share={s['recovered_share']:.3f} first_day_share={s['first_day_share']:.3f}")
    return 0
