"""The one run skeleton every mode goes through, and the `Job` seam a mode implements.

    run_job(cfg, mode, start, ...)
        run directory, Prometheus endpoint, start the job (its start-up timed apart), train
        under a progress bar, summarise every worker by the one throughput rule, evaluate on
        the held-out rows, collect malformed lines from the driver's and the workers'
        sources, write results.json and the final metrics scrape -> `RunResult`

A `Job` is a started set of workers: local (one step in this process), PS (shards and
workers, in process or on Ray), collective (ranks, in process or on Ray).
"""
from __future__ import annotations

import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from psrec.config_io import to_mapping
from psrec.core import checkpoint
from psrec.core.progress import progress_bar
from psrec.core.ranges import row_ranges
from psrec.core.report import WorkerReport
from psrec.core.result import RESULT_FIELDS, RunResult, aggregate_workers
from psrec.data.base import DataSource
from psrec.metrics.auc import auc, logloss
from psrec.metrics.prom import JobMetrics

__all__ = ["Job", "run_job", "eval_metrics", "merge_malformed", "poll_ray_workers"]


class Job(ABC):
    """The workers of one run, started; `run_job` drives them.

    `rounds` is the global steps the job trains in all; `train(bar, metrics, start, stop)`
    trains rounds [start, stop) (all of them by default) and returns every worker's report so
    far. A job that can be checkpointed (`checkpointable`) writes and restores its whole state
    at a round boundary (`save_state`, `load_state`); every job saves its model (`save_model`).
    """

    rounds: int = 0
    checkpointable: bool = False

    @abstractmethod
    def train(self, bar, metrics: JobMetrics, start: int = 0, stop: int | None = None) -> list[WorkerReport]:
        """Train rounds [start, stop) on every worker; returns their reports (in worker order)."""

    def save_state(self, path: Path) -> dict[str, Any]:
        """Write the job's state at this round boundary under `path`; returns what it holds."""
        raise NotImplementedError(f"{type(self).__name__} cannot be checkpointed")

    def load_state(self, path: Path) -> None:
        """Restore the state `save_state` wrote at `path`."""
        raise NotImplementedError(f"{type(self).__name__} cannot be checkpointed")

    @abstractmethod
    def model_spec(self) -> tuple[Any, list]:
        """(FeatureSpec, TableSpecs) the job's model was built from."""

    @abstractmethod
    def save_model(self, path: Path) -> int:
        """Write the trained tables (`tables/shard-<i>/<table>/`) and dense parameters (`dense/`)
        under `path`; returns the number of table shards."""

    @abstractmethod
    def evaluate(self, start: int, end: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """(labels, click probabilities) over rows [start, end) with the trained parameters."""

    def details(self) -> dict[str, Any]:
        """The mode's own figures for results.json (per PS, per shard, the queue, ...)."""
        return {}

    def publish(self, metrics: JobMetrics) -> None:
        """Final figures of the job's servers or shards into the Prometheus registry."""

    def malformed(self) -> list:
        """Malformed lines the workers' own sources skipped (`MalformedLine`s)."""
        return []

    def close(self) -> None:
        """Release the workers (bounded: never hangs on a dead one)."""


def eval_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """AUC and logloss of probabilities `p` (N,) against labels `y` (N,)."""
    return {"auc": auc(y, p), "logloss": logloss(y, p) if len(y) else float("nan"), "eval_rows": int(len(y))}


def merge_malformed(*groups: Sequence) -> list[dict[str, Any]]:
    """Malformed lines from several sources reading one file, once each, by line number."""
    seen: dict[int, Any] = {}
    for g in groups:
        for m in g:
            seen.setdefault(m.line_no, m)
    return [to_mapping(seen[k]) for k in sorted(seen)]


def run_job(cfg, mode: str, start: Callable[[], Job], source: DataSource, *, run_dir: Path | None = None,
            total_steps: int = 0, metrics_port: int = 0, details: dict[str, Any] | None = None,
            resume_from: Path | None = None) -> RunResult:
    """Start a job, train, evaluate, and write the run directory (module doc).

    Args:
        cfg: the run's Config.
        mode: the result's mode name (local, ps-async, ps-sync, ps-async-hybrid, collective, ...).
        start: starts the job's workers (timed as start-up, not training).
        source: the driver's copy of the run's data source (evaluation rows, malformed lines).
        run_dir: where to write (default: a new `<run.dir>/<time>-<mode>-<model>`).
        total_steps: worker steps in all, for the progress bar.
        metrics_port: the Prometheus endpoint's port (0: a free one; -1: none).
        details: figures of the run's layout (workers, PS, sharding, ...) for results.json.
        resume_from: a checkpoint directory to continue from (`psrec.core.checkpoint`).

    With `run.checkpoint_every_steps` = K the job stops at every K-th round, its state is
    written as a checkpoint under `<run dir>/checkpoints/`, and training goes on; the final
    model is saved under `<run dir>/model/` (`run.save_model`).
    """
    from psrec.runs import make_run_dir

    if run_dir is None:
        run_dir = make_run_dir(cfg, mode)
    else:
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.toml").write_text(cfg.to_toml())
    rr = row_ranges(cfg, source)
    warmup = cfg.train.warmup_steps
    every = cfg.run.checkpoint_every_steps
    prom = JobMetrics(metrics_port)
    if prom.port is not None:
        print(f"prometheus metrics: http://127.0.0.1:{prom.port}/metrics", file=sys.stderr)
    t0 = time.perf_counter()
    job = None
    ckpt_seconds: list[float] = []
    try:
        job = start()
        startup = time.perf_counter() - t0
        if (every or resume_from is not None) and not job.checkpointable:
            raise ValueError(f"{mode}: this mode cannot be checkpointed or resumed yet "
                             "(run.checkpoint_every_steps / --resume: local and interleaved PS runs)")
        first = 0
        if resume_from is not None:
            first = int(checkpoint.verify(resume_from)["step"])
            job.load_state(Path(resume_from))
            print(f"resumed from {resume_from} (step {first} of {job.rounds})", file=sys.stderr)
        with progress_bar(total_steps, cfg.train.progress, desc=mode) as bar:
            for a, b in _segments(first, job.rounds, every):
                reports = job.train(bar, prom, a, b)
                if every and b % every == 0 and b < job.rounds:
                    tc = time.perf_counter()
                    checkpoint.write_checkpoint(run_dir / "checkpoints", b,
                                                lambda d: {"mode": mode, **job.save_state(d)}, cfg.run.keep_checkpoints)
                    ckpt_seconds.append(time.perf_counter() - tc)
        summaries = [r.summary(warmup) for r in reports]
        for s in summaries:
            if s.get("steps"):
                prom.worker(s["worker"], s["phases"], s["rows"], s["bytes_sent"], s["bytes_received"])
                if s["allreduce_total_seconds"] > 0:
                    prom.dense_exchange(s["worker"], s["allreduce_total_seconds"], s["allreduce_hidden_seconds"])
        job.publish(prom)
        scrape = prom.scrape()
        y, p = job.evaluate(rr.eval_start, rr.eval_end, max(cfg.data.batch_size, 4096))
        own = job.details()
        malformed = merge_malformed(source.malformed_lines(), job.malformed())
        if cfg.run.save_model:
            checkpoint.write_checkpoint(run_dir / "model", job.rounds, lambda d: _model(cfg, job, source, d), keep=1)
    finally:
        prom.close()
        if job is not None:
            job.close()
    agg = aggregate_workers(summaries)
    typed = {k: v for k, v in agg.items() if k in RESULT_FIELDS}
    losses = [s["loss"] for s in summaries if s.get("loss") is not None]
    result = RunResult(
        mode=mode, model=cfg.model.name, path=str(run_dir), **eval_metrics(y, p),
        train_loss=float(np.mean(losses)) if losses else None, **typed, warmup_steps=warmup,
        startup_seconds=startup, batch_size=cfg.data.batch_size, workers=len(reports),
        epochs=cfg.data.epochs, malformed_lines=malformed, per_worker=summaries,
        extra={**{k: v for k, v in agg.items() if k not in typed}, **(details or {}), **own,
               "ranges": rr.__dict__, "metrics_port": prom.port,
               "checkpoints": {"every_steps": every, "written": len(ckpt_seconds), "seconds": ckpt_seconds,
                               "resumed_from_step": first}})
    result.write()
    (run_dir / "metrics.prom").write_text(scrape)  # the final scrape, for offline reading
    return result


def _segments(first: int, total: int, every: int) -> list[tuple[int, int]]:
    """Round ranges [a, b) from `first` to `total`, cut at multiples of `every` (0: one range).

    >>> _segments(0, 10, 4), _segments(4, 10, 4), _segments(0, 5, 0)
    ([(0, 4), (4, 8), (8, 10)], [(4, 8), (8, 10)], [(0, 5)])
    """
    if first >= total:
        return [(total, total)]
    cuts = list(range((first // every + 1) * every, total, every)) if every else []
    bounds = [first, *cuts, total]
    return list(zip(bounds, bounds[1:]))


def _model(cfg, job: Job, source: DataSource, path: Path) -> dict[str, Any]:
    """Write the saved model's files (psrec.core.saved_model) into `path`."""
    from psrec.core.saved_model import model_info, write_model_files

    shards = job.save_model(path)
    spec, tables = job.model_spec()
    info = model_info(cfg, spec, tables, source.schema, shards)
    write_model_files(path, cfg, info)
    return {"model": cfg.model.name, "shards": shards}


def poll_ray_workers(runs: list, progress: Callable[[], list[dict]], bar, metrics: JobMetrics | None,
                     comm_phases: Sequence[str], timeout_s: float) -> list:
    """Wait for Ray object refs `runs` (one per worker) while polling `progress()` every 0.5 s
    for the bar and the live metrics; a worker that fails ends the wait at once (its peers
    would otherwise wait for it until their own timeouts). Returns the runs' results."""
    import ray

    done_steps, t0 = 0, time.perf_counter()
    pending = list(runs)
    while pending:
        ready, pending = ray.wait(pending, num_returns=len(pending), timeout=0.5)
        if ready:
            ray.get(ready, timeout=timeout_s)  # a failed worker raises here
        prog = progress()
        steps = sum(x["steps"] for x in prog)
        total = {ph: sum(x["phases"][ph] for x in prog) for ph in prog[0]["phases"]} if prog else {}
        wall = sum(total.values())
        rows = sum(x["rows"] for x in prog)
        if bar is not None:
            bar.update(steps - done_steps, samples_per_s=rows / (time.perf_counter() - t0),
                       comm_pct=100.0 * sum(total.get(p, 0.0) for p in comm_phases) / wall if wall else None)
        done_steps = steps
        if metrics is not None:
            for i, x in enumerate(prog):
                metrics.worker(i, x["phases"], x["rows"], x["sent"], x["received"])
    return ray.get(runs, timeout=timeout_s)
