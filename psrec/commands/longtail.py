"""`psrec longtail`: the same job under static and dynamic work assignment, with stragglers.

Each worker is a Ray actor that trains its own local model (default DeepFM) on the rows of
every task it takes: `SyntheticSource().read(start, end)` in batches, forward/backward, dense
and sparse optimizer steps. A straggler's extra time is added after that real compute.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from typing import Any

from psrec.commands import add_config_args, config_from

WORKER_COLUMNS = ["policy", "worker", "slowdown", "tasks", "rows", "busy_s", "idle_s", "compute_s",
                  "straggler_s", "rows_per_s", "all_busy_rows_per_s", "finish_s"]
POLICY_COLUMNS = ["policy", "makespan_s", "ideal_makespan_s", "vs_ideal", "tasks", "requeues",
                  "duplicates", "exactly_once", "take_ms", "task_ms", "take_overhead"]


def register(sub) -> None:
    p = sub.add_parser("longtail", help="static vs dynamic work assignment under stragglers (Ray)")
    p.add_argument("--workers", type=int, default=4, help="worker actors (default 4)")
    p.add_argument("--straggler", action="append", metavar="W:Fx",
                   help="fixed slowdown, e.g. 1:4x; repeatable or a comma list; 'none' for none "
                        "(default 1:4x)")
    p.add_argument("--policy", action="append", metavar="NAME",
                   help="static, dynamic, stealing; repeatable or a comma list (default static,dynamic)")
    p.add_argument("--rows", type=int, help="rows of the job (data.train_rows; default 1,000,000)")
    p.add_argument("--task-rows", type=int, help="rows per task (default 4096)")
    p.add_argument("--epochs", type=int, help="passes over the rows (data.epochs)")
    p.add_argument("--model", help="registered model name (default deepfm)")
    p.add_argument("--slow-periods", metavar="rate=R,mean=S,factor=F",
                   help="random slow periods per worker: episodes start at R per second, last S seconds "
                        "on average, F times slower (noisy neighbours)")
    p.add_argument("--straggler-dist", metavar="lognormal:SIGMA",
                   help="per-worker factors drawn as max(1, LogNormal(0, SIGMA))")
    p.add_argument("--straggler-seed", type=int, help="seed of the straggler draws (default train.seed)")
    p.add_argument("--straggle", choices=["sleep", "spin"], default="sleep",
                   help="how a straggler spends its extra time (default sleep)")
    p.add_argument("--lease-timeout", type=float, help="seconds before a taken task is re-queued (default 60)")
    p.add_argument("--name", help="run directory name (run.name)")
    add_config_args(p)
    p.set_defaults(func=run)


def _split(values: list[str] | None) -> list[str]:
    return [v.strip() for item in values or [] for v in item.split(",") if v.strip()]


def _kv(spec: str, flag: str, keys: dict[str, str]) -> dict[str, float]:
    out = {}
    for part in _split([spec]):
        k, sep, v = part.partition("=")
        if not sep or k.strip() not in keys:
            raise ValueError(f"{flag} {part!r}: expected one of {', '.join(f'{k}=...' for k in keys)}")
        try:
            out[keys[k.strip()]] = float(v)
        except ValueError:
            raise ValueError(f"{flag} {part!r}: {v!r} is not a number") from None
    return out


def _straggler_config(args: argparse.Namespace, seed: int):
    from workqueue.stragglers import StragglerConfig

    fixed = _split(args.straggler) if args.straggler else ["1:4x"]
    fixed = [] if fixed == ["none"] else fixed
    kw: dict[str, Any] = {"factors": ",".join(fixed), "seed": args.straggler_seed if args.straggler_seed is not None
                          else seed}
    if args.slow_periods:
        kw.update(_kv(args.slow_periods, "--slow-periods",
                      {"rate": "period_rate_per_s", "mean": "period_mean_s", "duration": "period_mean_s",
                       "factor": "period_factor"}))
    if args.straggler_dist:
        kind, _, sigma = args.straggler_dist.partition(":")
        if kind != "lognormal":
            raise ValueError(f"--straggler-dist {args.straggler_dist!r}: only lognormal:SIGMA is known")
        kw.update(dist="lognormal", dist_sigma=float(sigma or 0.5))
    return StragglerConfig(**kw)


class TrainRows:
    """The work of one worker: train a local model on rows [start, end). Picklable: it holds
    the configuration only, and builds source, model and tables in `setup()` inside the actor.

    Example:
        >>> from psrec.config import load_config
        >>> w = TrainRows(load_config(None, ["model.name=lr", "synthetic.num_fields=8"]))
        >>> w.setup(); w(0, 300)
        300
    """

    def __init__(self, cfg) -> None:
        self.cfg = cfg
        self._setup = None
        self._steps = 0

    def __getstate__(self) -> dict[str, Any]:
        return {"cfg": self.cfg, "_setup": None, "_steps": 0}

    def setup(self) -> None:
        import torch

        from psrec.train.local import build_local, train_range

        torch.set_num_threads(1)  # 4 workers share 2 cores: intra-op threads would spin against each other
        cfg = dataclasses.replace(self.cfg, train=dataclasses.replace(self.cfg.train, threads=1, progress=False))
        self._setup = build_local(cfg)
        bs = cfg.data.batch_size
        # Warm-up outside the clock: first-call allocations and table growth from empty.
        train_range(self._setup.step, self._setup.source, 0, min(2 * bs, self._setup.source.num_rows), bs)

    def __call__(self, start: int, end: int) -> int:
        from psrec.train.local import train_range

        if self._setup is None:
            self.setup()
        s = train_range(self._setup.step, self._setup.source, start, end, self.cfg.data.batch_size,
                        first_step=self._steps + 1)
        self._steps += s.steps
        return s.samples


def _fmt(v: float) -> str:
    return "nan" if v is None or not math.isfinite(v) else f"{v:.3f}"


def run(args: argparse.Namespace) -> int:
    import ray

    from psrec.data.factory import make_source
    from psrec.report.table import format_table
    from psrec.runs import make_run_dir, write_results
    from workqueue.config import WorkQueueConfig
    from workqueue.longtail import LongtailConfig, run_longtail
    from workqueue.stragglers import Stragglers

    extra = ["train.progress=false"]
    if args.model:
        extra.append(f"model.name={args.model}")
    if args.rows:
        extra.append(f"data.train_rows={args.rows}")
    if args.epochs:
        extra.append(f"data.epochs={args.epochs}")
    if args.name:
        extra.append(f"run.name={args.name}")
    cfg = config_from(args, extra)
    try:
        stragglers = _straggler_config(args, cfg.train.seed)
        qkw: dict[str, Any] = {"epochs": cfg.data.epochs, "seed": cfg.train.seed}
        if args.task_rows:
            qkw["task_rows"] = args.task_rows
        if args.lease_timeout:
            qkw["lease_timeout_s"] = args.lease_timeout
        queue_cfg = WorkQueueConfig(**qkw)
        rows = min(cfg.data.train_rows, make_source(cfg).num_rows)
        lt = LongtailConfig(workers=args.workers, policies=tuple(_split(args.policy) or ["static", "dynamic"]),
                            rows=rows, straggle=args.straggle)
        Stragglers(stragglers, lt.workers)  # a worker out of range fails here, before Ray starts
    except ValueError as e:
        print(f"psrec longtail: {e}", file=sys.stderr)
        return 2

    run_dir = make_run_dir(cfg, "longtail")
    started_ray = False
    if not ray.is_initialized():
        # Logical CPUs: enough for the fractional requests of the workers and the queue.
        ray.init(num_cpus=max(8, 2 * args.workers), include_dashboard=False, log_to_driver=False,
                 configure_logging=False, runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
        started_ray = True
    try:
        print(f"longtail: {args.workers} workers, {rows:,} rows x {queue_cfg.epochs} epoch(s), "
              f"{queue_cfg.task_rows} rows/task, model {cfg.model.name}, stragglers "
              f"{stragglers.factors or 'none'}; run directory {run_dir}")
        res = run_longtail(lt, queue_cfg, stragglers, lambda w: TrainRows(cfg), run_dir)
    finally:
        if started_ray:
            ray.shutdown()

    base = res["stragglers"]["base_factors"]
    worker_rows, policy_rows = [], []
    for policy, r in res["policies"].items():
        s, st = r["summary"], r["queue"]["stats"]
        for wk in s["workers"]:
            worker_rows.append({"policy": policy, "slowdown": base[wk["worker"]], **wk})
        policy_rows.append({"policy": policy, **s, "requeues": st["requeues"], "duplicates": st["duplicates"],
                            "exactly_once": r["queue"]["accounting"]["exactly_once"],
                            "take_ms": 1e3 * s["take_s_mean"], "task_ms": 1e3 * s["task_compute_s_mean"]})
    print(format_table(worker_rows, WORKER_COLUMNS))
    print()
    print(format_table(policy_rows, POLICY_COLUMNS))
    res["run_dir"] = str(run_dir)
    write_results(run_dir, res)
    c = res["comparison"]
    print(f"gantt charts: {', '.join(res['gantt'])}")
    print(f"on dedicated cores the straggler factors alone would give static_vs_ideal="
          f"{_fmt(c['static_vs_ideal_dedicated_cores'])}; here cores are shared and a straggler left alone "
          f"runs faster (compare rows_per_s with all_busy_rows_per_s)")
    print(f"static_vs_ideal={_fmt(c['static_vs_ideal'])} dynamic_vs_ideal={_fmt(c['dynamic_vs_ideal'])} "
          f"speedup={_fmt(c['speedup'])} take_overhead={_fmt(c['take_overhead'])}")
    return 0
