"""Single-process training: the reference every distributed path is checked against.

The same step (`psrec.core.step.TrainStep`) over in-process tables, run through the same
skeleton (`psrec.core.job.run_job`) as the PS and collective modes.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from psrec.config import Config
from psrec.config_io import to_mapping
from psrec.core.job import Job, eval_metrics, run_job
from psrec.core.ranges import epoch_of, row_order, row_ranges
from psrec.core.report import WorkerReport, progress_of
from psrec.core.result import RunResult
from psrec.core.step import DenseUpdate, TrainStep, make_dense_optimizer
from psrec.data.base import Batch, DataSource
from psrec.data.prefetch import Prefetcher, ReaderProcess
from psrec.embedding.layer import EmbeddingLayer
from psrec.embedding.local import LocalStore
from psrec.metrics.auc import auc
from psrec.models.base import CTRModel, FeatureSpec

METRICS_EVERY_S = 0.5  # how often a local run's live series are fed (a Ray job polls as often)

# data.reader = "auto" starts a reader process for a train() call reading at least this many
# rows: starting it and reopening the source there costs ~1-2 s (interpreter, imports, a
# CSV's line index), about what parsing 50-100K CSV rows costs; below it, reading inline wins.
AUTO_PROCESS_ROWS = 200_000

__all__ = ["build_local", "evaluate", "predict_range", "run_local", "LocalSetup", "LocalJob", "TrainStats",
           "train_range"]


@dataclass
class LocalSetup:
    """Everything a single-process run holds (`spec`: what the model was built for)."""

    source: DataSource
    model: CTRModel
    store: LocalStore
    layer: EmbeddingLayer
    step: TrainStep
    spec: FeatureSpec | None = None


def build_local(cfg: Config, source: DataSource | None = None) -> LocalSetup:
    """Source, model, local embedding tables and the step, all seeded from `cfg.train.seed`."""
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    from psrec.core.plan import plan_model

    mp = plan_model(cfg, source)
    source, model, tables = mp.source, mp.model, mp.tables
    store = LocalStore(mp.ev_configs)
    layer = EmbeddingLayer(source.schema, tables, cfg.embedding.pooling)
    opt = make_dense_optimizer(cfg.train.optimizer, model.parameters(), cfg.train.lr)
    return LocalSetup(source, model, store, layer, TrainStep(model, layer, store, DenseUpdate(opt)), mp.spec)


def predict_range(step: TrainStep, source: DataSource, start: int, end: int,
                  batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(labels (N,) float32, click probabilities (N,) float64) over rows [start, end)."""
    labels, probs = [], []
    for b in source.batches(start, end, batch_size):
        probs.append(step.predict(b))
        labels.append(b.labels)
    y = np.concatenate(labels) if labels else np.zeros(0, np.float32)
    p = np.concatenate(probs) if probs else np.zeros(0)
    return y, p


def evaluate(step: TrainStep, source: DataSource, start: int, end: int, batch_size: int) -> dict[str, float]:
    """AUC and logloss over rows [start, end)."""
    return eval_metrics(*predict_range(step, source, start, end, batch_size))


@dataclass
class TrainStats:
    """What a stretch of training did: steps, samples, running loss and wall seconds."""

    steps: int = 0
    samples: int = 0
    loss_ema: float | None = None
    seconds: float = 0.0


def train_range(step: TrainStep, source: DataSource, start: int, end: int, batch_size: int,
                first_step: int = 1, max_steps: int = 0, bar=None, report: WorkerReport | None = None) -> TrainStats:
    """Train on rows [start, end) in order; global steps count from `first_step`.

    max_steps > 0 stops early. `bar` is a progress bar from `progress_bar` (or None);
    `report` collects the steps' records and keeps the loss average (a fresh one if None).
    """
    stats = TrainStats()
    report = report if report is not None else WorkerReport(0)
    t0 = time.perf_counter()
    for s in range(start, end, batch_size):
        if max_steps and stats.steps >= max_steps:
            break
        loss, rec = step.train_rows(source, s, min(s + batch_size, end), first_step + stats.steps)
        report.add(rec, loss)
        stats.steps += 1
        stats.samples += rec.rows
        stats.loss_ema = report.loss_ema
        if bar is not None:
            bar.update(1, samples_per_s=stats.samples / (time.perf_counter() - t0), loss=stats.loss_ema)
    stats.seconds = time.perf_counter() - t0
    return stats


class LocalJob(Job):
    """One worker in this process: `data.epochs` passes over the training rows (capped by
    `train.max_steps`), each step the configured batch; round r is global step r + 1.

    With `data.shuffle` each epoch reads its rows in that epoch's block order (`row_order`);
    with `data.prefetch` > 0 a reader (`data.reader`: a process, or a thread) keeps that many
    batches ready, so a step's `data` phase is only the time it waits for its batch."""

    checkpointable = True

    def __init__(self, cfg: Config, setup: LocalSetup, max_steps: int = 0) -> None:
        self.cfg, self.setup = cfg, setup
        rr = row_ranges(cfg, setup.source)
        self.train_start, self.train_end = rr.train_start, rr.train_end
        self.per_epoch = -(-(rr.train_end - rr.train_start) // cfg.data.batch_size)
        self.rounds = self.per_epoch * cfg.data.epochs
        cap = max_steps or cfg.train.max_steps
        if cap:
            self.rounds = min(self.rounds, cap)
        self.report = WorkerReport(0)
        self.order = row_order(cfg, rr)
        self._malformed: list = []  # lines a reader process's copy of the source skipped

    def _span(self, r: int) -> tuple[int, int]:
        a = self.train_start + (r % self.per_epoch) * self.cfg.data.batch_size
        return a, min(a + self.cfg.data.batch_size, self.train_end)

    def _read(self, r: int) -> Batch:
        """Round r's rows (on the reader thread when prefetching)."""
        src = self.setup.source
        if self.order is not None:
            src = self.order.view(src, epoch_of(r, self.per_epoch))
        return src.read(*self._span(r))

    def reader(self, rounds: range) -> str:
        """How `train` reads these rounds: "process", "thread" or "inline" (`data.reader`)."""
        d = self.cfg.data
        if not d.prefetch or not len(rounds):
            return "inline"
        if d.reader != "auto":
            return d.reader
        # a source that travels only as a pickled object may not pickle at all: read it here
        rebuildable = bool(self.setup.source.describe().factory)
        return "process" if rebuildable and len(rounds) * d.batch_size >= AUTO_PROCESS_ROWS else "inline"

    def _batches(self, rounds: range):
        """(round, batch, seconds the step waited for it) for each round."""
        how, depth = self.reader(rounds), self.cfg.data.prefetch
        if how == "inline":
            for r in rounds:
                t0 = time.perf_counter()
                batch = self._read(r)
                yield r, batch, time.perf_counter() - t0
        elif how == "thread":
            with Prefetcher(self._read, ((r,) for r in rounds), depth) as pf:
                for (r,), batch, wait in pf:
                    yield r, batch, wait
        else:
            jobs = [(epoch_of(r, self.per_epoch), *self._span(r)) for r in rounds]
            with ReaderProcess(self.setup.source.describe(), self.order, jobs, depth) as rp:
                stream = iter(rp)
                for r, (_, batch, wait) in zip(rounds, stream):
                    yield r, batch, wait
                for _ in stream:  # its end: the child's malformed lines
                    pass
                self._malformed += rp.malformed

    def train(self, bar, metrics, start=0, stop=None) -> list[WorkerReport]:
        s = self.setup
        t0, rows = time.perf_counter(), 0
        fed = t0  # the live metrics get the worker's totals every METRICS_EVERY_S, as a Ray job's poll does
        batches = self._batches(range(start, self.rounds if stop is None else stop))
        try:
            for r, batch, wait in batches:
                loss, rec = s.step.train_batch(batch, r + 1, before={"data": wait}, span=self._span(r))
                self.report.add(rec, loss)
                rows += rec.rows
                if bar is not None:
                    bar.update(1, samples_per_s=rows / (time.perf_counter() - t0), loss=self.report.loss_ema)
                if metrics is not None and time.perf_counter() - fed >= METRICS_EVERY_S:
                    x = progress_of(self.report)
                    metrics.worker(0, x["phases"], x["rows"], x["sent"], x["received"], x["steps"])
                    fed = time.perf_counter()
        finally:
            batches.close()  # stops the reader (thread or process) if a step raised
        return [self.report]

    def evaluate(self, start, end, batch_size):
        return predict_range(self.setup.step, self.setup.source, start, end, batch_size)

    def malformed(self) -> list:
        return list(self._malformed)

    def model_spec(self):
        return self.setup.spec, self.setup.layer.tables

    def save_model(self, path: Path) -> int:
        from psrec.core.dense_state import save_dense

        self.setup.store.export(path / "tables" / "shard-0", evict=False)
        save_dense(path / "dense", self.setup.model)
        return 1

    def save_state(self, path: Path, base: Path | None = None) -> dict:
        from psrec.core.dense_state import save_dense

        self.setup.store.export(path / "tables" / "shard-0", evict=False,
                                base=None if base is None else base / "tables" / "shard-0")
        save_dense(path / "dense", self.setup.model, self.setup.step.dense.optimizer, rng=True)
        return {"tables": [t.name for t in self.setup.layer.tables], "shards": 1, "dense": "dense"}

    def load_state(self, path: Path) -> None:
        from psrec.core.dense_state import load_dense

        self.setup.store.restore(path / "tables" / "shard-0")
        load_dense(path / "dense", self.setup.model, self.setup.step.dense.optimizer, rng=True)

    def details(self):
        s = self.setup
        out = {"tables": to_mapping(s.store.stats())}
        planted = getattr(s.source, "planted_logits", None)
        if planted is not None:
            rr = row_ranges(self.cfg, s.source)
            y = np.concatenate([b.labels for b in s.source.batches(rr.eval_start, rr.eval_end, 65536)])
            out["planted_auc"] = auc(y, planted(rr.eval_start, rr.eval_end))
        return out


def run_local(cfg: Config, run_dir: Path | None = None, source: DataSource | None = None,
              max_steps: int = 0, resume_from: Path | None = None) -> RunResult:
    """Train on the training range, evaluate on the held-out range, write results.json.

    `max_steps` > 0 caps the steps (as `train.max_steps`); `resume_from`: a checkpoint to
    continue from."""
    if cfg.train.pipeline != "off":
        raise ValueError(f"train.pipeline = {cfg.train.pipeline!r} is for collective runs; local runs take \"off\"")
    setup = build_local(cfg, source)
    job = LocalJob(cfg, setup, max_steps)
    return run_job(cfg, "local", lambda: job, setup.source, run_dir=run_dir, total_steps=job.rounds,
                   resume_from=resume_from)
