"""`psrec filter-sweep`: admission filter (min_freq) and TTL eviction vs rows, bytes and AUC."""
from __future__ import annotations

import argparse
import sys

from psrec.commands import add_config_args, add_run_args

COLUMNS = ["setting", "rows", "waiting", "evicted", "bytes", "bytes_share", "mem_bytes", "auc", "auc_delta"]
# Rows the sweep trains and evaluates on unless the config file or --set says otherwise: each
# setting is one training run (9 by default), so the project's 1M-row default would take
# ~30 minutes on 2 cores; 100K rows keep the sweep to a few minutes.
SWEEP_DATA = {"data": {"train_rows": 100_000, "eval_rows": 50_000}}


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def register(sub) -> None:
    from psrec.experiments.filter_sweep import FilterSweepConfig

    d = FilterSweepConfig()
    p = sub.add_parser("filter-sweep", help="admission filter and TTL eviction: storage vs AUC",
                       description="Train the same model once per (min_freq, steps_to_live) setting and "
                                   "report rows, checkpoint bytes and held-out AUC against no filtering.")
    p.add_argument("--min-freq", type=_ints, default=d.min_freqs, metavar="N,N,...",
                   help=f"admission thresholds, 1 = no filter (default {','.join(map(str, d.min_freqs))})")
    p.add_argument("--ttl", type=_ints, default=d.ttls, metavar="N,N,...",
                   help=f"steps_to_live values in global steps, 0 = none "
                        f"(default {','.join(map(str, d.ttls))})")
    p.add_argument("--evict-every", type=int, default=d.evict_every,
                   help=f"global steps between eviction passes, as a checkpoint job would "
                        f"(default {d.evict_every})")
    p.add_argument("--filter-kind", choices=["counter", "bloom"], default=d.filter_kind)
    p.add_argument("--auc-tolerance", type=float, default=d.auc_tolerance,
                   help=f"AUC loss still counted as none when picking the best setting "
                        f"(default {d.auc_tolerance})")
    p.add_argument("--rows", type=int, help="training rows (data.train_rows; default 100000)")
    p.add_argument("--eval-rows", type=int, help="held-out rows (data.eval_rows; default 50000)")
    add_config_args(p)
    add_run_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from psrec.config import load_config
    from psrec.experiments.filter_sweep import FilterSweepConfig, run_filter_sweep
    from psrec.report.table import format_table

    extra = [f"data.train_rows={args.rows}"] if args.rows else []
    extra += [f"data.eval_rows={args.eval_rows}"] if args.eval_rows else []
    cfg = load_config(args.config, extra + list(args.overrides), base=SWEEP_DATA)
    try:
        sweep = FilterSweepConfig(min_freqs=args.min_freq, ttls=args.ttl, evict_every=args.evict_every,
                                  filter_kind=args.filter_kind, auc_tolerance=args.auc_tolerance)
    except ValueError as e:
        print(f"psrec filter-sweep: {e}", file=sys.stderr)
        return 2
    res = run_filter_sweep(cfg, sweep, log=lambda s: print(s, file=sys.stderr, flush=True))
    s = res["summary"]
    print(f"{cfg.model.name}, {res['ranges']['train_end']:,} training rows, batch {cfg.data.batch_size}; "
          f"eviction every {sweep.evict_every} steps and at the end; bytes = checkpoint arrays "
          f"(rows + waiting filter keys), mem_bytes = memory held")
    print(format_table(res["settings"], COLUMNS))
    print(f"best = fewest bytes with auc_delta >= -{sweep.auc_tolerance}: {s['best_setting']}")
    print(f"run directory: {res['run_dir']}")
    print(f"best_setting={s['best_setting']} best_bytes_saved={s['best_bytes_saved']:.3f} "
          f"auc_delta_at_best={s['auc_delta_at_best']:+.4f} baseline_auc={s['baseline_auc']:.4f}")
    return 0
