"""`psrec zoo`: train every registered model on the same rows and rank them by held-out AUC.

    psrec zoo                                  # all models, 300K rows each, + xDeepInt G-FTRL
    psrec zoo --models lr,dnn,deepfm --rows 50000 --refiners none
    psrec zoo --models xdeepint --gftrl-l1 1,10,40   # the G-FTRL comparison with a sweep

Writes `table.txt` (what is printed) and `results.json` into a new run directory.
"""
from __future__ import annotations

import argparse
import sys

from psrec.commands import add_config_args, add_run_args, add_threads_arg, config_from


def _names(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip() and t.strip() != "none")


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def register(sub) -> None:
    p = sub.add_parser("zoo", help="train every registered model with the same budget and rank them by AUC")
    p.add_argument("--models", type=_names, default=(), metavar="A,B,C",
                   help="models to train (default: every registered model; lr and dnn are always added)")
    p.add_argument("--rows", type=int, help="training rows per model (default 300000)")
    p.add_argument("--eval-rows", type=int, help="held-out rows after the training rows (default 100000)")
    p.add_argument("--refiners", type=_names, metavar="R1,R2",
                   help="refinement modules tried in front of --refine-base ('none' for no variant; default frnet_b)")
    p.add_argument("--refine-base", help="model the refiners are put in front of (default dnn)")
    p.add_argument("--gftrl", action=argparse.BooleanOptionalAction, default=None,
                   help="also train xDeepInt with G-FTRL rows vs Adagrad rows (default: on when xdeepint is trained)")
    p.add_argument("--gftrl-l1", type=_floats, metavar="L1,L1",
                   help="G-FTRL l1 values, author's units (summed loss; default 1,10)")
    add_threads_arg(p)
    add_config_args(p)
    add_run_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from psrec.experiments.gftrl import GFTRLConfig
    from psrec.experiments.zoo import ZooConfig, make_experiment_dir, report_text, run_zoo, zoo_entries

    cfg = config_from(args, [f"train.threads={args.threads}"])
    zoo = ZooConfig()
    changes = {"models": args.models}
    for key, value in (("train_rows", args.rows), ("eval_rows", args.eval_rows), ("refiners", args.refiners),
                       ("refine_base", args.refine_base)):
        if value is not None:
            changes[key] = value
    try:
        zoo = replace(zoo, **changes)
    except ValueError as e:
        print(f"psrec zoo: {e}", file=sys.stderr)
        return 2
    want_gftrl = args.gftrl if args.gftrl is not None else any(e.model == "xdeepint" for e in zoo_entries(zoo))
    gftrl = GFTRLConfig(**({"l1s": args.gftrl_l1} if args.gftrl_l1 else {})) if want_gftrl else None
    run_dir = make_experiment_dir(cfg, "zoo")
    n = len(zoo_entries(zoo))
    print(f"zoo: {n} models x {zoo.train_rows:,} training rows, {zoo.eval_rows:,} held-out rows "
          f"(batch {cfg.data.batch_size}, seed {cfg.train.seed})", file=sys.stderr)
    report = run_zoo(cfg, zoo, run_dir, gftrl=gftrl, log=lambda s: print(s, file=sys.stderr, flush=True))
    print(report_text(report))
    print(f"run directory: {run_dir}")
    return 0
