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

import re
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from psrec.config_io import to_mapping
from psrec.core import checkpoint, incremental
from psrec.core.progress import progress_bar
from psrec.core.ranges import row_ranges
from psrec.core.report import WorkerReport
from psrec.core.result import RESULT_FIELDS, RunResult, aggregate_workers
from psrec.core.splits import split_report
from psrec.core.trace import write_run_files
from psrec.data.base import DataSource
from psrec.metrics.auc import auc, logloss
from psrec.metrics.prom import JobMetrics

__all__ = ["Job", "JobFailed", "run_job", "eval_metrics", "merge_malformed", "poll_ray_workers", "check_placement"]


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

    def save_state(self, path: Path, base: Path | None = None) -> dict[str, Any]:
        """Write the job's state at this round boundary under `path`; returns what it holds.
        `base`: an earlier checkpoint of this job this one continues; tables may then hold only
        the rows updated since (`psrec.core.incremental`)."""
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

    def live_stats(self) -> dict[str, Any]:
        """The job's servers' cumulative counters now, polled by the driver while it trains:
        {"ps": [ShardStats mappings], "ps_nodes": [...], "queue": {depth, leases, ...}} (`JobMetrics.live`).
        A job with a PS `transport` (the PS jobs) is asked through it, its `queue` too; others report nothing."""
        from psrec.metrics.prom import actor_nodes

        out: dict[str, Any] = {}
        tr = getattr(self, "transport", None)
        if tr is not None:
            out["ps"] = [to_mapping(s) for s in tr.broadcast("stats", False)]
            if getattr(tr, "actors", None):
                if getattr(self, "_ps_nodes", None) is None:
                    self._ps_nodes = actor_nodes(tr.actors)  # asked once: an actor does not move
                out["ps_nodes"] = self._ps_nodes
        queue = getattr(self, "queue", None)
        if queue is not None and hasattr(queue, "stats"):
            out["queue"] = queue.stats()
        return out

    def actor_names(self) -> dict[str, str]:
        """Ray actor id (hex) -> how a failure names it ("worker 1", "PS 0"): jobs of Ray actors."""
        return {}

    def close(self) -> None:
        """Release the workers (bounded: never hangs on a dead one)."""


def eval_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """AUC and logloss of probabilities `p` (N,) against labels `y` (N,)."""
    return {"auc": auc(y, p), "logloss": logloss(y, p) if len(y) else float("nan"), "eval_rows": int(len(y))}


def merge_malformed(*groups: Sequence) -> list[dict[str, Any]]:
    """Malformed lines from several sources reading the same files, once each, by file and line."""
    seen: dict[tuple[str, int], Any] = {}
    for g in groups:
        for m in g:
            seen.setdefault((getattr(m, "file", ""), m.line_no), m)
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
    written as a checkpoint under `<run dir>/checkpoints/` (every `run.full_checkpoint_every`-th
    one full, the others increments: `psrec.core.incremental`), and training goes on; the
    final model is saved under `<run dir>/model/` (`run.save_model`).
    """
    from psrec.core.slow_workers import slow_workers_of
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
    # the mode's own port option wins; 0 defers to run.metrics_port; -1 (either) serves nothing
    run_id = run_dir.name if run_dir.parent == Path(cfg.run.dir) else f"{run_dir.parent.name}/{run_dir.name}"
    prom = JobMetrics(metrics_port or cfg.run.metrics_port, cfg.run.metrics_address, run_id=run_id, mode=mode)
    if prom.url is not None:
        print(f"prometheus metrics: {prom.url}", file=sys.stderr)
    t0 = time.perf_counter()
    job = None
    ckpt_seconds: list[float] = []
    ckpt_kinds: list[str] = []
    recoveries: list[dict[str, Any]] = []
    resumed = None if resume_from is None else int(checkpoint.verify(resume_from)["step"])
    try:
        while True:  # one pass per attempt: run.on_failure = "recover" restarts from the last checkpoint
            try:  # a restart's actors that cannot start or restore (a node still loaded) fail that attempt
                job = start()
                prom.watch(job.live_stats)  # PS rows, requests, bytes while the job trains
                startup = time.perf_counter() - t0
                if resume_from is not None and not job.checkpointable:
                    raise ValueError(f"{mode}: this mode cannot be resumed yet (local runs and interleaved PS and "
                                     "collective runs can)")
                if every and not job.checkpointable:
                    print(f"{mode}: this mode cannot be checkpointed yet; training without checkpoints "
                          "(run.checkpoint_every_steps applies to local runs and interleaved PS and collective "
                          "runs)", file=sys.stderr)
                    every = 0
                first, base = 0, None  # base: the checkpoint the job's state equals (the next increment's)
                if resume_from is not None:
                    first = int(checkpoint.verify(resume_from)["step"])
                    with incremental.restorable(resume_from) as whole:
                        job.load_state(whole)
                    if Path(resume_from).parent.resolve() == (run_dir / "checkpoints").resolve():
                        base = Path(resume_from)
                    print(f"resumed from {resume_from} (step {first} of {job.rounds})", file=sys.stderr)
                with progress_bar(total_steps, cfg.train.progress, desc=mode) as bar:
                    for a, b in _segments(first, job.rounds, every):
                        reports = job.train(bar, prom, a, b)
                        if every and b % every == 0 and b < job.rounds:
                            tc = time.perf_counter()
                            on = incremental.next_base(base, cfg.run.full_checkpoint_every)
                            base = checkpoint.write_checkpoint(
                                run_dir / "checkpoints", b, lambda d, job=job, on=on: {
                                    "mode": mode, **(job.save_state(d) if on is None else job.save_state(d, on)),
                                    **incremental.link(on)}, cfg.run.keep_checkpoints)
                            ckpt_seconds.append(time.perf_counter() - tc)
                            ckpt_kinds.append("full" if on is None else "increment")
                break
            except Exception as exc:  # noqa: BLE001 - only a job failure is recovered; the rest re-raised
                e = _as_job_failed(exc, job)
                if e is None:
                    raise
                last = checkpoint.latest(run_dir / "checkpoints")
                if cfg.run.on_failure != "recover" or len(recoveries) >= cfg.run.max_restarts or last is None:
                    why = ("" if cfg.run.on_failure != "recover" else
                           "; no checkpoint to recover from" if last is None else
                           f"; {len(recoveries)} restarts used (run.max_restarts)")
                    raise JobFailed(f"{e}{why}") from e
                step = int(checkpoint.verify(last)["step"])
                recoveries.append({"error": str(e), "from_step": step})
                print(f"{mode}: {e}; restarting from {last.name} (recovery {len(recoveries)} of "
                      f"{cfg.run.max_restarts})", file=sys.stderr)
                if job is not None:
                    job.close()
                job, resume_from = None, last
        summaries = [r.summary(warmup) for r in reports]
        prom.unwatch()
        prom.final(summaries)
        job.publish(prom)
        scrape = prom.scrape()
        y, p = job.evaluate(rr.eval_start, rr.eval_end, max(cfg.data.batch_size, 4096))
        valid = {} if rr.valid_end <= rr.valid_start else {f"valid_{k}": v for k, v in eval_metrics(
            *job.evaluate(rr.valid_start, rr.valid_end, max(cfg.data.batch_size, 4096))).items()}
        own = job.details()
        malformed = merge_malformed(source.malformed_lines(), job.malformed())
        if cfg.run.save_model:
            checkpoint.write_checkpoint(run_dir / "model", job.rounds, lambda d: _model(cfg, job, source, d), keep=1)
    finally:
        prom.unwatch()
        if job is not None:
            job.close()
        if sys.exc_info()[1] is not None:
            prom.close()  # failed; on success the endpoint serves until results.json is written
    agg = aggregate_workers(summaries)
    typed = {k: v for k, v in agg.items() if k in RESULT_FIELDS}
    losses = [s["loss"] for s in summaries if s.get("loss") is not None]
    result = RunResult(
        mode=mode, model=cfg.model.name, path=str(run_dir), **eval_metrics(y, p),
        train_loss=float(np.mean(losses)) if losses else None, **typed, warmup_steps=warmup,
        startup_seconds=startup, batch_size=cfg.data.batch_size, workers=len(reports),
        epochs=cfg.data.epochs, malformed_lines=malformed, per_worker=summaries,
        extra={**{k: v for k, v in agg.items() if k not in typed}, **(details or {}), **own,
               "ranges": rr.__dict__, "splits": split_report(cfg, source, rr), **valid, "metrics_port": prom.port,
               "checkpoints": {"every_steps": every, "written": len(ckpt_seconds), "seconds": ckpt_seconds,
                               "kinds": ckpt_kinds, "resumed_from_step": resumed},
               "recoveries": recoveries, "slow_workers": slow_workers_of(reports)})
    result.write()
    (run_dir / "metrics.prom").write_text(scrape)  # the final scrape, for offline reading
    write_run_files(run_dir, reports, mode, prom.history)  # steps.jsonl, trace.json, timeline.png
    prom.close()
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


class JobFailed(RuntimeError):
    """A job that cannot go on: a worker stopped answering, made no progress, or cannot be placed."""


def check_placement(requests: Sequence[tuple[str, float]]) -> None:
    """Refuse at once a job whose actors can never be placed: `requests` is (what, CPUs) per
    actor group; their sum against the cluster's CPUs (Ray would otherwise wait in silence)."""
    import ray

    have = float(ray.cluster_resources().get("CPU", 0.0))
    need = sum(c for _, c in requests)
    if need > have + 1e-9:
        asked = ", ".join(f"{what} {c:g}" for what, c in requests)
        raise JobFailed(f"the job asks for {need:g} CPUs ({asked}) and the cluster has {have:g}: it can never "
                        "be placed (lower ps.worker_cpus / ps.ps_cpus / collective.worker_cpus, or add nodes)")


def poll_ray_workers(runs: list, actors: Sequence, bar, metrics: JobMetrics | None, comm_phases: Sequence[str],
                     timeout_s: float, stall_s: float = 300.0) -> list:
    """Wait for Ray object refs `runs` (one per worker actor in `actors`) while polling each
    actor's `progress()` every 0.5 s for the bar and the live metrics.

    Every wait has a deadline: a worker that fails ends the wait at once (its peers would
    otherwise wait for it until their own timeouts); a worker that does not answer a poll
    within `timeout_s` (a stopped or hung process), or whose step count has not moved for
    `stall_s` seconds while it has not finished, raises `JobFailed` naming it and its last
    step. Returns the runs' results."""
    import ray

    from psrec.metrics.prom import actor_nodes

    done_steps, t0, nodes = 0, time.perf_counter(), None
    pending = list(runs)
    last_steps = [-1] * len(actors)
    last_move = [time.monotonic()] * len(actors)
    while pending:
        ready, pending = ray.wait(pending, num_returns=len(pending), timeout=0.5)
        for r in ready:
            try:
                ray.get(r, timeout=timeout_s)
            except ray.exceptions.RayActorError as e:  # the process died (killed, out of memory)
                raise JobFailed(f"worker {runs.index(r)} died ({_first_line(e)}); the job is stopped") from e
            except ray.exceptions.RayTaskError as e:  # it raised: its own error, one line
                raise JobFailed(f"worker {runs.index(r)} failed: {_first_line(getattr(e, 'cause', None) or e)}") from e
        refs = [a.progress.remote() for a in actors]
        answered, late = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
        if late:
            who = ", ".join(str(refs.index(r)) for r in late)
            raise JobFailed(f"worker(s) {who} did not answer a progress poll within {timeout_s:g} s "
                            "(process stopped or hung); the job is stopped")
        prog = ray.get(refs)
        now = time.monotonic()
        finished = {runs.index(r) for r in runs if r not in pending}
        for i, x in enumerate(prog):
            if x["steps"] != last_steps[i]:
                last_steps[i], last_move[i] = x["steps"], now
            elif i not in finished and now - last_move[i] > stall_s:
                raise JobFailed(f"worker {i} made no progress for {stall_s:g} s (last step {x['steps']}); "
                                "the job is stopped (run.stall_timeout_s)")
        steps = sum(x["steps"] for x in prog)
        total = {ph: sum(x["phases"][ph] for x in prog) for ph in prog[0]["phases"]} if prog else {}
        wall = sum(total.values())
        rows = sum(x["rows"] for x in prog)
        if bar is not None:
            bar.update(steps - done_steps, samples_per_s=rows / (time.perf_counter() - t0),
                       comm_pct=100.0 * sum(total.get(p, 0.0) for p in comm_phases) / wall if wall else None)
        done_steps = steps
        if metrics is not None:
            nodes = nodes or actor_nodes(actors)  # asked once: an actor does not move
            for i, x in enumerate(prog):
                metrics.worker(i, x["phases"], x["rows"], x["sent"], x["received"], x["steps"], nodes[i])
    return ray.get(runs, timeout=timeout_s)


def _as_job_failed(e: BaseException, job: Any = None) -> JobFailed | None:
    """`e` as a job failure, or None when it is not one: a Ray actor that died under any call
    (a parameter server killed while the job reads its stats or writes a checkpoint) fails the
    job as a dead worker does, named as `job` knows it (`Job.actor_names`) where it is one of
    its actors; any other error is the program's and is re-raised as it is."""
    if isinstance(e, JobFailed):
        return e
    exc = sys.modules.get("ray.exceptions")  # a local run never imported Ray: no actor of it can have died
    if exc is not None and isinstance(e, exc.GetTimeoutError):  # a Ray call past its deadline
        return JobFailed(f"a Ray call did not answer within its deadline ({_first_line(e)}); the job is stopped")
    if exc is not None and isinstance(e, exc.RayActorError):
        name = re.search(r"class_name: (\S+)", str(e))  # e.g. "PSActor", "Worker.<locals>.FakeWorker"
        aid = re.search(r"actor_id: ([0-9a-f]+)", str(e))
        who = job.actor_names().get(aid.group(1)) if job is not None and aid else None
        who = who or (name.group(1).rsplit(".", 1)[-1] if name else "an actor")
        return JobFailed(f"{who} died ({type(e).__name__}); the job is stopped")
    return None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    last = [ln for ln in text if ln.strip()][-1:] or [type(e).__name__]
    return f"{type(e).__name__}: {last[0].strip()}"[:300]
