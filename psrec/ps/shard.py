"""One parameter server: shards of the embedding variables and of the dense parameters.

Plain Python (no Ray): the Ray actor in `psrec.ps.ray_transport` wraps it, the in-process
transport calls it directly, and both run the same code.

Modes:
    async  every push is applied at once (DeepRec's asynchronous training);
    sync   pushes of global step s are summed over all workers and applied once, averaged,
           when the last worker's push arrives; equal to local training on the union of
           the workers' batches. With `staleness` s (stale-synchronous parallel) pushes of
           up to s steps past the last applied one wait here, each step still applied
           whole and in order; workers then run at most s steps ahead of the slowest.
"""
from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from psrec.embedding.local import LocalStore
from psrec.ev import EVConfig

__all__ = ["PSShard", "ShardStats", "DenseSpec"]


@dataclass(frozen=True)
class DenseSpec:
    """This shard's slice of the flat dense parameter vector, and how to optimise it.

    Args:
        init: (n,) float32 initial values of the slice (from the driver's model).
        optimizer: "sgd", "adam" or "adagrad".
        lr: learning rate.
    """

    init: np.ndarray
    optimizer: str = "adam"
    lr: float = 1e-3


APPLY_WINDOW = 1024  # applies whose seconds a shard keeps one by one (ShardStats.apply_recent)


@dataclass
class ShardStats:
    """What a shard has served (bytes are payload bytes: keys 8 B, values 4 B per float)."""

    shard: int
    requests: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    apply_seconds: float = 0.0
    pull_seconds: float = 0.0
    rows: dict[str, int] = field(default_factory=dict)
    applies: int = 0
    # The last APPLY_WINDOW applies' seconds, oldest first: a total alone hides that the first
    # applies (new rows, first allocations) cost several times the steady ones (psrec's
    # validate-sim: a 62-step run's mean apply 10.5 ms, its repeat's 3.0 ms).
    apply_recent: list[float] = field(default_factory=list)
    waiting_keys: dict[str, int] = field(default_factory=dict)
    admitted_keys: dict[str, int] = field(default_factory=dict)
    freq_histogram: dict[str, list[int]] = field(default_factory=dict)  # counts in log2 buckets of freq
    global_step: int = 0


class PSShard:
    """Shard `index` of `num_shards`: EVs for its keys of every table, plus a dense slice.

    Args:
        index: this shard's index.
        tables: table name -> EVConfig (same configs on every shard: same seeds, so a key's
            initial row does not depend on which shard creates it).
        num_workers: pushes per step to wait for in sync mode.
        sync: aggregate a step's pushes from all workers before applying.
        dense: this shard's slice of the dense parameters, or None.
        staleness: sync mode: workers may run this many steps ahead of the last applied one
            (`ps.staleness`), so pushes up to applied + 1 + staleness
            are accepted and wait in `_pending`.
    """

    def __init__(self, index: int, tables: dict[str, EVConfig], num_workers: int = 1,
                 sync: bool = False, dense: DenseSpec | None = None, staleness: int = 0) -> None:
        self.index = index
        self.staleness = staleness
        self.store = LocalStore(tables)
        self.num_workers = num_workers
        self.sync = sync
        self.stats_ = ShardStats(index)
        self._apply_ring: deque[float] = deque(maxlen=APPLY_WINDOW)
        self._lock = threading.Lock()  # Ray may run methods on several threads
        self._global_step = 0
        self._applied_step = 0
        self._pending: dict[int, list] = {}  # sync: step -> pushes received so far
        self._dense = None
        if dense is not None:
            self._dense = torch.nn.Parameter(torch.from_numpy(np.array(dense.init, dtype=np.float32)))
            from psrec.core.step import make_dense_optimizer

            self._dense_opt = make_dense_optimizer(dense.optimizer, [self._dense], dense.lr)

    # ------------------------------------------------------------------ steps
    def next_step(self) -> int:
        """Advance and return the global step (async mode keeps the one counter on shard 0)."""
        with self._lock:
            self._global_step += 1
            return self._global_step

    @property
    def applied_step(self) -> int:
        """Sync mode: the last step whose pushes from every worker have been applied."""
        return self._applied_step

    # ------------------------------------------------------------------ pull / push
    def pull(self, keys: dict[str, np.ndarray], train: bool = True,
             dense: bool = False) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        """Rows of this shard's keys (table -> (n, dim) float32) and, if asked, its dense slice."""
        t0 = time.perf_counter()
        with self._lock:
            out = {t: self.store.lookup(t, k, train=train) for t, k in keys.items()}
            d = self._dense.detach().numpy().copy() if dense and self._dense is not None else None
            s = self.stats_
            s.requests += 1
            s.bytes_in += sum(k.nbytes for k in keys.values())
            s.bytes_out += sum(v.nbytes for v in out.values()) + (d.nbytes if d is not None else 0)
            s.pull_seconds += time.perf_counter() - t0
        return out, d

    def push(self, grads: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
             dense_grad: np.ndarray | None, step: int) -> None:
        """Gradients for this shard's keys (table -> (keys, summed grads, counts)) and dense slice.

        Async: applied now. Sync: held until every worker's push for `step` has arrived (a
        worker with no keys here still pushes, empty, so the count is complete), then summed,
        averaged over workers and applied once.
        """
        for t, (k, g, c) in grads.items():  # reject bad input before anything is stored
            if g.shape != (len(k), self.store.dim(t)) or len(c) != len(k):
                raise ValueError(f"shard {self.index}, table {t!r}: gradient shape {g.shape} does not "
                                 f"match {len(k)} keys of width {self.store.dim(t)}")
            if not np.all(np.isfinite(g)):
                raise FloatingPointError(f"shard {self.index}, table {t!r}: non-finite gradient at step {step}")
        if dense_grad is not None and (self._dense is None or dense_grad.shape != tuple(self._dense.shape)):
            want = None if self._dense is None else tuple(self._dense.shape)
            raise ValueError(f"shard {self.index}: dense gradient shape {dense_grad.shape}, expected {want}")
        with self._lock:
            s = self.stats_
            s.requests += 1
            s.bytes_in += sum(k.nbytes + g.nbytes + c.nbytes for k, g, c in grads.values())
            s.bytes_in += dense_grad.nbytes if dense_grad is not None else 0
            if not self.sync:
                self._apply(grads, dense_grad, step, scale=1.0)
                return
            pending = self._pending.setdefault(step, [])
            pending.append((grads, dense_grad))
            if len(pending) < self.num_workers:
                return
            del self._pending[step]
            merged: dict[str, list] = {}
            for g, _ in pending:
                for t, triple in g.items():
                    merged.setdefault(t, []).append(triple)
            combined = {t: tuple(np.concatenate(parts) for parts in zip(*tr)) for t, tr in merged.items()}
            dense_parts = [d for _, d in pending if d is not None]
            dense_sum = np.sum(dense_parts, axis=0) if dense_parts else None
            # Average over workers: the gradient of the mean loss over the union of their batches.
            self._apply(combined, dense_sum, step, scale=1.0 / self.num_workers)
            self._applied_step = step

    def _apply(self, grads, dense_grad, step: int, scale: float) -> None:
        t0 = time.perf_counter()
        sc = np.float32(scale)
        for t, (k, g, c) in grads.items():
            if len(k):
                # Duplicate keys across workers are summed by the EV before one update.
                self.store.apply_gradients(t, k, g * sc if scale != 1.0 else g, c, step)
        if dense_grad is not None:
            self._dense.grad = torch.from_numpy(np.ascontiguousarray(dense_grad * sc, dtype=np.float32))
            self._dense_opt.step()
        self._global_step = max(self._global_step, step)
        dt = time.perf_counter() - t0
        self.stats_.apply_seconds += dt
        self.stats_.applies += 1
        self._apply_ring.append(dt)

    # ------------------------------------------------------------------ state
    def stats(self, detail: bool = False) -> ShardStats:
        """Counters and table sizes; `detail` adds the per-table freq histogram (copies the table)."""
        with self._lock:
            s = self.stats_
            s.global_step = self._global_step
            for name, st in self.store.stats().items():
                s.rows[name] = int(st.rows)
                s.waiting_keys[name] = int(st.waiting)
                s.admitted_keys[name] = int(st.admitted_total)
                if detail and st.rows:
                    freqs = self.store.variable(name).snapshot().freqs
                    buckets = np.bincount(np.floor(np.log2(np.maximum(freqs, 1))).astype(np.int64))
                    s.freq_histogram[name] = [int(x) for x in buckets]
            return ShardStats(**{**s.__dict__, "apply_recent": list(self._apply_ring)})

    def export(self, path: str, base: str | None = None) -> None:
        """This shard's whole state under `path`: its tables (`<table>/`, EV exports with
        slots), its dense slice and optimizer state (`dense/`), its step counters
        (`steps.json`). Under the shard's lock: one moment. `base`: this shard's export in an
        earlier checkpoint; the tables then hold only rows updated since (`psrec.ev.increment`)."""
        with self._lock:
            self.store.export(path, evict=False, base=base)
            if self._dense is not None:
                from psrec.core.dense_state import save_dense

                save_dense(Path(path) / "dense", _Slice(self._dense), self._dense_opt)
            (Path(path) / "steps.json").write_text(json.dumps(
                {"global_step": self._global_step, "applied_step": self._applied_step}))

    def restore(self, path: str) -> None:
        """Replace this shard's state with what `export` wrote at `path`."""
        with self._lock:
            self.store.restore(path)
            if self._dense is not None:
                from psrec.core.dense_state import load_dense

                load_dense(Path(path) / "dense", _Slice(self._dense), self._dense_opt)
            steps_file = Path(path) / "steps.json"
            if steps_file.is_file():
                steps = json.loads(steps_file.read_text())
                self._global_step, self._applied_step = int(steps["global_step"]), int(steps["applied_step"])
                self._pending.clear()  # pushes of steps after the checkpoint are redone

    def table_values(self, table: str) -> tuple[np.ndarray, np.ndarray]:
        """(keys, values) of every row this shard holds in `table` (for tests and export)."""
        snap = self.store.variable(table).snapshot()
        return snap.keys, snap.values

    def ping(self) -> int:
        return self.index


class _Slice(torch.nn.Module):
    """The shard's dense slice as a module, so its state saves like a replica's."""

    def __init__(self, param: torch.nn.Parameter) -> None:
        super().__init__()
        self.dense = param
