"""`psrec train`: train one model and evaluate it on held-out rows."""
from __future__ import annotations

import argparse
import sys

from psrec.commands import add_config_args, add_run_args, config_from

RESULT_COLUMNS = ["mode", "model", "auc", "logloss", "samples_per_s", "train_seconds", "steps"]
PS_COLUMNS = ["mode", "model", "workers", "num_ps", "auc", "logloss", "samples_per_s", "step_p50", "step_p95",
              "comm_fraction", "wait_fraction", "emulated_comm_fraction", "bytes_per_step"]
WORKER_COLUMNS = ["worker", "steps", "samples_per_s", "step_p50", "step_p95", "comm_fraction",
                  "emulated_comm_fraction", "bytes_sent", "bytes_received"]


def register(sub) -> None:
    p = sub.add_parser("train", help="train a model and evaluate it on held-out rows")
    p.add_argument("--mode", default="local", choices=["local", "ps", "collective"],
                   help="where embeddings live: this process, parameter servers, or sharded over collective workers")
    p.add_argument("--workers", type=int, help="PS mode: training workers (ps.workers)")
    p.add_argument("--ps", type=int, help="PS mode: parameter servers (ps.num_ps)")
    p.add_argument("--sync", action="store_true", help="PS mode: synchronous training (ps.sync)")
    p.add_argument("--dense", choices=["ps", "allreduce"], help="PS mode: where dense parameters live (ps.dense)")
    p.add_argument("--address", help="join this Ray cluster instead of starting a local Ray (ps.address)")
    p.add_argument("--net", help='emulate a network, e.g. "bandwidth=10Gbit,latency=50us" (ps.net)')
    p.add_argument("--data", choices=["interleaved", "queue"],
                   help="PS and collective modes: rows from fixed batches or the work queue "
                        "(ps.data / collective.data)")
    p.add_argument("--straggler", help='slow workers down, e.g. "1:4x,3:2x" (stragglers.factors)')
    p.add_argument("--model", help="registered model name (see `psrec models`)")
    p.add_argument("--rows", type=int, help="training rows (data.train_rows)")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue RUN_DIR from its newest checkpoint (its own config and mode; see "
                        "run.checkpoint_every_steps)")
    add_config_args(p)
    add_run_args(p)
    p.set_defaults(func=run)


# the options each mode takes beyond the common ones: any other given is refused, naming it
MODE_OPTIONS = {"local": set(),
                "ps": {"workers", "ps", "sync", "dense", "address", "net", "data", "straggler"},
                "collective": {"workers", "address", "net", "data", "straggler"}}


def run(args: argparse.Namespace) -> int:
    from psrec.core.local import run_local
    from psrec.report.table import format_table

    given = [k for k in set().union(*MODE_OPTIONS.values()) if getattr(args, k) not in (None, False)]
    if args.resume and given:
        print(f"psrec train: --{' --'.join(sorted(given))} does not apply with --resume (the run continues with its "
              "own configuration; --set changes it)", file=sys.stderr)
        return 2
    wrong = sorted(k for k in given if k not in MODE_OPTIONS[args.mode])
    if wrong:
        where = {k: sorted(m for m, opts in MODE_OPTIONS.items() if k in opts) for k in wrong}
        print("psrec train: " + "; ".join(f"--{k} does not apply to --mode {args.mode} (only to "
                                          f"{', '.join(where[k])})" for k in wrong), file=sys.stderr)
        return 2
    extra = []
    if args.model:
        extra.append(f"model.name={args.model}")
    if args.rows:
        extra.append(f"data.train_rows={args.rows}")
    section = "collective" if args.mode == "collective" else "ps"  # --workers/--net/--address apply here
    for flag, key in (("workers", f"{section}.workers"), ("ps", "ps.num_ps"), ("dense", "ps.dense")):
        if getattr(args, flag) is not None:
            extra.append(f"{key}={getattr(args, flag)}")
    if args.sync:
        extra.append("ps.sync=true")
    for flag, key in (("address", f"{section}.address"), ("net", f"{section}.net"), ("data", f"{section}.data"),
                      ("straggler", "stragglers.factors")):
        if getattr(args, flag):
            extra.append(f'{key}="{getattr(args, flag)}"')
    if args.resume:
        return _resume(args)
    cfg = config_from(args, extra)
    if args.mode == "ps":
        from psrec.ps.runner import run_ps

        res = run_ps(cfg)
        print(format_table([res], PS_COLUMNS))
        print(format_table(res["per_worker"], WORKER_COLUMNS))
        imb = res["ps_imbalance"]
        print(f"PS imbalance (max/mean): rows {imb['rows']:.3f}, bytes served {imb['bytes_served']:.3f}, "
              f"requests {imb['requests']:.3f}")
        print(f"run directory: {res['run_dir']}")
        return 0
    if args.mode == "collective":
        from collective.runner import run_collective

        res = run_collective(cfg)
        print(format_table([res], PS_COLUMNS))
        print(f"run directory: {res['run_dir']}")
        return 0
    res = run_local(cfg)
    print(format_table([res], RESULT_COLUMNS))
    if "planted_auc" in res:
        print(f"planted model AUC on the same rows (best achievable): {res['planted_auc']:.4f}")
    if res.get("malformed_lines"):
        print(f"skipped {len(res['malformed_lines'])} malformed lines (listed in results.json)")
    print(f"run directory: {res['run_dir']}")
    return 0


def _resume(args: argparse.Namespace) -> int:
    """`--resume RUN_DIR`: the run's own configuration (plus `--set`), mode and newest checkpoint."""
    from pathlib import Path

    from psrec.config import load_config
    from psrec.core import checkpoint

    run_dir = Path(args.resume)
    if not (run_dir / "config.toml").is_file():
        print(f"psrec train: {run_dir} is not a run directory (no config.toml)", file=sys.stderr)
        return 2
    ckpt = checkpoint.latest(run_dir / "checkpoints")
    if ckpt is None:
        print(f"psrec train: {run_dir} has no complete, verified checkpoint to resume from", file=sys.stderr)
        return 2
    mode = checkpoint.verify(ckpt)["holds"].get("mode", "local")
    cfg = load_config(run_dir / "config.toml", list(args.overrides))
    if mode == "local":
        from psrec.core.local import run_local

        res = run_local(cfg, run_dir, resume_from=ckpt)
    elif mode.startswith("ps-"):
        from psrec.ps.runner import run_ps

        res = run_ps(cfg, run_dir, resume_from=ckpt)
    elif mode == "collective":
        from collective.runner import run_collective

        res = run_collective(cfg, run_dir, resume_from=ckpt)
    else:
        print(f"psrec train: resuming a {mode} run is not supported", file=sys.stderr)
        return 2
    print(f"resumed {mode} from {ckpt.name}: AUC {res.auc:.4f}, {res.steps} steps; run directory: {run_dir}")
    return 0
