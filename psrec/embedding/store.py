"""The seam between the trainer and wherever embedding rows live.

Local training keeps embedding variables in-process; parameter-server training pulls and
pushes them over a transport; collective training exchanges them with all-to-all. The
trainer sees only this interface, so the three paths share one training step.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from psrec.comm.traffic import Traffic

__all__ = ["EmbeddingStore", "BatchedStore"]


class EmbeddingStore(ABC):
    """Named embedding tables keyed by int64 feature keys.

    The training step (`psrec.core.step.TrainStep`) also asks a store what its calls cost:
    `take_seconds` splits their seconds into the step's phases (what it leaves unsplit is
    booked as `pull_phase` for lookups, `push_phase` for applies) and `take_traffic` gives
    their bytes. A local store costs no traffic and books lookups and applies as such.
    """

    pull_phase = "lookup"
    push_phase = "apply"
    # A store whose tables take a batch's raw key draws (duplicates included) and per-draw
    # gradients (`lookup_raw_many` / `apply_raw_many`): the step then de-duplicates nothing
    # itself. Stores behind a wire take distinct keys: the step de-duplicates for them.
    raw_batches = False
    # Every rank leaves this store's lookup at about the same moment (a collective's last
    # all-to-all): the lockstep split measures `ready` from there (`psrec.core.lockstep`).
    meets_at_lookup = False

    @abstractmethod
    def dim(self, table: str) -> int:
        """Row width of `table`."""

    @abstractmethod
    def lookup(self, table: str, keys: np.ndarray, train: bool = True) -> np.ndarray:
        """Rows for unique `keys` (N,) int64 -> (N, dim) float32.

        Creates nothing: a key never updated gets its deterministic initial row (or zeros
        while an admission filter holds it back). `train=False` (evaluation, serving)
        must not count towards frequencies.
        """

    @abstractmethod
    def apply_gradients(self, table: str, keys: np.ndarray, grads: np.ndarray,
                        counts: np.ndarray, step: int) -> None:
        """Apply summed gradients for unique `keys`.

        keys: (N,) int64 unique; grads: (N, dim) float32, already summed over a batch's
        duplicates; counts: (N,) int64 occurrences of each key in the batch (for freq);
        step: the global step that becomes each touched key's version.
        """

    def lookup_many(self, keys: dict[str, np.ndarray], train: bool = True) -> dict[str, np.ndarray]:
        """`lookup` for several tables at once. Remote stores override this to send one
        request per shard for all tables (one round trip per step, not one per table)."""
        return {t: self.lookup(t, k, train=train) for t, k in keys.items()}

    def apply_many(self, grads: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], step: int) -> None:
        """`apply_gradients` for several tables: table -> (keys, grads, counts)."""
        for t, (k, g, c) in grads.items():
            self.apply_gradients(t, k, g, c, step)

    def lookup_raw_many(self, keys: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, object]]:
        """Rows of each table's raw draws (N_t,) int64 -> (table -> (N_t, dim) float32, one row
        per draw; table -> the handle its `apply_raw_many` needs). Tables given the same array
        object (fields shared by an embedding and a linear table) share one de-duplication.
        Only where `raw_batches`; creates and counts nothing, as a training `lookup`."""
        raise NotImplementedError(f"{type(self).__name__} takes distinct keys (raw_batches is False)")

    def apply_raw_many(self, handles: dict[str, object], grads: dict[str, np.ndarray], step: int) -> None:
        """Per-draw gradients table -> (N_t, dim) float32 of the last `lookup_raw_many`, whose
        `handles` they come with, summed per key and applied (a table left out had none)."""
        raise NotImplementedError(f"{type(self).__name__} takes distinct keys (raw_batches is False)")

    def begin_step(self) -> None:
        """A training step starts (a PS client asks its next pull for a global step)."""

    def global_step(self, proposed: int) -> int:
        """The step's global step once its lookup is done (an async PS hands one out)."""
        return proposed

    def take_seconds(self) -> dict[str, float]:
        """Seconds of the calls since the last take, by step phase (see the class doc)."""
        return {}

    def take_traffic(self) -> Traffic:
        """Bytes and messages of the calls since the last take."""
        return Traffic()

    def flush(self) -> None:
        """Wait for outstanding asynchronous updates (no-op for synchronous stores)."""


class BatchedStore(EmbeddingStore):
    """A store whose native calls cover all tables at once (one message per shard per step:
    the PS client, the collective sharded store): the per-table calls are its many-table
    calls on one table. Subclasses set `dims` (table -> row width) and implement
    `lookup_many` and `apply_many`."""

    dims: dict[str, int]

    def dim(self, table: str) -> int:
        return self.dims[table]

    def lookup(self, table: str, keys: np.ndarray, train: bool = True) -> np.ndarray:
        return self.lookup_many({table: keys}, train)[table]

    def apply_gradients(self, table, keys, grads, counts, step):
        self.apply_many({table: (keys, grads, counts)}, step)

    @abstractmethod
    def lookup_many(self, keys: dict[str, np.ndarray], train: bool = True) -> dict[str, np.ndarray]:
        ...

    @abstractmethod
    def apply_many(self, grads: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], step: int) -> None:
        ...
