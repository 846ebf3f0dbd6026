"""Which rows a run trains and evaluates, and which rows each worker takes in each step.

Every mode resolves these the same way, so local, PS and collective runs of one
configuration train the same rows in the same order (the equivalence oracles rely on it).
"""
from __future__ import annotations

from dataclasses import dataclass

from psrec.data.base import DataSource
from psrec.data.shuffle import RowOrder

__all__ = ["RowRanges", "row_ranges", "row_order", "file_splits", "count_rounds", "rounds_per_epoch", "rows_of",
           "epoch_of"]


@dataclass(frozen=True)
class RowRanges:
    """Training rows [train_start, train_end), test rows [eval_start, eval_end) (the result's
    auc/logloss) and validation rows [valid_start, valid_end) (empty: none)."""

    train_start: int
    train_end: int
    eval_start: int
    eval_end: int
    valid_start: int = 0
    valid_end: int = 0


def row_ranges(cfg, source: DataSource) -> RowRanges:
    """Resolve the configured ranges against the source's size.

    A file set (`psrec.data.fileset.FileSetSource`) brings its own splits: every train row
    trains, its valid and test rows are evaluated (data.train_rows/eval_rows do not apply).
    For one source: a file smaller than train_rows + eval_rows keeps its last 20% (at most
    eval_rows) for evaluation and trains on the rest, so small samples still give a held-out
    AUC (the result's `splits` says so).
    """
    layout = getattr(source, "layout", None)
    if layout is not None:
        (a, b), (va, vb), (ta, tb) = layout.train, layout.valid, layout.test
        if b <= a:
            raise ValueError(f"the train files hold {b - a} rows to train on: too few")
        return RowRanges(a, b, ta, tb, va, vb)
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


def row_order(cfg, rr: RowRanges) -> RowOrder | None:
    """The training rows' per-epoch order (`data.shuffle`: seeded by train.seed and the epoch),
    or None: file order. Every mode builds it from the same ranges, so all shuffle alike."""
    d = cfg.data
    if not d.shuffle:
        return None
    return RowOrder(rr.train_start, rr.train_end, (cfg.train.seed,), d.shuffle_block)


def file_splits(source: DataSource, start: int, end: int) -> tuple[int, ...]:
    """First rows of the files that begin inside (start, end): where work-queue tasks must
    break so that each task reads one file's slice (none for a one-file source)."""
    layout = getattr(source, "layout", None)
    if layout is None:
        return ()
    return tuple(sorted({first for _, _, first, _ in layout.files if start < first < end}))


def epoch_of(round_: int, per_epoch: int) -> int:
    """The epoch (0-based) round `round_` belongs to."""
    return round_ // per_epoch


def rounds_per_epoch(cfg, train_rows: int, workers: int) -> int:
    """Whole rounds (every worker one batch) in one pass over `train_rows` rows; at least one
    or a ValueError naming the setting. The rows short of a full round are not trained."""
    bs = cfg.data.batch_size
    rounds = train_rows // (bs * workers)
    if rounds < 1:
        raise ValueError(f"{train_rows} training rows are less than one round ({workers} workers x "
                         f"data.batch_size {bs})")
    return rounds


def count_rounds(cfg, train_rows: int, workers: int) -> int:
    """Steps per worker over `data.epochs` passes, capped by `train.max_steps`.

    >>> from types import SimpleNamespace as NS
    >>> cfg = NS(data=NS(batch_size=10, epochs=3, train_rows=100), train=NS(max_steps=0))
    >>> count_rounds(cfg, 100, 2)   # 5 rounds an epoch, 3 epochs
    15
    """
    rounds = rounds_per_epoch(cfg, train_rows, workers) * cfg.data.epochs
    if cfg.train.max_steps:
        rounds = min(rounds, cfg.train.max_steps)
    return rounds


def rows_of(round_: int, index: int, workers: int, batch_size: int, base: int, per_epoch: int) -> tuple[int, int]:
    """Rows [start, end) of worker `index` in round `round_` (0-based, counted over epochs).

    Workers interleave, so a round covers `workers * batch_size` consecutive rows (= one
    local step of that batch size); round `per_epoch` starts the next pass at `base` again.

    >>> [rows_of(r, 1, 2, 10, 0, 3) for r in (0, 2, 3)]   # worker 1 of 2, 3 rounds an epoch
    [(10, 20), (50, 60), (10, 20)]
    """
    start = base + ((round_ % per_epoch) * workers + index) * batch_size
    return start, start + batch_size
