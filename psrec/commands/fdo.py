"""`psrec fdo`: pick each field's embedding width by PCA of a trained model, retrain, compare.

    psrec fdo                                   # dnn, d = embedding.dim, keep 90% of the variance
    psrec fdo --model dcn_v2 --threshold 0.8 --rows 100000

Writes `table.txt` (what is printed) and `results.json` (with `field_dims`) into a run directory.
"""
from __future__ import annotations

import argparse
import sys

from psrec.commands import add_config_args, add_run_args, add_threads_arg, config_from


def register(sub) -> None:
    p = sub.add_parser("fdo", help="field-dimension optimisation: per-field widths by PCA, then retrain")
    p.add_argument("--model", help="a model that accepts per-field widths (default dnn; dcn, dcn_v2, ...)")
    p.add_argument("--threshold", type=float, help="share of each field's variance to keep (default 0.9)")
    p.add_argument("--weighting", choices=["frequency", "uniform"],
                   help="PCA row weights: occurrence counts (default) or equal (the reference)")
    p.add_argument("--rows", type=int, help="training rows (default 300000)")
    p.add_argument("--eval-rows", type=int, help="held-out rows after the training rows (default 100000)")
    add_threads_arg(p)
    add_config_args(p)
    add_run_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from psrec.experiments.fdo import FDOConfig, run_fdo
    from psrec.experiments.zoo import make_experiment_dir

    cfg = config_from(args, [f"train.threads={args.threads}"])
    changes = {k: v for k, v in (("model", args.model), ("threshold", args.threshold),
                                 ("weighting", args.weighting), ("train_rows", args.rows),
                                 ("eval_rows", args.eval_rows)) if v is not None}
    try:
        fdo = replace(FDOConfig(), **changes)
    except ValueError as e:
        print(f"psrec fdo: {e}", file=sys.stderr)
        return 2
    run_dir = make_experiment_dir(cfg, "fdo")
    report = run_fdo(cfg, fdo, run_dir, log=lambda s: print(s, file=sys.stderr, flush=True))
    print(report.text())
    print(f"run directory: {run_dir}")
    return 0
