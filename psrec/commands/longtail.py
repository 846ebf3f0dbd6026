"""`psrec longtail`: the same job under static and dynamic work assignment, with stragglers.

`--mode async` (the default): each worker is a Ray actor that trains its own local model
(default DeepFM) on the rows of every task it takes: `SyntheticSource().read(start, end)` in
batches, forward/backward, dense and sparse optimizer steps; nobody waits for anybody (the
asynchronous PS pattern). A straggler's extra time is added after that real compute.

`--mode collective`: the same rows, stragglers and policies, trained by collective ranks
(all-to-all embeddings, all-reduced dense) fed by the same work queue
(`collective.data = "queue"`), which step in lockstep: every step waits for the slowest
rank, so no policy can shorten it. `--mode both` runs the two and prints what the queue
can and cannot fix (docs/longtail.md).

`--mode sync`: the remedies for synchronous training under the same straggler
(`psrec.experiments.longtail_sync`): plain lockstep, speed-proportional shares, backup
workers (collective and sync PS), bounded staleness s = 1, 2, 4 on the PS, each against its
no-straggler baseline; ends with `sync_vs_ideal=R proportional_vs_ideal=R backup_vs_ideal=R
ssp2_vs_ideal=R auc_delta_proportional=X ps_sync_vs_ideal=R ps_proportional_vs_ideal=R
ps_backup_vs_ideal=R`.
`--mode all`: async, collective and sync.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from collections.abc import Callable
from typing import Any

from psrec.commands import add_config_args, add_run_args, config_from

WORKER_COLUMNS = ["policy", "worker", "slowdown", "tasks", "rows", "busy_s", "idle_s", "compute_s",
                  "straggler_s", "rows_per_s", "all_busy_rows_per_s", "finish_s"]
POLICY_COLUMNS = ["policy", "makespan_s", "ideal_makespan_s", "vs_ideal", "tasks", "requeues",
                  "duplicates", "exactly_once", "take_ms", "task_ms", "take_overhead"]
RANK_COLUMNS = ["policy", "worker", "slowdown", "tasks", "rows", "steps", "idle_steps", "run_s", "busy_s",
                "sync_wait_s", "wait_fraction", "straggler_s"]
LOCKSTEP_COLUMNS = ["policy", "makespan_s", "ideal_makespan_s", "vs_ideal", "slowest_busy_s", "vs_slowest_busy",
                    "peer_wait_fraction", "steps", "idle_steps", "requeues", "duplicates", "exactly_once"]
MODE_COLUMNS = ["mode", "policy", "makespan_s", "vs_ideal", "straggler_rows_share", "others_lost_fraction"]
SYNC_COLUMNS = ["scenario", "arch", "workers", "steps", "step_ms", "vs_ideal", "auc", "auc_delta", "time_to_auc_s",
                "dropped_rows_per_step", "slow_workers", "rows_by_worker"]

EXPLAIN = """\
What the work queue can and cannot fix:
- async workers ({a_static} -> {a_dynamic}: speedup {a_speedup}): nobody waits for anybody,
  so a fast worker simply comes back for more tasks; under `dynamic` the straggler's share of
  the rows fell from {a_share_static} to {a_share_dynamic} and the others stopped idling at the end.
- collective ranks ({c_static} -> {c_dynamic}: speedup {c_speedup}): every step all-reduces, so
  each step lasts as long as its slowest rank under any policy. Every rank trains one batch
  per step, the straggler included, so its share stays {c_share_dynamic} and its peers spend
  {c_wait} of the makespan waiting at the barrier. The queue balances data there (uneven
  shares, a short last task, tasks of uneven cost: ranks run out of work closer together, so
  fewer empty steps; here {c_idle_static} under static, {c_idle_dynamic} under dynamic) and
  would let fast ranks take more rows only if batch sizes varied with speed; it cannot
  shorten a lockstep step. Remedies for that are elsewhere: drop or replace the slow rank,
  backup workers, or asynchronous / bounded-staleness updates (`--mode sync` measures
  speed-proportional shares, backup workers and bounded staleness)."""


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
    p.add_argument("--mode", choices=["async", "collective", "both", "sync", "all"], default="async",
                   help="async: independent workers, nobody waits (default); collective: ranks in lockstep "
                        "(all-to-all + all-reduce) fed by the same queue, stragglers sleep; both: the two, "
                        "and what the queue can and cannot fix; sync: plain sync vs speed-proportional shares, "
                        "backup workers and bounded staleness; all: async, collective and sync")
    p.add_argument("--backup", type=int, default=1, help="--mode sync: backup ranks added to --workers (default 1; "
                                                         "0 skips the scenario)")
    p.add_argument("--staleness", default="1,2,4", metavar="S,...",
                   help="--mode sync: PS staleness bounds to run (default 1,2,4; 'none' skips the PS scenarios)")
    p.add_argument("--name", help="run directory name (run.name)")
    add_config_args(p)
    add_run_args(p)
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

        from psrec.core.local import build_local, train_range

        torch.set_num_threads(1)  # 4 workers share 2 cores: intra-op threads would spin against each other
        cfg = dataclasses.replace(self.cfg, train=dataclasses.replace(self.cfg.train, threads=1, progress=False))
        self._setup = build_local(cfg)
        bs = cfg.data.batch_size
        # Warm-up outside the clock: first-call allocations and table growth from empty.
        train_range(self._setup.step, self._setup.source, 0, min(2 * bs, self._setup.source.num_rows), bs)

    def __call__(self, start: int, end: int) -> int:
        from psrec.core.local import train_range

        if self._setup is None:
            self.setup()
        s = train_range(self._setup.step, self._setup.source, start, end, self.cfg.data.batch_size,
                        first_step=self._steps + 1)
        self._steps += s.steps
        return s.samples


def _fmt(v: float) -> str:
    return "nan" if v is None or not math.isfinite(v) else f"{v:.3f}"


def _collective_ranks(summaries: list[dict]) -> list[dict[str, Any]]:
    """Per-rank inputs of `summarize_lockstep` from `WorkerReport.summary()` dicts."""
    return [{"worker": x["worker"], "tasks": x.get("tasks", 0), "rows": x.get("rows", 0), "steps": x["steps"],
             "idle_steps": x.get("idle_steps", 0), "run_s": x.get("run_seconds", 0.0),
             "sync_wait_s": x.get("sync_wait_seconds", 0.0), "straggler_s": x.get("straggler_seconds", 0.0)}
            for x in summaries]


def run_collective_policies(cfg, workers: int, policies: tuple[str, ...], queue_cfg, stragglers,
                            log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train `cfg` collectively once per policy, ranks fed by the work queue, with the same
    stragglers; returns `{"policies": {name: {"summary", "queue", "per_rank"}}, "comparison"}`.

    Each policy gets fresh ranks (fresh tables and replicas) and a fresh queue; Ray (for
    `collective.transport = "ray"`) must be up. Only training is timed: no evaluation.
    """
    from collective.jobs import start_job
    from collective.plan import plan_collective
    from workqueue.longtail import summarize_lockstep

    coll = dataclasses.replace(cfg.collective, workers=workers, data="queue", metrics_port=-1)
    runs: dict[str, Any] = {}
    for policy in policies:
        c = dataclasses.replace(cfg, collective=coll, stragglers=stragglers,
                                workqueue=dataclasses.replace(queue_cfg, policy=policy))
        t = time.perf_counter()
        job = start_job(plan_collective(c, coll))
        try:
            log(f"[collective {policy}] {workers} ranks ready in {time.perf_counter() - t:.1f} s; running")
            reports = job.train()  # waits for the slowest backward at the all-reduce count as peer wait
            queue = job.queue_stats
        finally:
            job.close()
        per_rank = [r.summary() for r in reports]
        summary = summarize_lockstep(_collective_ranks(per_rank))
        log(f"[collective {policy}] makespan {summary['makespan_s']:.1f} s, "
            f"ideal {summary['ideal_makespan_s']:.1f} s")
        for p in per_rank:  # step lists are long; the per-rank summary keeps every figure
            p.pop("bytes_by_tag", None)
        runs[policy] = {"policy": policy, "summary": summary, "queue": queue, "per_rank": per_rank}

    def get(policy: str, key: str) -> float:
        return runs[policy]["summary"][key] if policy in runs else math.nan

    comparison = {f"{p}_vs_ideal": get(p, "vs_ideal") for p in runs}
    dyn = get("dynamic", "makespan_s")
    comparison["speedup"] = get("static", "makespan_s") / dyn if dyn and dyn > 0 else math.nan
    comparison.update({f"{p}_peer_wait_fraction": get(p, "peer_wait_fraction") for p in runs})
    return {"policies": runs, "comparison": comparison}


def _share(rows: list[float], who: int | None) -> float:
    total = sum(rows)
    return rows[who] / total if who is not None and total else math.nan


def _pct(v: float) -> str:
    return "nan" if v is None or not math.isfinite(v) else f"{100 * v:.0f}%"


def run(args: argparse.Namespace) -> int:
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
        model = Stragglers(stragglers, lt.workers)  # a worker out of range fails here, before Ray starts
    except ValueError as e:
        print(f"psrec longtail: {e}", file=sys.stderr)
        return 2
    do_async, do_coll = args.mode in ("async", "both", "all"), args.mode in ("collective", "both", "all")
    do_sync = args.mode in ("sync", "all")
    try:
        staleness = () if args.staleness.strip() == "none" else tuple(int(s) for s in _split([args.staleness]))
        if any(s < 0 for s in staleness) or args.backup < 0:
            raise ValueError
    except ValueError:
        print(f"psrec longtail: --staleness {args.staleness!r} / --backup {args.backup}: expected integers >= 0 "
              "(or --staleness none)", file=sys.stderr)
        return 2

    run_dir = make_run_dir(cfg, "longtail")
    started_ray = False
    if do_async or cfg.collective.transport == "ray" or (do_sync and staleness and cfg.ps.transport != "inprocess"):
        import ray

        if not ray.is_initialized():
            # Logical CPUs: enough for the fractional requests of the workers and the queue.
            # address="local": a Ray of our own even when other clusters run on this machine (else Ray joins one)
            ray.init(address="local", num_cpus=max(8, 2 * args.workers), include_dashboard=False, log_to_driver=False,
                     configure_logging=False, runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
            started_ray = True
    res: dict[str, Any] = {"mode": args.mode}
    try:
        print(f"longtail ({args.mode}): {args.workers} workers, {rows:,} rows x {queue_cfg.epochs} epoch(s), "
              f"{queue_cfg.task_rows} rows/task, model {cfg.model.name}, stragglers "
              f"{stragglers.factors or 'none'}; run directory {run_dir}")
        if do_async:
            res.update(run_longtail(lt, queue_cfg, stragglers, lambda w: TrainRows(cfg), run_dir))
        if do_coll:
            # The collective queue covers the training range itself: the same rows as `rows`.
            ccfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, train_rows=rows))
            res["collective"] = run_collective_policies(ccfg, lt.workers, lt.policies, queue_cfg, stragglers)
        if do_sync:
            from psrec.experiments.longtail_sync import default_scenarios, run_sync_longtail

            scfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, train_rows=rows), stragglers=stragglers)
            res["sync"] = run_sync_longtail(scfg, lt.workers, run_dir / "sync",
                                            default_scenarios(args.backup, staleness, ps=bool(staleness)))
    finally:
        if started_ray:
            import ray

            ray.shutdown()

    base = [float(x) for x in model.base]
    res.setdefault("stragglers", model.describe())
    straggler = max(range(len(base)), key=base.__getitem__) if max(base) > 1 else None
    modes: list[dict[str, Any]] = []
    if do_async:
        worker_rows, policy_rows = [], []
        for policy, r in res["policies"].items():
            s, st = r["summary"], r["queue"]["stats"]
            for wk in s["workers"]:
                worker_rows.append({"policy": policy, "slowdown": base[wk["worker"]], **wk})
            policy_rows.append({"policy": policy, **s, "requeues": st["requeues"], "duplicates": st["duplicates"],
                                "exactly_once": r["queue"]["accounting"]["exactly_once"],
                                "take_ms": 1e3 * s["take_s_mean"], "task_ms": 1e3 * s["task_compute_s_mean"]})
            others = [w["idle_s"] / s["makespan_s"] for w in s["workers"] if w["worker"] != straggler]
            modes.append({"mode": "async", "policy": policy, "makespan_s": s["makespan_s"], "vs_ideal": s["vs_ideal"],
                          "straggler_rows_share": _share([w["rows"] for w in s["workers"]], straggler),
                          "others_lost_fraction": sum(others) / len(others) if others else math.nan})
        print("async workers (each its own model; nobody waits):")
        print(format_table(worker_rows, WORKER_COLUMNS))
        print()
        print(format_table(policy_rows, POLICY_COLUMNS))
    if do_coll:
        rank_rows, lock_rows = [], []
        for policy, r in res["collective"]["policies"].items():
            s, st = r["summary"], r["queue"]["stats"]
            for wk in s["workers"]:
                rank_rows.append({"policy": policy, "slowdown": base[wk["worker"]], **wk})
            lock_rows.append({"policy": policy, **s, "requeues": st["requeues"], "duplicates": st["duplicates"],
                              "exactly_once": r["queue"]["accounting"]["exactly_once"]})
            others = [w["wait_fraction"] for w in s["workers"] if w["worker"] != straggler]
            modes.append({"mode": "collective", "policy": policy, "makespan_s": s["makespan_s"],
                          "vs_ideal": s["vs_ideal"],
                          "straggler_rows_share": _share([w["rows"] for w in s["workers"]], straggler),
                          "others_lost_fraction": sum(others) / len(others) if others else math.nan})
        print()
        print("collective ranks in lockstep, fed by the same queue (busy = run - sync wait):")
        print(format_table(rank_rows, RANK_COLUMNS))
        print()
        print(format_table(lock_rows, LOCKSTEP_COLUMNS))
    if do_async and do_coll:
        print()
        print("others_lost_fraction: async = idle / makespan, collective = sync wait / makespan (mean over "
              "the non-stragglers)")
        print(format_table(modes, MODE_COLUMNS))
        by = {(m["mode"], m["policy"]): m for m in modes}

        def fig(mode: str, policy: str, key: str, fmt=lambda v: f"{v:.1f} s") -> str:
            m = by.get((mode, policy))
            return "n/a" if m is None or not math.isfinite(m[key]) else fmt(m[key])

        ca, cc = res["comparison"], res["collective"]["comparison"]
        idle = {p: str(r["summary"]["idle_steps"]) for p, r in res["collective"]["policies"].items()}
        print()
        print(EXPLAIN.format(
            a_static=fig("async", "static", "makespan_s"), a_dynamic=fig("async", "dynamic", "makespan_s"),
            a_speedup=_fmt(ca["speedup"]), a_share_static=fig("async", "static", "straggler_rows_share", _pct),
            a_share_dynamic=fig("async", "dynamic", "straggler_rows_share", _pct),
            c_static=fig("collective", "static", "makespan_s"),
            c_dynamic=fig("collective", "dynamic", "makespan_s"), c_speedup=_fmt(cc["speedup"]),
            c_share_dynamic=fig("collective", "dynamic", "straggler_rows_share", _pct),
            c_wait=fig("collective", "dynamic", "others_lost_fraction", _pct),
            c_idle_static=idle.get("static", "n/a"), c_idle_dynamic=idle.get("dynamic", "n/a")))
    if do_sync:
        sync_rows = [{"scenario": n, **f, "slow_workers": "; ".join(
            f"w{s['worker']} {s['factor']:.1f}x since {s['since_step']}" for s in f["slow_workers"]) or "-",
            "rows_by_worker": "/".join(str(r) for r in f["rows_by_worker"])}
            for n, f in res["sync"]["scenarios"].items()]
        print()
        print("synchronous training under the straggler (step_ms: the job's wall-clock seconds per step after "
              f"{cfg.train.warmup_steps} warm-up steps; vs_ideal and auc_delta against the same architecture's "
              "no-straggler run; time_to_auc_s: seconds until the progressive AUC, each batch's before it was "
              "trained on, reaches the baseline's final one minus 0.005):")
        print(format_table(sync_rows, SYNC_COLUMNS))
        print(f"step time per worker per step: {res['sync']['picture']}")
    res["modes"] = modes
    res["run_dir"] = str(run_dir)
    write_results(run_dir, res)
    if do_coll:
        cc = res["collective"]["comparison"]
        print(f"collective_static_vs_ideal={_fmt(cc.get('static_vs_ideal', math.nan))} "
              f"collective_dynamic_vs_ideal={_fmt(cc.get('dynamic_vs_ideal', math.nan))} "
              f"collective_speedup={_fmt(cc['speedup'])} "
              f"collective_peer_wait_fraction={_fmt(cc.get('dynamic_peer_wait_fraction', math.nan))}")
    if do_async:
        c = res["comparison"]
        print(f"gantt charts: {', '.join(res['gantt'])}")
        print(f"on dedicated cores the straggler factors alone would give static_vs_ideal="
              f"{_fmt(c['static_vs_ideal_dedicated_cores'])}; here cores are shared and a straggler left alone "
              f"runs faster (compare rows_per_s with all_busy_rows_per_s)")
        print(f"static_vs_ideal={_fmt(c['static_vs_ideal'])} dynamic_vs_ideal={_fmt(c['dynamic_vs_ideal'])} "
              f"speedup={_fmt(c['speedup'])} take_overhead={_fmt(c['take_overhead'])}")
    if do_sync:
        sc = res["sync"]["scenarios"]

        def get(name: str, key: str = "vs_ideal") -> float:
            return sc[name][key] if name in sc else math.nan

        print(f"sync_vs_ideal={_fmt(get('sync'))} proportional_vs_ideal={_fmt(get('proportional'))} "
              f"backup_vs_ideal={_fmt(get('backup'))} ssp2_vs_ideal={_fmt(get('ssp2'))} "
              f"auc_delta_proportional={get('proportional', 'auc_delta'):+.4f} "
              f"ps_sync_vs_ideal={_fmt(get('ps_sync'))} ps_proportional_vs_ideal={_fmt(get('ps_proportional'))} "
              f"ps_backup_vs_ideal={_fmt(get('ps_backup'))}")
    return 0
