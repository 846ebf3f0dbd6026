"""The long-tail experiment: one job under several policies with the same stragglers.

For each policy a fresh queue actor and the same worker actors, reset to fresh model state
(so no run inherits another's trained tables), run the whole job; the worker loop records every task.
From those records (`summarize`, a pure function):

- makespan: end of the last task, seconds after the common start instant;
- per worker: rows, tasks, busy seconds (compute + straggler time), idle = makespan - busy;
- ideal makespan = total rows / sum of the workers' *measured* speeds, each taken over the
  window in which all workers were running: the makespan of a perfect split in which
  every worker, at the speed it showed under full contention, finishes at the same time.
  Speeds are measured rather than assumed because 4 workers on a 2-core machine (shared
  with other jobs) contend for the cores: a worker's speed depends on who else is running,
  so a straggler left alone at the end runs faster than it would in a balanced schedule;
- take overhead = mean seconds of a take round trip (done + take in one call) / mean
  compute seconds of a task.

`draw_gantt` draws one chart per policy on a common time axis (Agg backend, PNG).

`summarize_lockstep` is the same reading of a synchronous (collective) job, whose ranks
all step together: there a rank's lost time is not idle time at the end but a wait at every
step's rendezvous for the slowest rank, and the makespan is the slowest rank's busy time
whatever the policy (docs/longtail.md).
"""
from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from workqueue.actor import WorkerGroup, WorkFn, WorkQueue
from workqueue.config import WorkQueueConfig
from workqueue.stragglers import StragglerConfig, Stragglers

__all__ = ["LongtailConfig", "run_longtail", "run_policy", "summarize", "summarize_lockstep", "draw_gantt"]


@dataclass(frozen=True)
class LongtailConfig:
    """The experiment around the queue.

    Args:
        workers: worker actors.
        policies: policies to run, in order, each on a fresh queue and fresh work state.
        first_row, rows: the row range of the job.
        worker_cpus, queue_cpus: Ray CPU requests (logical; fractional is fine).
        straggle: `sleep` or `spin` for the straggler's extra time.
        start_timeout_s: bound on actor start + work setup.
        run_timeout_s: bound on one policy's run.
        patience_s: bounded shutdown: wait this long, then `ray.kill`.
    """

    workers: int = 4
    policies: tuple[str, ...] = ("static", "dynamic")
    first_row: int = 0
    rows: int = 1_000_000
    # Logical CPUs only (Ray does not pin): 1 per worker would refuse 4 workers on a 2-CPU Ray.
    worker_cpus: float = 0.5
    queue_cpus: float = 0.25
    # sleep: a straggler waiting on a noisy neighbour does not burn our cores (spin would
    # steal CPU from the other workers on this shared 2-core machine and slow them too).
    straggle: Literal["sleep", "spin"] = "sleep"
    start_timeout_s: float = 300.0
    run_timeout_s: float = 3600.0
    patience_s: float = 10.0

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if not self.policies:
            raise ValueError("policies must name at least one policy")
        for p in self.policies:
            WorkQueueConfig(policy=p)  # type: ignore[arg-type]  # raises on an unknown policy
        if len(set(self.policies)) != len(self.policies):
            raise ValueError(f"policies must not repeat: {self.policies}")
        if self.rows < 1 or self.first_row < 0:
            raise ValueError("rows must be >= 1 and first_row >= 0")
        if self.worker_cpus <= 0 or self.queue_cpus <= 0:
            raise ValueError("worker_cpus and queue_cpus must be > 0")
        if self.straggle not in ("sleep", "spin"):
            raise ValueError(f"straggle must be sleep or spin, got {self.straggle!r}")


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else math.nan


def summarize(records: Sequence[dict[str, Any]], num_workers: int) -> dict[str, Any]:
    """Makespan, ideal makespan, per-worker busy/idle/speed and take overhead of one run.

    `records` are the worker loop's task records (`t_start`, `t_end`, `compute_s`,
    `extra_s`, `take_s`, `rows`, `worker`), times in seconds from the common start.

    Ideal makespan = total rows / sum over workers of `all_busy_rows_per_s`: each worker's
    rows per second over the window in which every worker was still running (start -> the
    first worker's last task end; a task crossing the window's end counts pro rata). That is
    the concurrency a perfectly balanced schedule keeps to the end. Speeds over each
    worker's own busy time (`rows_per_s`, also reported) would flatter a straggler that
    finishes alone: on shared cores it speeds up once the others stop.

    Example:
        >>> recs = [{"worker": 0, "rows": 100, "t_start": 0.0, "t_end": 1.0, "compute_s": 1.0,
        ...          "extra_s": 0.0, "take_s": 0.01},
        ...         {"worker": 1, "rows": 100, "t_start": 0.0, "t_end": 2.0, "compute_s": 1.0,
        ...          "extra_s": 1.0, "take_s": 0.01}]
        >>> s = summarize(recs, 2)
        >>> s["makespan_s"], round(s["ideal_makespan_s"], 4), round(s["vs_ideal"], 4)
        (2.0, 1.3333, 1.5)
    """
    makespan = max((r["t_end"] for r in records), default=0.0)
    finishes = [max(r["t_end"] for r in records if r["worker"] == w)
                for w in range(num_workers) if any(r["worker"] == w for r in records)]
    window = min(finishes, default=0.0)  # seconds during which every worker with work was running
    workers = []
    for w in range(num_workers):
        mine = [r for r in records if r["worker"] == w]
        busy = sum(r["t_end"] - r["t_start"] for r in mine)
        rows = sum(r["rows"] for r in mine)
        in_window = sum(r["rows"] * _overlap(r["t_start"], r["t_end"], window) for r in mine)
        workers.append({
            "worker": w, "tasks": len(mine), "rows": rows, "busy_s": busy,
            "idle_s": makespan - busy,
            "compute_s": sum(r["compute_s"] for r in mine),
            "straggler_s": sum(r["extra_s"] for r in mine),
            "take_s": sum(r["take_s"] for r in mine),
            "finish_s": max((r["t_end"] for r in mine), default=0.0),
            "rows_per_s": rows / busy if busy > 0 else 0.0,
            "all_busy_rows_per_s": in_window / window if window > 0 else 0.0,
        })
    total_rows = sum(wk["rows"] for wk in workers)
    speed = sum(wk["all_busy_rows_per_s"] for wk in workers)  # rows/s of all workers together
    ideal = total_rows / speed if speed > 0 else math.nan
    take_mean = _mean([r["take_s"] for r in records])
    compute_mean = _mean([r["compute_s"] for r in records])
    return {
        "makespan_s": makespan,
        "ideal_makespan_s": ideal,
        "vs_ideal": makespan / ideal if ideal and ideal > 0 else math.nan,
        "all_busy_window_s": window,
        "total_rows": total_rows,
        "aggregate_rows_per_s": speed,
        "tasks": len(records),
        "take_s_mean": take_mean,
        "task_compute_s_mean": compute_mean,
        "task_s_mean": _mean([r["t_end"] - r["t_start"] for r in records]),
        "take_overhead": take_mean / compute_mean if compute_mean and compute_mean > 0 else math.nan,
        "workers": workers,
    }


def summarize_lockstep(ranks: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Makespan, ideal makespan and per-rank busy/wait of one synchronous (lockstep) run.

    `ranks`: one dict per rank with `worker`, `rows`, `steps`, `idle_steps` (steps without
    rows of its own), `run_s` (seconds in its training loop), `sync_wait_s` (seconds it
    waited at the steps' first rendezvous for the slowest rank) and `straggler_s` (injected
    slowdown seconds).

    busy = run - sync wait: what the rank spent on its own steps. In lockstep every step
    lasts as long as its slowest rank, so the makespan is about the largest busy time
    (`slowest_busy_s`; `vs_slowest_busy` ~ 1), and the others' difference is their wait.
    Ideal makespan = total rows / sum of the ranks' rows per busy second: a split in
    proportion to speed with nobody waiting (what asynchronous workers with a dynamic queue
    approach); `vs_ideal` is then the price of the lockstep. `peer_wait_fraction` is the
    mean sync-wait / makespan of every rank but the slowest.

    Example (two ranks, 10 steps of 100 rows each; rank 1 is 3x slower):
        >>> s = summarize_lockstep([
        ...     {"worker": 0, "rows": 1000, "steps": 10, "idle_steps": 0, "run_s": 3.0, "sync_wait_s": 2.0,
        ...      "straggler_s": 0.0},
        ...     {"worker": 1, "rows": 1000, "steps": 10, "idle_steps": 0, "run_s": 3.0, "sync_wait_s": 0.0,
        ...      "straggler_s": 2.0}])
        >>> s["makespan_s"], s["ideal_makespan_s"], s["vs_ideal"], s["slowest"], round(s["peer_wait_fraction"], 4)
        (3.0, 1.5, 2.0, 1, 0.6667)
    """
    makespan = max((r["run_s"] for r in ranks), default=0.0)
    out_ranks = []
    for r in ranks:
        busy = max(0.0, r["run_s"] - r["sync_wait_s"])
        out_ranks.append({**r, "busy_s": busy, "rows_per_busy_s": r["rows"] / busy if busy > 0 else 0.0,
                          "wait_fraction": r["sync_wait_s"] / makespan if makespan > 0 else math.nan})
    total_rows = sum(r["rows"] for r in out_ranks)
    speed = sum(r["rows_per_busy_s"] for r in out_ranks)
    ideal = total_rows / speed if speed > 0 else math.nan
    slowest = max(out_ranks, key=lambda r: r["busy_s"], default=None)
    peers = [r["wait_fraction"] for r in out_ranks if r is not slowest]
    return {
        "makespan_s": makespan,
        "ideal_makespan_s": ideal,
        "vs_ideal": makespan / ideal if ideal and ideal > 0 else math.nan,
        "slowest": slowest["worker"] if slowest else None,
        "slowest_busy_s": slowest["busy_s"] if slowest else math.nan,
        "vs_slowest_busy": makespan / slowest["busy_s"] if slowest and slowest["busy_s"] > 0 else math.nan,
        "slowest_rows_share": slowest["rows"] / total_rows if slowest and total_rows else math.nan,
        "peer_wait_fraction": _mean(peers),
        "steps": max((r["steps"] for r in out_ranks), default=0),
        "idle_steps": sum(r["idle_steps"] for r in out_ranks),
        "total_rows": total_rows,
        "workers": out_ranks,
    }


def _overlap(a: float, b: float, window: float) -> float:
    """Fraction of the interval [a, b) that lies inside [0, window)."""
    if b <= a:
        return 1.0 if a < window else 0.0
    return max(0.0, min(b, window) - a) / (b - a)


def run_policy(policy: str, cfg: LongtailConfig, queue_cfg: WorkQueueConfig, group: WorkerGroup,
               log: Callable[[str], None] = print) -> dict[str, Any]:
    """One run of the job under `policy`: a fresh queue actor, the group's workers with
    fresh work state, run to the end; the queue is shut down (bounded) afterwards."""
    qcfg = dataclasses.replace(queue_cfg, policy=policy)
    end_row = cfg.first_row + cfg.rows
    t = time.perf_counter()
    setup = group.reset(timeout_s=cfg.start_timeout_s)
    queue = WorkQueue.start(qcfg, cfg.workers, cfg.first_row, end_row, num_cpus=cfg.queue_cpus,
                            ready_timeout_s=cfg.start_timeout_s)
    try:
        log(f"[{policy}] queue and {cfg.workers} workers ready in {time.perf_counter() - t:.1f} s; running")
        group.launch(queue)
        out = group.wait(timeout_s=cfg.run_timeout_s)
        if out["timed_out"]:
            raise TimeoutError(f"policy {policy}: workers still running after {cfg.run_timeout_s} s")
        stats, accounting, metrics = queue.stats(), queue.accounting(), queue.metrics_snapshot()
    finally:
        queue.shutdown(cfg.patience_s)
    records = sorted((r for res in out["results"].values() for r in res["tasks"]),
                     key=lambda r: (r["worker"], r["t_start"]))
    summary = summarize(records, cfg.workers)
    log(f"[{policy}] makespan {summary['makespan_s']:.1f} s, ideal {summary['ideal_makespan_s']:.1f} s")
    polls = {w: {"polls": res["polls"], "poll_take_s": res["poll_take_s"], "t_finish": res["t_finish"]}
             for w, res in out["results"].items()}
    return {"policy": policy, "summary": summary, "queue": {"stats": stats, "accounting": accounting,
            "metrics": metrics}, "lost_workers": out["lost"], "setup": setup, "polls": polls,
            "records": records}


def run_longtail(cfg: LongtailConfig, queue_cfg: WorkQueueConfig, stragglers: StragglerConfig | None,
                 work_factory: Callable[[int], WorkFn], run_dir: Path | None = None,
                 log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every policy of `cfg.policies` and, with `run_dir`, draw the Gantt charts there.

    Ray must be initialised by the caller. `work_factory(w)` gives worker w's work function.
    The worker actors are started once and reset (fresh work state) before each policy.
    Returns `{"policies": {name: run_policy(...)}, "comparison": {...}, ...}`.
    """
    group = WorkerGroup([work_factory(w) for w in range(cfg.workers)], cfg.workers, stragglers=stragglers,
                        num_cpus=cfg.worker_cpus, straggle=cfg.straggle)
    t = time.perf_counter()
    try:
        group.start(timeout_s=cfg.start_timeout_s, setup=False)  # each policy runs setup
        log(f"started {cfg.workers} worker actors in {time.perf_counter() - t:.1f} s")
        runs = {p: run_policy(p, cfg, queue_cfg, group, log) for p in cfg.policies}
    finally:
        group.shutdown(cfg.patience_s)
    model = Stragglers(stragglers or StragglerConfig(), cfg.workers)
    comparison = compare(runs)
    # The reference on dedicated cores, from the fixed/drawn factors alone (no slow periods):
    # static's makespan is the slowest share, share x max factor; the ideal is total work over
    # the aggregate speed sum(1/factor). One 4x worker of 4: 4 x 1/4 x 3.25 = 3.25.
    f = model.base
    comparison["static_vs_ideal_dedicated_cores"] = float(f.max() * (1.0 / f).sum() / len(f))
    out: dict[str, Any] = {"config": dataclasses.asdict(cfg), "queue_config": dataclasses.asdict(queue_cfg),
                           "stragglers": model.describe(), "policies": runs, "comparison": comparison}
    if run_dir is not None:
        out["gantt"] = draw_gantt(runs, model, Path(run_dir))
    return out


def compare(runs: dict[str, dict[str, Any]]) -> dict[str, float]:
    """The headline ratios: each policy against its ideal; static over dynamic makespan."""
    def get(policy: str, key: str) -> float:
        return runs[policy]["summary"][key] if policy in runs else math.nan

    res = {f"{p}_vs_ideal": get(p, "vs_ideal") for p in runs}
    res.setdefault("static_vs_ideal", math.nan)
    res.setdefault("dynamic_vs_ideal", math.nan)
    dyn = get("dynamic", "makespan_s")
    res["speedup"] = get("static", "makespan_s") / dyn if dyn and dyn > 0 else math.nan
    res["take_overhead"] = get("dynamic", "take_overhead")
    return res


FAST_COLOR, SLOW_COLOR = "#4c72b0", "#dd8452"  # the Gantt charts' worker classes


def draw_gantt(runs: dict[str, dict[str, Any]], stragglers: Stragglers, run_dir: Path) -> list[str]:
    """One PNG per policy, `gantt_<policy>.png`: a bar per task (compute, then straggler time
    hatched), blue for a fast worker's task and orange for a slow one's, slow periods shaded,
    the makespan and the ideal makespan as vertical lines. All charts share the time axis so
    the tails compare at a glance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    run_dir.mkdir(parents=True, exist_ok=True)
    xmax = max((r["summary"]["makespan_s"] for r in runs.values()), default=1.0) * 1.05 or 1.0
    paths = []
    for policy, run in runs.items():
        s, n = run["summary"], len(run["summary"]["workers"])
        fig, ax = plt.subplots(figsize=(10, 1.0 + 0.6 * n))
        for r in run["records"]:
            y = r["worker"]
            # the colour says who did the task: a slow worker (base factor > 1) or a fast one;
            # a white edge separates consecutive tasks of one worker
            color = SLOW_COLOR if stragglers.base_factor(y) > 1 else FAST_COLOR
            ax.barh(y, r["compute_s"], left=r["t_start"], height=0.7, color=color, edgecolor="white", linewidth=0.6)
            if r["extra_s"] > 0:
                ax.barh(y, r["extra_s"], left=r["t_start"] + r["compute_s"], height=0.7, color=color,
                        alpha=0.35, hatch="///", edgecolor="0.4", linewidth=0)
        for w in range(n):
            for a, b in stragglers.episodes(w, xmax):
                ax.barh(w, min(b, xmax) - a, left=a, height=0.95, color="red", alpha=0.1, edgecolor="none")
        ax.axvline(s["makespan_s"], color="red", lw=1.2, label=f"makespan {s['makespan_s']:.1f} s")
        ax.axvline(s["ideal_makespan_s"], color="green", lw=1.2, ls="--",
                   label=f"ideal {s['ideal_makespan_s']:.1f} s")
        ax.set_yticks(range(n), [f"w{w} ({stragglers.base_factor(w):.3g}x)" for w in range(n)])
        ax.set_ylim(-0.6, n - 0.4)
        ax.invert_yaxis()
        ax.set_xlim(0, xmax)
        ax.set_xlabel("seconds since start (solid: compute, hatched: straggler time)")
        ax.set_title(f"{policy}: {s['tasks']} tasks, makespan / ideal = {s['vs_ideal']:.2f}")
        lines, labels = ax.get_legend_handles_labels()
        swatches = [Patch(color=FAST_COLOR, label="task of a fast worker"),
                    Patch(color=SLOW_COLOR, label="task of a slow worker")]
        ax.legend(handles=swatches + lines, labels=[p.get_label() for p in swatches] + labels, loc="lower right",
                  fontsize=8)
        fig.tight_layout()
        path = run_dir / f"gantt_{policy}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(str(path))
    return paths
