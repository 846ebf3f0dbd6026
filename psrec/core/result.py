"""`RunResult`: what every training run returns and writes as `results.json` (schema: docs/results.md).

One result type for every mode. Its figures follow one throughput rule
(`psrec.core.report`): steady state after `warmup_steps` steps per worker, the warm-up
reported apart. Mode-specific figures (per PS, per shard, the work queue's accounting, ...)
are kept in `extra` and written at the top level of the JSON beside the typed fields.
"""
from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from psrec.core.step import COMM_PHASES, PHASES, WAIT_PHASES

__all__ = ["RunResult", "RESULT_FIELDS", "SCHEMA_VERSION", "aggregate_workers", "max_over_mean", "ResultError"]

SCHEMA_VERSION = 1


class ResultError(ValueError):
    """A results.json that is not a psrec result (missing, unreadable, or a newer schema)."""


@dataclass
class RunResult:
    """The outcome of one training run.

    Quality: `auc`, `logloss` on `eval_rows` held-out rows; `train_loss` (loss EMA).
    Speed, steady state (after `warmup_steps` steps of each worker): `samples_per_s` (rows
    of all workers over the slowest worker's seconds), `step_p50_ms`, `step_p95_ms`,
    `step_mean_ms` (one worker's step), `phases` (seconds per worker step by phase, summing
    to `step_mean_ms` / 1e3), `comm_fraction` and `wait_fraction` (their shares),
    `bytes_per_step` (payload bytes one worker sent + received per step, all steps).
    `warmup`: the warm-up steps' own figures. `path`: the run directory.

    Example:
        >>> r = RunResult(mode="local", model="lr", path="runs/x", auc=0.7, logloss=0.5)
        >>> r.auc, r["mode"], r.to_json()["schema_version"]
        (0.7, 'local', 1)
    """

    mode: str
    model: str
    path: str
    auc: float = math.nan
    logloss: float = math.nan
    eval_rows: int = 0
    train_loss: float | None = None
    samples_per_s: float = math.nan
    step_p50_ms: float = math.nan
    step_p95_ms: float = math.nan
    step_mean_ms: float = math.nan
    comm_fraction: float = math.nan
    wait_fraction: float = math.nan
    emulated_comm_fraction: float = math.nan
    bytes_per_step: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)
    phase_totals: dict[str, float] = field(default_factory=dict)
    warmup_steps: int = 0
    warmup: dict[str, float] = field(default_factory=dict)
    steps: int = 0
    train_rows: int = 0
    train_seconds: float = math.nan
    startup_seconds: float = 0.0
    batch_size: int = 0
    workers: int = 1
    epochs: int = 1
    malformed_lines: list[dict[str, Any]] = field(default_factory=list)
    per_worker: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    # ------------------------------------------------------------------ reading
    def __getitem__(self, key: str) -> Any:
        """Any results.json key: a typed field, or a mode's own figure from `extra`."""
        if key in _FIELDS:
            return getattr(self, key)
        if key in self.extra:
            return self.extra[key]
        if key in _LEGACY:
            return _LEGACY[key](self)
        raise KeyError(key)

    def __contains__(self, key: str) -> bool:
        return key in _FIELDS or key in self.extra or key in _LEGACY

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def keys(self) -> Iterator[str]:
        return iter(self.to_json())

    def __iter__(self) -> Iterator[str]:
        return self.keys()

    def __len__(self) -> int:
        return len(self.to_json())

    def to_json(self) -> dict[str, Any]:
        """The results.json object: typed fields, then `extra`'s keys beside them."""
        out = {f: getattr(self, f) for f in _FIELDS if f != "extra"}
        out.update({k: v for k, v in self.extra.items() if k not in out})
        out["run_dir"] = self.path  # the key earlier results used
        out["step_p50"], out["step_p95"] = self.step_p50_ms / 1e3, self.step_p95_ms / 1e3  # seconds, as before
        return out

    def write(self, run_dir: Path | None = None) -> Path:
        from psrec.runs import write_results

        return write_results(Path(run_dir or self.path), self.to_json())

    @classmethod
    def from_json(cls, data: Mapping[str, Any], path: str | None = None) -> RunResult:
        version = data.get("schema_version", 0)
        if not isinstance(version, int) or isinstance(version, bool):
            raise ResultError(f"schema_version must be an integer, got {version!r}")
        if version > SCHEMA_VERSION:
            raise ResultError(f"results.json has schema_version {version}; this psrec reads up to {SCHEMA_VERSION}")
        kw = {f: data[f] for f in _FIELDS if f in data and f != "extra" and data[f] is not None}
        kw.setdefault("path", path or str(data.get("run_dir", "")))
        kw.setdefault("mode", str(data.get("mode", "")))
        kw.setdefault("model", str(data.get("model", "")))
        kw["schema_version"] = version or SCHEMA_VERSION
        if version == 0 and "step_p50" in data:  # before schema 1: seconds, all steps
            kw["step_p50_ms"] = 1e3 * float(data["step_p50"] or math.nan)
            kw["step_p95_ms"] = 1e3 * float(data.get("step_p95") or math.nan)
        extra = {k: v for k, v in data.items() if k not in _FIELDS and k not in _DERIVED}
        return cls(**kw, extra=extra)

    @classmethod
    def from_path(cls, run_dir: str | Path) -> RunResult:
        """Read `run_dir/results.json` (or that file itself)."""
        p = Path(run_dir)
        f = p if p.is_file() else p / "results.json"
        try:
            data = json.loads(f.read_text())
        except FileNotFoundError:
            raise ResultError(f"{f}: no such results file") from None
        except (OSError, json.JSONDecodeError) as e:
            raise ResultError(f"{f}: not readable as JSON ({e})") from None
        if not isinstance(data, dict):
            raise ResultError(f"{f}: expected a JSON object")
        return cls.from_json(data, str(f.parent))


Mapping.register(RunResult)  # read-only, as results.json's object: format_table, dict(result)
_FIELDS = tuple(f.name for f in dataclasses.fields(RunResult))
RESULT_FIELDS = frozenset(_FIELDS)
_DERIVED = ("run_dir", "step_p50", "step_p95")
_LEGACY = {"run_dir": lambda r: r.path, "step_p50": lambda r: r.step_p50_ms / 1e3,
           "step_p95": lambda r: r.step_p95_ms / 1e3}


def aggregate_workers(summaries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Job-level figures (the `RunResult` speed fields) from per-worker summaries
    (`psrec.core.report.WorkerReport.summary`).

    >>> w = {"steps": 4, "rows": 40, "steady_steps": 3, "steady_phases": {"compute": 0.3, "pull": 0.3},
    ...      "phases": {"compute": 1.0, "pull": 0.4}, "step_p50": 0.2, "step_p95": 0.3, "step_mean": 0.2,
    ...      "warmup": {"steps": 1, "seconds": 0.8, "rows": 10}, "bytes_sent": 300, "bytes_received": 500,
    ...      "steady_emulated_seconds": 0.0}
    >>> a = aggregate_workers([w, w])
    >>> round(a["samples_per_s"]), round(a["comm_fraction"], 2), a["bytes_per_step"], a["phases"]["pull"]
    (100, 0.5, 200.0, 0.1)
    """
    live = [s for s in summaries if s.get("steps")]
    nan = math.nan
    if not live:
        return {"phases": dict.fromkeys(PHASES, 0.0), "phase_totals": dict.fromkeys(PHASES, 0.0)}
    steady_steps = sum(s["steady_steps"] for s in live)
    phases = {p: sum(s["steady_phases"].get(p, 0.0) for s in live) / max(1, steady_steps) for p in PHASES}
    mean = sum(phases.values())
    comm = sum(phases[p] for p in COMM_PHASES)
    emu = sum(s.get("steady_emulated_seconds", 0.0) for s in live) / max(1, steady_steps)
    slowest = max(sum(s["steady_phases"].values()) for s in live)
    steady_rows = sum(s["rows"] - s["warmup"]["rows"] for s in live)
    warm_steps = sum(s["warmup"]["steps"] for s in live)
    warm_s = max(s["warmup"]["seconds"] for s in live)
    all_steps = max(1, sum(s["steps"] for s in live))
    import numpy as np

    return {
        "phases": phases,  # seconds per worker step, steady state
        "phase_totals": {p: float(sum(s["phases"].get(p, 0.0) for s in live)) for p in PHASES},
        "step_mean_ms": 1e3 * mean,
        "step_p50_ms": 1e3 * float(np.median([s["step_p50"] for s in live])),
        "step_p95_ms": 1e3 * float(max(s["step_p95"] for s in live)),
        "samples_per_s": steady_rows / slowest if slowest > 0 else nan,
        "comm_fraction": comm / mean if mean else nan,
        "wait_fraction": sum(phases[p] for p in WAIT_PHASES) / mean if mean else nan,
        "emulated_comm_fraction": (comm + emu) / (mean + emu) if mean else nan,
        "bytes_per_step": float(sum(s["bytes_sent"] + s["bytes_received"] for s in live)
                                / max(1, sum(s["steps"] for s in live))),
        "warmup": {"steps": warm_steps / len(live), "seconds": warm_s,
                   "samples_per_s": (sum(s["warmup"]["rows"] for s in live) / warm_s) if warm_s > 0 else nan},
        "train_seconds": max(sum(s["phases"].values()) for s in live),
        "train_rows": int(sum(s["rows"] for s in live)),
        "steps": int(max(s["steps"] for s in live)),
        # beside the typed fields (RunResult.extra): traffic by kind and the dense exchange
        "bytes_per_step_by_kind": {k: v / all_steps for k, v in _sum_tags(live, "bytes_by_tag").items()},
        "messages_per_step": float(sum(s.get("messages", 0) for s in live) / all_steps),
        "alltoall_seconds": float(sum(s["phases"].get("alltoall", 0.0) for s in live)),
        "allreduce_total_seconds": float(sum(s.get("allreduce_total_seconds", 0.0) for s in live)),
        "allreduce_exposed_seconds": float(sum(s["phases"].get("allreduce", 0.0) for s in live)),
        "allreduce_hidden_seconds": float(sum(s.get("allreduce_hidden_seconds", 0.0) for s in live)),
        "emulated_net_seconds": float(sum(s.get("emulated_net_seconds", 0.0) for s in live)),
        # seconds a worker waited for the others (a sync PS's hold on its pull; a collective's
        # first rendezvous and, at the all-reduce, the slowest backward: peer_wait_seconds)
        "sync_wait_seconds": float(sum(s.get("sync_wait_seconds", 0.0) for s in live)),
        "peer_wait_seconds": float(sum(s.get("peer_wait_seconds", 0.0) for s in live)),
        "idle_steps": int(sum(s.get("idle_steps", 0) for s in live)),
        # backup workers: every rank books each step's dropped rows, so one rank's sum is the job's
        "dropped_rows": int(max(s.get("dropped_rows", 0) for s in live)),
    }


def _sum_tags(live: Sequence[Mapping[str, Any]], key: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for s in live:
        for k, v in (s.get(key) or {}).items():
            out[k] = out.get(k, 0) + v
    return out


def max_over_mean(values) -> float:
    """Load imbalance of shards or workers: max / mean (1.0 = perfectly even; NaN when all are 0).

    >>> max_over_mean([3, 1]), max_over_mean([2, 2])
    (1.5, 1.0)
    """
    v = [float(x) for x in values]
    mean = sum(v) / len(v) if v else 0.0
    return max(v) / mean if mean > 0 else math.nan
