"""Summaries of per-step records, shared by the PS and collective workers.

A step record is anything with `seconds` (phase -> seconds, summing to the step's wall
time), `emulated` (seconds the step's traffic would take on the emulated network),
`bytes_sent`, `bytes_received` and `rows`.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["summarize_steps", "PhaseSeconds", "WorkerSteps"]


class PhaseSeconds:
    """Mixin of a step record whose `seconds` (phase -> seconds) sum to the step's wall time."""

    seconds: dict[str, float]

    @property
    def total(self) -> float:
        return sum(self.seconds.values())


@dataclass
class WorkerSteps:
    """What every worker's report holds: its index, step records, loss EMA, tasks done."""

    worker: int
    steps: list = field(default_factory=list)
    loss_ema: float | None = None
    tasks: int = 0  # work-queue tasks this worker reported done


def summarize_steps(worker: int, steps: Sequence[Any], phases: Sequence[str], comm_phases: Sequence[str],
                    loss: float | None = None) -> dict[str, Any]:
    """Per-phase totals (seconds), step-time p50/p95, communication fraction measured and with
    the emulated network added, traffic, and throughput of one worker.

    `steady_phases` / `steady_emulated_seconds` / `steady_steps` repeat the totals without the
    first step, which carries one-off set-up (lazy tables, first connections, allocator
    warm-up: several steps' worth in short runs); `psrec calibrate` fits on them.

    `step_seconds` (one {phase: seconds} per step) and `step_emulated` (emulated seconds per
    step) keep every step, so that a reader can take robust statistics (medians over steps
    after a warm-up: `psrec.sim.results_map`) where another job's load spikes some steps."""
    if not steps:
        return {"worker": worker, "steps": 0}
    totals = {p: float(sum(r.seconds.get(p, 0.0) for r in steps)) for p in phases}
    step_s = np.array([sum(r.seconds.values()) for r in steps])
    emu = np.array([r.emulated for r in steps])
    comm = sum(totals[p] for p in comm_phases)
    wall = float(step_s.sum())
    rows = sum(r.rows for r in steps)
    return {
        "worker": worker,
        "steps": len(steps),
        "rows": rows,
        "phases": totals,
        "step_p50": float(np.percentile(step_s, 50)),
        "step_p95": float(np.percentile(step_s, 95)),
        "comm_fraction": comm / wall if wall else float("nan"),
        "emulated_net_seconds": float(emu.sum()),
        "emulated_step_p50": float(np.percentile(step_s + emu, 50)),
        "emulated_comm_fraction": (comm + emu.sum()) / (wall + emu.sum()) if wall else float("nan"),
        "bytes_sent": int(sum(r.bytes_sent for r in steps)),
        "bytes_received": int(sum(r.bytes_received for r in steps)),
        "samples_per_s": rows / wall if wall else float("nan"),
        "loss": loss,
        "steady_steps": len(steps) - 1,
        "steady_phases": {p: float(sum(r.seconds.get(p, 0.0) for r in steps[1:])) for p in phases},
        "steady_emulated_seconds": float(emu[1:].sum()),
        "step_seconds": [{p: float(r.seconds.get(p, 0.0)) for p in phases} for r in steps],
        "step_emulated": [float(e) for e in emu],
    }
