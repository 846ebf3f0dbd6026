"""Every step of a run, as a log and as a timeline, written into the run directory.

    steps.jsonl   one JSON object per worker step: step, worker, loss, rows, t_start (time.time()
                  seconds), seconds (the step's), phases (seconds), bytes_sent, bytes_received, bytes_by_tag,
                  auc (the batch's progressive AUC: predicted before it was trained on)
    trace.json    Chrome trace-event format (open in https://ui.perfetto.dev or chrome://tracing):
                  one track per worker, one slice per phase of each step, on one time axis; PS
                  shards' counters (rows, requests, apply seconds) from the driver's live polls
    timeline.png  a few steady steps of every worker, phase by phase

A step books each phase's seconds as one total (compute is booked in two pieces), so a step's
slices are laid out in execution order from its start, one slice per phase: the widths are
exact, the order inside a step is the step's usual one (`EXEC_ORDER`).
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from psrec.core.report import WorkerReport
from psrec.core.step import PHASES

__all__ = ["EXEC_ORDER", "step_rows", "trace_events", "write_run_files"]

# the order a step runs its phases in (psrec.core.step.TrainStep.train_batch)
EXEC_ORDER = ("data", "wait", "pull", "alltoall", "lookup", "compute", "allreduce", "apply", "push")
assert sorted(EXEC_ORDER) == sorted(PHASES)
COLORS = {"data": "#8c8c8c", "wait": "#d62728", "pull": "#1f77b4", "alltoall": "#17becf", "lookup": "#9467bd",
          "compute": "#2ca02c", "allreduce": "#ff7f0e", "apply": "#bcbd22", "push": "#aec7e8"}


def step_rows(reports: Sequence[WorkerReport]) -> list[dict[str, Any]]:
    """One JSON-ready dict per worker step, in time order."""
    out = []
    for r in reports:
        for s in r.steps:
            out.append({"step": s.step, "worker": r.worker, "loss": s.loss, "rows": s.rows, "t_start": s.t_start,
                        "seconds": s.total, "phases": {p: s.seconds.get(p, 0.0) for p in PHASES},
                        "bytes_sent": int(s.bytes_sent), "bytes_received": int(s.bytes_received),
                        "bytes_by_tag": dict(s.bytes_by_tag), "applied": s.applied, "dropped_rows": s.dropped_rows,
                        "auc": s.auc})
    return sorted(out, key=lambda d: (d["t_start"], d["worker"]))


def trace_events(reports: Sequence[WorkerReport], mode: str = "",
                 ps_history: Sequence[tuple[float, list[dict]]] = ()) -> list[dict[str, Any]]:
    """Chrome trace events (timestamps in microseconds from the run's first step): pid 1 holds a
    track per worker ("X" slices per phase), pid 2 the PS shards' counters ("C" events)."""
    starts = [s.t_start for r in reports for s in r.steps] + [t for t, _ in ps_history]
    t0 = min(starts) if starts else 0.0
    ev: list[dict[str, Any]] = [{"ph": "M", "pid": 1, "name": "process_name", "args": {"name": f"{mode} workers"}}]
    for r in reports:
        ev.append({"ph": "M", "pid": 1, "tid": r.worker, "name": "thread_name", "args": {"name": f"worker {r.worker}"}})
        for s in r.steps:
            t = (s.t_start - t0) * 1e6
            for p in EXEC_ORDER:
                d = s.seconds.get(p, 0.0) * 1e6
                if d > 0:
                    ev.append({"ph": "X", "pid": 1, "tid": r.worker, "name": p, "cat": "phase", "ts": t, "dur": d,
                               "args": {"step": s.step, "rows": s.rows}})
                    t += d
    if ps_history:
        ev.append({"ph": "M", "pid": 2, "name": "process_name", "args": {"name": "PS shards"}})
    for t, shards in ps_history:
        for st in shards:
            ev.append({"ph": "C", "pid": 2, "name": f"ps {st['shard']}", "ts": (t - t0) * 1e6,
                       "args": {"rows": sum(st["rows"].values()), "requests": st["requests"],
                                "apply_seconds": st["apply_seconds"]}})
    return ev


def _timeline_png(path: Path, reports: Sequence[WorkerReport], mode: str, steps: int = 4) -> None:
    """`steps` steady steps (after the first two) of every worker on one time axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = [(r.worker, r.steps[min(2, max(0, len(r.steps) - steps)):][:steps]) for r in reports if r.steps]
    if not chosen:
        return
    t0 = min(s.t_start for _, ss in chosen for s in ss)
    fig, ax = plt.subplots(figsize=(10, 0.6 + 0.5 * len(chosen)))
    for y, (_, ss) in enumerate(chosen):
        for s in ss:
            t = (s.t_start - t0) * 1e3
            for p in EXEC_ORDER:
                d = s.seconds.get(p, 0.0) * 1e3
                if d > 0:
                    ax.broken_barh([(t, d)], (y - 0.4, 0.8), color=COLORS[p])
                    t += d
    ax.set_yticks(range(len(chosen)), [f"worker {w}" for w, _ in chosen])
    ax.set_xlabel("time since the first step shown (ms)")
    ax.set_title(f"{mode}: {steps} steps per worker, by phase")
    handles = [plt.Rectangle((0, 0), 1, 1, color=COLORS[p]) for p in EXEC_ORDER]
    ax.legend(handles, EXEC_ORDER, ncol=len(EXEC_ORDER), fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.3))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_run_files(run_dir: Path, reports: Sequence[WorkerReport], mode: str = "",
                    ps_history: Sequence[tuple[float, list[dict]]] = ()) -> None:
    """steps.jsonl, trace.json and timeline.png of a run into `run_dir` (module doc)."""
    run_dir = Path(run_dir)
    with open(run_dir / "steps.jsonl", "w") as f:
        for row in step_rows(reports):
            f.write(json.dumps(row) + "\n")
    (run_dir / "trace.json").write_text(json.dumps({"traceEvents": trace_events(reports, mode, ps_history),
                                                    "displayTimeUnit": "ms"}))
    _timeline_png(run_dir / "timeline.png", reports, mode)
