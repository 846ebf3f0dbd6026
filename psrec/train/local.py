"""Single-process training: the reference every distributed path is checked against."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from psrec.config import Config
from psrec.config_io import to_mapping
from psrec.data.base import DataSource
from psrec.embedding.layer import EmbeddingLayer
from psrec.embedding.store import EmbeddingStore
from psrec.metrics.auc import auc, logloss
from psrec.models.base import CTRModel
from psrec.runs import make_run_dir, write_results
from psrec.train.progress import progress_bar
from psrec.train.step import SparseStep, make_dense_optimizer

__all__ = ["RowRanges", "row_ranges", "build_local", "evaluate", "run_local", "LocalSetup",
           "TrainStats", "train_range"]


@dataclass(frozen=True)
class RowRanges:
    """Training rows [train_start, train_end) and held-out rows [eval_start, eval_end)."""

    train_start: int
    train_end: int
    eval_start: int
    eval_end: int


def row_ranges(cfg: Config, source: DataSource) -> RowRanges:
    """Resolve the configured ranges against the source's size.

    A file smaller than train_rows + eval_rows keeps its last 20% (at most eval_rows) for
    evaluation and trains on the rest, so small samples still give a held-out AUC.
    """
    d, n = cfg.data, source.num_rows
    if d.eval_start >= 0:
        ev_start = d.eval_start
        tr_end = min(d.train_rows, n)
    elif d.train_rows + d.eval_rows <= n:
        tr_end, ev_start = d.train_rows, d.train_rows
    else:
        n_eval = min(d.eval_rows, max(1, n // 5))
        tr_end = ev_start = n - n_eval
    ev_end = min(ev_start + d.eval_rows, n)
    if tr_end <= 0 or ev_start > ev_end:
        raise ValueError(f"source has {n} rows: too few for the configured train/eval ranges")
    return RowRanges(0, tr_end, ev_start, ev_end)


@dataclass
class LocalSetup:
    """Everything a single-process run holds."""

    source: DataSource
    model: CTRModel
    store: EmbeddingStore
    layer: EmbeddingLayer
    step: SparseStep


def build_local(cfg: Config, source: DataSource | None = None) -> LocalSetup:
    """Source, model, local embedding tables and the step, all seeded from `cfg.train.seed`."""
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    from psrec.embedding.local import LocalStore
    from psrec.train.plan import plan_model

    mp = plan_model(cfg, source)
    source, model, tables = mp.source, mp.model, mp.tables
    store = LocalStore(mp.ev_configs)
    layer = EmbeddingLayer(source.schema, tables, cfg.embedding.pooling)
    opt = make_dense_optimizer(cfg.train.optimizer, model.parameters(), cfg.train.lr)
    return LocalSetup(source, model, store, layer, SparseStep(model, layer, store, opt))


def evaluate(step: SparseStep, source: DataSource, start: int, end: int, batch_size: int) -> dict[str, float]:
    """AUC and logloss over rows [start, end)."""
    labels, probs = [], []
    for b in source.batches(start, end, batch_size):
        probs.append(step.predict(b))
        labels.append(b.labels)
    y = np.concatenate(labels) if labels else np.zeros(0)
    p = np.concatenate(probs) if probs else np.zeros(0)
    return {"auc": auc(y, p), "logloss": logloss(y, p) if len(y) else float("nan"), "eval_rows": int(len(y))}


@dataclass
class TrainStats:
    """What a stretch of training did: steps, samples, running loss and wall seconds."""

    steps: int = 0
    samples: int = 0
    loss_ema: float | None = None
    seconds: float = 0.0


def train_range(step: SparseStep, source: DataSource, start: int, end: int, batch_size: int,
                first_step: int = 1, max_steps: int = 0, bar=None) -> TrainStats:
    """Train on rows [start, end) in order; global steps count from `first_step`.

    max_steps > 0 stops early. `bar` is a progress bar from `progress_bar` (or None).
    """
    stats = TrainStats()
    timer = step.timer
    t0 = time.perf_counter()
    it = source.batches(start, end, batch_size)
    while not max_steps or stats.steps < max_steps:
        with timer.phase("data"):
            batch = next(it, None)
        if batch is None:
            break
        loss = step.train(batch, first_step + stats.steps)
        stats.steps += 1
        stats.samples += len(batch)
        stats.loss_ema = loss if stats.loss_ema is None else 0.98 * stats.loss_ema + 0.02 * loss
        if bar is not None:
            bar.update(1, samples_per_s=stats.samples / (time.perf_counter() - t0), loss=stats.loss_ema)
    stats.seconds = time.perf_counter() - t0
    return stats


def run_local(cfg: Config, run_dir: Path | None = None, source: DataSource | None = None) -> dict[str, Any]:
    """Train on the training range, evaluate on the held-out range, write results.json."""
    setup = build_local(cfg, source)
    src, step = setup.source, setup.step
    rr = row_ranges(cfg, src)
    run_dir = run_dir or make_run_dir(cfg, "local")
    bs = cfg.data.batch_size
    steps_per_epoch = -(-(rr.train_end - rr.train_start) // bs)
    total = steps_per_epoch * cfg.data.epochs
    if cfg.train.max_steps:
        total = min(total, cfg.train.max_steps)
    done = TrainStats()
    with progress_bar(total, cfg.train.progress, desc=f"train {cfg.model.name}") as bar:
        for _ in range(cfg.data.epochs):
            s = train_range(step, src, rr.train_start, rr.train_end, bs, first_step=done.steps + 1,
                            max_steps=total - done.steps, bar=bar)
            done = TrainStats(done.steps + s.steps, done.samples + s.samples,
                              s.loss_ema if s.loss_ema is not None else done.loss_ema, done.seconds + s.seconds)
            if done.steps >= total:
                break
    metrics = evaluate(step, src, rr.eval_start, rr.eval_end, bs)
    results: dict[str, Any] = {
        "mode": "local",
        "model": cfg.model.name,
        **metrics,
        "train_loss": done.loss_ema,
        "samples_per_s": done.samples / done.seconds if done.seconds > 0 else float("nan"),
        "train_seconds": done.seconds,
        "train_rows": done.samples,
        "steps": done.steps,
        "phases": step.timer.as_dict(),  # seconds per phase
        "ranges": rr.__dict__,
        "tables": to_mapping(setup.store.stats()),
        "run_dir": str(run_dir),
    }
    planted = getattr(src, "planted_logits", None)
    if planted is not None:
        y = np.concatenate([b.labels for b in src.batches(rr.eval_start, rr.eval_end, 65536)])
        results["planted_auc"] = auc(y, planted(rr.eval_start, rr.eval_end))
    malformed = getattr(src, "malformed", None)
    if malformed is not None:
        results["malformed_lines"] = to_mapping(list(malformed))
    write_results(run_dir, results)
    return results
