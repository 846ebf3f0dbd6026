"""A collective job's state in a checkpoint, rank by rank: its shard of every table (EV exports
with slots, `tables/shard-<rank>/<table>/`, the saved model's layout) and its dense replica
with the optimizer state and torch's RNG (`ranks/rank-<rank>/`). Every replica holds the same
dense parameters; each rank still writes its own, so that a restore needs no broadcast and a
rank whose replica drifted would show in the checkpoint.

With `base` (an earlier checkpoint of the same job) the tables hold only the rows updated
since (`psrec.core.incremental`). Plain functions of a `CollectiveWorker`: the in-process job
calls them on its rank threads, the Ray actors in their own processes.
"""
from __future__ import annotations

from pathlib import Path

from collective.worker import CollectiveWorker
from psrec.core.checkpoint import CheckpointError
from psrec.core.dense_state import load_dense, save_dense

__all__ = ["save_rank", "load_rank", "check_ranks"]


def save_rank(worker: CollectiveWorker, path: str | Path, base: str | Path | None = None) -> None:
    """Write rank `worker.rank`'s state under checkpoint directory `path`."""
    path, r = Path(path), worker.rank
    if worker.store.local is not None:
        worker.store.local.export(path / "tables" / f"shard-{r}", evict=False,
                                  base=None if base is None else Path(base) / "tables" / f"shard-{r}")
    save_dense(path / "ranks" / f"rank-{r}", worker.model, worker.step.dense.optimizer, rng=True)


def load_rank(worker: CollectiveWorker, path: str | Path) -> None:
    """Restore what `save_rank` wrote for this rank under `path` (a full checkpoint's layout)."""
    path, r = Path(path), worker.rank
    if worker.store.local is not None:
        worker.store.local.restore(path / "tables" / f"shard-{r}")
    load_dense(path / "ranks" / f"rank-{r}", worker.model, worker.step.dense.optimizer, rng=True)


def check_ranks(path: str | Path, workers: int) -> None:
    """Refuse a checkpoint written by a job of another size (its shards would not line up)."""
    found = len(list((Path(path) / "ranks").glob("rank-*")))
    if found != workers:
        raise CheckpointError(f"checkpoint {path}: {found} collective ranks, this run has {workers} "
                              "(collective.workers)")
