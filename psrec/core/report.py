"""What one worker measured, and its summary: the same figures for every mode.

The throughput rule, used by every mode, `psrec compare`, its pictures and the simulator's
calibration alike: the first `warmup` steps of a worker (first-call allocations, tables
growing from empty, first connections) are left out of the steady-state figures
(`samples_per_s`, `step_p50`/`step_p95`/`step_mean`, `comm_fraction`, `steady_phases`) and
reported apart (`warmup`). Totals (`phases`, `rows`, bytes) count every step.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from psrec.comm.traffic import Traffic
from psrec.core.step import COMM_PHASES, PHASES, WAIT_PHASES, StepRecord

__all__ = ["WorkerReport", "summarize_steps", "steady_split", "progress_of", "DEFAULT_WARMUP_STEPS"]

DEFAULT_WARMUP_STEPS = 2


def steady_split(n_steps: int, warmup: int) -> int:
    """Warm-up steps actually left out of `n_steps`: `warmup`, but at least one step stays.

    >>> steady_split(10, 2), steady_split(2, 2), steady_split(0, 2)
    (2, 1, 0)
    """
    return max(0, min(warmup, n_steps - 1))


@dataclass
class WorkerReport:
    """One worker's step records, loss average and counters.

    Args:
        worker: the worker's index (a collective rank, a PS worker, 0 locally).
        steps: its `StepRecord`s in order.
        loss_ema: exponential moving average of the training loss (weight 0.02 per step).
        tasks: work-queue tasks it reported done.
        end_wait: seconds in control all-reduces that started no step (a collective rank polling).
        run_seconds: seconds of its run loop, first step (or take) to the end.
    """

    worker: int
    steps: list[StepRecord] = field(default_factory=list)
    loss_ema: float | None = None
    tasks: int = 0
    end_wait: float = 0.0
    run_seconds: float = 0.0

    def add(self, rec: StepRecord, loss: float | None) -> None:
        self.steps.append(rec)
        if loss is not None:
            self.loss_ema = loss if self.loss_ema is None else 0.98 * self.loss_ema + 0.02 * loss

    def summary(self, warmup: int = DEFAULT_WARMUP_STEPS) -> dict[str, Any]:
        """The worker's figures (`summarize_steps`) plus its counters."""
        out = summarize_steps(self.worker, self.steps, self.loss_ema, warmup)
        if not self.steps:
            return out
        peer = float(sum(r.peer_wait for r in self.steps))
        out.update({
            "tasks": self.tasks,
            "idle_steps": sum(1 for r in self.steps if r.rows == 0),
            "straggler_seconds": float(sum(r.straggler for r in self.steps)),
            "peer_wait_seconds": peer,
            "end_wait_seconds": self.end_wait,
            "sync_wait_seconds": out["phases"]["wait"] + self.end_wait,
            "run_seconds": self.run_seconds,
        })
        return out


def summarize_steps(worker: int, steps: Sequence[StepRecord], loss: float | None = None,
                    warmup: int = DEFAULT_WARMUP_STEPS) -> dict[str, Any]:
    """Per-phase totals (seconds), steady-state step times and throughput, communication
    fraction (measured, and with the emulated network added), and traffic of one worker.

    `step_seconds` (one {phase: seconds} per step) and `step_emulated` keep every step, so a
    reader can take other robust statistics (`psrec.sim.results_map`).

    >>> recs = [StepRecord(i, dict.fromkeys(PHASES, 0.0) | {"compute": c, "pull": 0.01}, 8)
    ...         for i, c in enumerate([0.5, 0.03, 0.03, 0.03])]
    >>> s = summarize_steps(0, recs, warmup=1)
    >>> s["warmup"]["steps"], round(s["step_p50"], 3), round(s["comm_fraction"], 3), round(s["samples_per_s"])
    (1, 0.04, 0.25, 200)
    """
    if not steps:
        return {"worker": worker, "steps": 0}
    w = steady_split(len(steps), warmup)
    steady = steps[w:]
    step_s = np.array([r.total for r in steps])
    emu = np.array([r.traffic.emulated for r in steps])
    s_step, s_emu = step_s[w:], emu[w:]
    totals = {p: float(sum(r.seconds.get(p, 0.0) for r in steps)) for p in PHASES}
    s_totals = {p: float(sum(r.seconds.get(p, 0.0) for r in steady)) for p in PHASES}
    s_wall = float(s_step.sum())
    s_comm = sum(s_totals[p] for p in COMM_PHASES)
    s_rows = sum(r.rows for r in steady)
    traffic = Traffic()
    for r in steps:
        traffic += r.traffic
    ar_total = float(sum(r.allreduce_total for r in steps))
    nan = float("nan")
    return {
        "worker": worker,
        "steps": len(steps),
        "rows": sum(r.rows for r in steps),
        "phases": totals,
        "warmup": {"steps": w, "seconds": float(step_s[:w].sum()), "rows": sum(r.rows for r in steps[:w])},
        "steady_steps": len(steady),
        "steady_phases": s_totals,
        "steady_emulated_seconds": float(s_emu.sum()),
        "step_p50": float(np.percentile(s_step, 50)),
        "step_p95": float(np.percentile(s_step, 95)),
        "step_mean": float(s_step.mean()),
        "samples_per_s": s_rows / s_wall if s_wall else nan,
        "comm_fraction": s_comm / s_wall if s_wall else nan,
        "wait_fraction": sum(s_totals[p] for p in WAIT_PHASES) / s_wall if s_wall else nan,
        "emulated_net_seconds": float(emu.sum()),
        "emulated_step_p50": float(np.percentile(s_step + s_emu, 50)),
        "emulated_comm_fraction": (s_comm + s_emu.sum()) / (s_wall + s_emu.sum()) if s_wall else nan,
        "bytes_sent": int(traffic.bytes_sent),
        "bytes_received": int(traffic.bytes_received),
        "messages": int(traffic.messages),
        "bytes_by_tag": dict(traffic.bytes_by_tag),
        "messages_by_tag": dict(traffic.messages_by_tag),
        # the PS traffic's two calls apart (`psrec calibrate` fits alpha-beta per phase)
        "pull_bytes": int(traffic.bytes_by_tag.get("pull", 0)),
        "push_bytes": int(traffic.bytes_by_tag.get("push", 0)),
        "pull_messages": int(traffic.messages_by_tag.get("pull", 0)),
        "push_messages": int(traffic.messages_by_tag.get("push", 0)),
        "allreduce_total_seconds": ar_total,
        "allreduce_exposed_seconds": totals["allreduce"],
        "allreduce_hidden_seconds": max(0.0, ar_total - totals["allreduce"]),
        "prefetch_total_seconds": float(sum(r.prefetch_total for r in steps)),
        "prefetch_hidden_seconds": float(sum(r.prefetch_hidden for r in steps)),
        "loss": loss,
        # backup workers (collective.backup): rows of late gradients dropped, in all of the
        # steps (every rank books the step's), and this worker's own dropped gradients
        "dropped_rows": int(sum(r.dropped_rows for r in steps)),
        "dropped_gradients": sum(1 for r in steps if not r.applied),
        "step_seconds": [{p: float(r.seconds.get(p, 0.0)) for p in PHASES} for r in steps],
        "step_emulated": [float(e) for e in emu],
        # seconds each step's collectives blocked inside the library, by kind (`Traffic.call_seconds_by_tag`)
        "step_call_seconds": [{k: float(v) for k, v in r.traffic.call_seconds_by_tag.items()} for r in steps],
    }


def progress_of(report: WorkerReport | None) -> dict[str, Any]:
    """Cumulative figures of a worker so far (read while it trains on another thread)."""
    steps = list(report.steps) if report is not None else []
    return {"steps": len(steps), "rows": sum(r.rows for r in steps),
            "phases": {p: sum(r.seconds.get(p, 0.0) for r in steps) for p in PHASES},
            "sent": sum(r.bytes_sent for r in steps), "received": sum(r.bytes_received for r in steps)}
