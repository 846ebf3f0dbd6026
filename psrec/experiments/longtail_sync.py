"""The long tail of synchronous training: one straggler scenario under each remedy.

Scenarios (each a full run of `psrec.train`'s collective or PS path, evaluated on the same
held-out rows), with the straggler model of `[stragglers]`:

    ideal          collective, N ranks, no straggler: the baseline step time and AUC
    sync           collective, N ranks in plain lockstep: every step waits for the straggler
    proportional   collective, N ranks, speed-proportional shares of each round's N x B rows
    backup         collective, N + b ranks, each step applies the first N gradients
    ps_ideal       sync PS, N workers, no straggler (the PS scenarios' baseline)
    ps_sync        sync PS, N workers in plain lockstep: every step waits for the straggler
    ps_proportional sync PS, N workers, speed-proportional shares of each round (`ps.data`)
    ps_backup      sync PS, N + b workers, each step applies the first N pushes (`ps.backup`)
    ssp<s>         PS with `ps.staleness = s`: a worker runs at most s steps ahead

Figures per scenario: `step_ms` (steady state, after `train.warmup_steps` warm-up steps:
wall-clock seconds from the last worker's first steady step to the last worker's last
step, over the steady steps, i.e. the makespan per step: `steady_wall`),
`vs_ideal` (over its architecture's baseline, measured in the same command), `auc`,
`auc_delta` (minus the baseline's), `dropped_rows` and per step, the slow workers found in
the per-step records (`psrec.core.slow_workers`), rows per worker, and `time_to_auc_s`: the
seconds from the job's first step until its progressive AUC (every batch's AUC before it
was trained on, `StepRecord.auc`; rows-weighted over the workers of a step, then a moving
mean over `AUC_WINDOW` steps: `progressive_auc`) first reaches the target. The target is
the baseline's own final progressive AUC minus `AUC_MARGIN`, so the baseline reaches it
near its end and a scenario that trains the same rows per step reaches it at the same step,
sooner or later by its step time; one that drops rows (backup) or applies stale gradients
(staleness) may need more steps. The picture
`step_times.png` draws every worker's busy seconds (data + lookup + compute) per step and
the step's wall time, one panel per scenario.
"""
from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from psrec.core.slow_workers import BUSY_PHASES, detect_slow_workers

__all__ = ["SyncScenario", "default_scenarios", "run_scenario", "run_sync_longtail", "plot_step_times",
           "progressive_auc", "time_to_auc"]

AUC_WINDOW = 4  # steps per moving mean: 4 steps of 4 x 1024 rows hold ~16K predictions
AUC_MARGIN = 0.005  # the target sits this far below the baseline's final progressive AUC


@dataclass(frozen=True)
class SyncScenario:
    """One run of the comparison.

    Args:
        name: its name in the tables and the last line.
        arch: "collective" or "ps" (sync PS, or bounded staleness with `staleness`).
        straggle: apply `[stragglers]` (False: the baseline).
        data: `collective.data` or `ps.data` ("interleaved" or "proportional").
        backup: extra workers (N + backup ranks or PS workers, the first N gradients applied).
        staleness: PS only: `ps.staleness` (0 = sync).
    """

    name: str
    arch: Literal["collective", "ps"] = "collective"
    straggle: bool = True
    data: str = "interleaved"
    backup: int = 0
    staleness: int = 0

    @property
    def baseline(self) -> str:
        return "ideal" if self.arch == "collective" else "ps_ideal"


def default_scenarios(backup: int = 1, staleness: tuple[int, ...] = (1, 2, 4), ps: bool = True) -> list[SyncScenario]:
    out = [SyncScenario("ideal", straggle=False), SyncScenario("sync"),
           SyncScenario("proportional", data="proportional")]
    if backup:
        out.append(SyncScenario("backup", backup=backup))
    if ps:
        out += [SyncScenario("ps_ideal", arch="ps", straggle=False), SyncScenario("ps_sync", arch="ps"),
                SyncScenario("ps_proportional", arch="ps", data="proportional")]
        if backup:
            out.append(SyncScenario("ps_backup", arch="ps", backup=backup))
        out += [SyncScenario(f"ssp{s}", arch="ps", staleness=s) for s in staleness]
    return out


def _config(cfg, sc: SyncScenario, workers: int):
    from workqueue.stragglers import StragglerConfig

    strag = cfg.stragglers if sc.straggle else StragglerConfig()
    if sc.arch == "collective":
        coll = dataclasses.replace(cfg.collective, workers=workers + sc.backup, data=sc.data, backup=sc.backup,
                                   metrics_port=-1)
        return dataclasses.replace(cfg, collective=coll, stragglers=strag)
    ps = dataclasses.replace(cfg.ps, workers=workers + sc.backup, sync=True, staleness=sc.staleness,
                             backup=sc.backup, data=sc.data, metrics_port=-1)
    return dataclasses.replace(cfg, ps=ps, stragglers=strag)


def _steps(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "steps.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def steady_wall(steps: list[dict], warmup: int) -> tuple[float, int]:
    """(seconds, steps) of the job's steady state from `steps.jsonl` rows: from the moment
    the last worker begins its first step after `warmup` to the moment the last worker ends
    its last step. Wall clock rather than a sum of one worker's phases: under bounded
    staleness the fast workers run ahead and meet a slow warm-up step of the straggler s
    steps later, inside their own steady window, though the job's pace never depended on it.

    >>> rows = [{"worker": w, "step": k, "t_start": float(k + w), "seconds": 1.0} for w in (0, 1) for k in (1, 2, 3)]
    >>> steady_wall(rows, 1)   # worker 1 begins step 2 at 3.0 and ends step 3 at 5.0
    (2.0, 2)
    """
    last = max((s["step"] for s in steps), default=0)
    first = [s["t_start"] for s in steps if s["step"] == warmup + 1]
    if last <= warmup or not first:
        return math.nan, 0
    t1 = max(s["t_start"] + s["seconds"] for s in steps if s["step"] == last)
    return t1 - max(first), last - warmup


def progressive_auc(steps: list[dict], window: int = AUC_WINDOW) -> list[tuple[int, float, float]]:
    """(step, end time, AUC) per global step: the rows-weighted mean of the step's batch
    AUCs (`StepRecord.auc`; steps without any skipped), then the moving mean over the last
    `window` of them; end time = the step's last worker's end (`time.time()` seconds).

    >>> rows = [{"step": k, "rows": 10, "auc": a, "t_start": float(k), "seconds": 0.5}
    ...         for k, a in ((1, 0.6), (2, 0.7), (3, 0.8))]
    >>> [(k, t, round(a, 3)) for k, t, a in progressive_auc(rows, window=2)]
    [(1, 1.5, 0.6), (2, 2.5, 0.65), (3, 3.5, 0.75)]
    """
    by: dict[int, list[dict]] = {}
    for s in steps:
        by.setdefault(s["step"], []).append(s)
    out, means = [], []
    for k in sorted(by):
        rec = [s for s in by[k] if s.get("auc") is not None and s["rows"] > 0]
        if not rec:
            continue
        means.append(sum(s["auc"] * s["rows"] for s in rec) / sum(s["rows"] for s in rec))
        tail = means[-window:]
        out.append((k, max(s["t_start"] + s["seconds"] for s in by[k]), sum(tail) / len(tail)))
    return out


def time_to_auc(curve: list[tuple[int, float, float]], target: float) -> tuple[float, int]:
    """(seconds, step) of the first point of `curve` ((step, seconds, AUC), e.g. a run's
    `auc_curve`) whose AUC reaches `target`; (nan, 0) if none does.

    >>> curve = [(1, 0.5, 0.6), (2, 1.5, 0.65), (3, 2.5, 0.75)]
    >>> time_to_auc(curve, 0.7), time_to_auc(curve, 0.9)
    ((2.5, 3), (nan, 0))
    """
    for k, t, a in curve:
        if a >= target:
            return t, k
    return math.nan, 0


def run_scenario(cfg, sc: SyncScenario, workers: int, run_dir: Path) -> dict[str, Any]:
    """Run one scenario into `run_dir`; returns its figures (module doc), before the ratios."""
    return _run_scenario(cfg, sc, workers, run_dir)[0]


def _run_scenario(cfg, sc: SyncScenario, workers: int, run_dir: Path) -> tuple[dict[str, Any], list[dict]]:
    """`run_scenario`'s figures and the run's steps.jsonl rows (read once: the picture uses them too)."""
    c = _config(cfg, sc, workers)
    if sc.arch == "collective":
        from collective.runner import run_collective

        res = run_collective(c, run_dir=run_dir, coll=c.collective)
    else:
        from psrec.ps.runner import run_ps

        res = run_ps(c, run_dir=run_dir)
    steps = _steps(run_dir)
    records = [(s["worker"], s["step"], s["rows"], sum(s["phases"].get(p, 0.0) for p in BUSY_PHASES)) for s in steps]
    per_worker = [w for w in res.per_worker if w.get("steps")]
    n_steps = max((w["steps"] for w in per_worker), default=0)
    seconds, steady_steps = steady_wall(steps, cfg.train.warmup_steps)
    dropped = int(res.get("dropped_rows", 0) or 0)
    curve = progressive_auc(steps)
    t0 = min((s["t_start"] for s in steps), default=0.0)
    n = c.collective.workers if sc.arch == "collective" else c.ps.workers
    return {"name": sc.name, "arch": sc.arch, "workers": n,
            "straggle": sc.straggle, "data": sc.data, "backup": sc.backup, "staleness": sc.staleness,
            "steps": n_steps, "warmup_steps": n_steps - steady_steps, "train_seconds": res.train_seconds,
            "step_ms": 1e3 * seconds / steady_steps if steady_steps else math.nan,
            "step_p50_ms": res.step_p50_ms, "auc": res.auc, "logloss": res.logloss,
            "dropped_rows": dropped, "dropped_rows_per_step": dropped / n_steps if n_steps else 0.0,
            "rows_by_worker": [int(w.get("rows", 0)) for w in per_worker],
            "slow_workers": [s.to_dict() for s in detect_slow_workers(records)], "run_dir": str(run_dir),
            "progressive_auc": curve[-1][2] if curve else math.nan,
            "auc_curve": [(k, t - t0, a) for k, t, a in curve]}, steps  # seconds from the job's first step


def run_sync_longtail(cfg, workers: int, run_dir: Path, scenarios: list[SyncScenario],
                      log: Callable[[str], None] = print) -> dict[str, Any]:
    """Every scenario once, in order (each baseline first), into `run_dir/<name>/`; returns
    `{"scenarios": {name: figures + vs_ideal, auc_delta}, "picture": path}`."""
    out: dict[str, dict[str, Any]] = {}
    steps: dict[str, list[dict]] = {}
    for sc in scenarios:
        extra = (f", {sc.data}" if sc.data != "interleaved" else "") + (
            f", staleness {sc.staleness}" if sc.arch == "ps" else "")
        log(f"[{sc.name}] {sc.arch}, {workers}{f' + {sc.backup}' if sc.backup else ''} workers, "
            f"{'straggler' if sc.straggle else 'no straggler'}{extra}")
        fig, steps[sc.name] = _run_scenario(cfg, sc, workers, Path(run_dir) / sc.name)
        base = out.get(sc.baseline, fig if sc.name == sc.baseline else None)
        fig["vs_ideal"] = fig["step_ms"] / base["step_ms"] if base else math.nan
        fig["auc_delta"] = fig["auc"] - base["auc"] if base else math.nan
        fig["target_auc"] = base["progressive_auc"] - AUC_MARGIN if base else math.nan
        fig["time_to_auc_s"], fig["time_to_auc_step"] = time_to_auc(fig["auc_curve"], fig["target_auc"])
        out[sc.name] = fig
        slow = ", ".join(f"worker {s['worker']} {s['factor']:.1f}x since step {s['since_step']}"
                         for s in fig["slow_workers"]) or "none"
        log(f"[{sc.name}] step {fig['step_ms']:.1f} ms ({fig['vs_ideal']:.2f}x its baseline), AUC {fig['auc']:.4f}, "
            f"target progressive AUC {fig['target_auc']:.4f} at {fig['time_to_auc_s']:.1f} s "
            f"(step {fig['time_to_auc_step']}), "
            f"dropped {fig['dropped_rows']} rows, slow: {slow}")
    picture = plot_step_times(steps, Path(run_dir) / "step_times.png", skip_steps=cfg.train.warmup_steps)
    return {"scenarios": out, "picture": str(picture) if picture else None}


def plot_step_times(steps_by_scenario: dict[str, list[dict]], path: Path, max_steps: int = 200,
                    skip_steps: int = 0) -> Path | None:
    """One panel per scenario: each worker's busy seconds per step (lines) and the step's wall
    time (the slowest worker's step, black); steps after the first `skip_steps` (warm-up),
    up to step `max_steps`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    named = [(n, s) for n, s in steps_by_scenario.items() if s]
    if not named:
        return None
    fig, axes = plt.subplots(len(named), 1, figsize=(10, 2.2 * len(named)), sharex=True, squeeze=False)
    for ax, (name, steps) in zip(axes[:, 0], named):
        by_worker: dict[int, dict[int, float]] = {}
        wall: dict[int, float] = {}
        for s in steps:
            if s["step"] > max_steps or s["step"] <= skip_steps:
                continue
            by_worker.setdefault(s["worker"], {})[s["step"]] = 1e3 * sum(s["phases"].get(p, 0.0) for p in BUSY_PHASES)
            wall[s["step"]] = max(wall.get(s["step"], 0.0), 1e3 * s["seconds"])
        for w, series in sorted(by_worker.items()):
            ks = sorted(series)
            ax.plot(ks, [series[k] for k in ks], lw=1, label=f"worker {w} busy")
        ks = sorted(wall)
        ax.plot(ks, [wall[k] for k in ks], color="black", lw=1.2, ls="--", label="step wall (slowest)")
        title = f"{name} (after {skip_steps} warm-up steps)" if skip_steps else name
        # One step far above the rest (a straggler's first step: its factor times the one-time
        # costs, met s steps later under staleness) would flatten the panel: clip it, say so.
        top = 1.3 * float(np.percentile(list(wall.values()), 95)) if wall else 0.0
        if wall and max(wall.values()) > top:
            ax.set_ylim(0, top)
            title += f"; clipped at {top:.0f} ms, max {max(wall.values()):.0f} ms at step {max(wall, key=wall.get)}"
        ax.set_title(title, fontsize=9, loc="left")
        ax.set_ylabel("ms")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7, ncol=4, loc="upper right")
    axes[-1, 0].set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
