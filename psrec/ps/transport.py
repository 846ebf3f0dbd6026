"""The transport seam between PS clients and PS shards.

A transport calls the same method on several shards *concurrently* and returns their
results in shard order. Three implementations share this interface: in-process (direct
calls, for unit tests and the simulator), Ray (actor calls and the same-node channel,
`psrec.ps.ray_transport`) and gRPC (`psrec.ps.grpc_transport`). Endpoints on every transport
expose:

    pull(keys, train, dense, min_step, next_step) -> (rows, dense_slice, waited_s, step)
    push(grads, dense_grad, step) -> None
    stats(detail) -> ShardStats;  export(path), restore(path), table_values(table), ping()

`min_step` (sync mode) asks the shard to answer only once step `min_step` is applied;
`waited_s` reports how long that took, so the client can book it as waiting, not
communication. `next_step` asks shard 0 to advance the global step and return it.

Every pull and push, on every transport, is checked by `psrec.ps.wire` before the shard
sees it: a bad one is refused with a `WireError` and stores nothing.
"""
from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from psrec.ps.config import WireLimits
from psrec.ps.shard import PSShard
from psrec.ps.wire import check_pull, check_push

__all__ = ["Transport", "InProcessTransport", "ShardEndpoint"]


class ShardEndpoint:
    """A PSShard behind the endpoint signature, called directly. In-process workers run on
    threads, so a sync-mode pull waits on a condition until its step is applied, exactly as
    the Ray actor does. Requests are checked against `limits` first (`psrec.ps.wire`)."""

    def __init__(self, shard: PSShard, timeout_s: float = 600.0, limits: WireLimits | None = None) -> None:
        self.shard = shard
        self.timeout_s = timeout_s
        self.limits = limits or WireLimits()
        self._applied = threading.Condition()
        dense = getattr(shard, "_dense", None)
        self.dense_size = None if dense is None else int(dense.numel())  # floats in this shard's dense slice

    def pull(self, keys, train=True, dense=False, min_step=0, next_step=False):
        check_pull(self, keys, train, dense, min_step, next_step, self.limits)
        t0 = time.perf_counter()
        if self.shard.sync and min_step > self.shard.applied_step:
            with self._applied:
                if not self._applied.wait_for(lambda: self.shard.applied_step >= min_step, self.timeout_s):
                    raise TimeoutError(f"shard {self.shard.index}: step {min_step} not applied "
                                       f"after {self.timeout_s} s (a worker missing?)")
        waited = time.perf_counter() - t0
        rows, d = self.shard.pull(keys, train, dense)
        return rows, d, waited, (self.shard.next_step() if next_step else None)

    def push(self, grads, dense_grad, step):
        check_push(self, grads, dense_grad, step, self.limits)
        self.shard.push(grads, dense_grad, step)
        if self.shard.sync:
            with self._applied:
                self._applied.notify_all()

    @property
    def index(self) -> int:
        return self.shard.index

    @property
    def sync(self) -> bool:
        return self.shard.sync

    @property
    def applied_step(self) -> int:
        return self.shard.applied_step

    @property
    def store(self):
        return self.shard.store

    def __getattr__(self, name: str):
        return getattr(self.shard, name)


class Transport(ABC):
    """Calls methods on shard endpoints."""

    num_shards: int

    @abstractmethod
    def call_all(self, method: str, args: Sequence[tuple | None]) -> list[Any]:
        """Call `method(*args[s])` on every shard s whose args are not None, concurrently.

        Returns one result per shard (None where skipped), in shard order.
        """

    def call(self, shard: int, method: str, *args) -> Any:
        """One call on one shard."""
        return self.call_all(method, [args if s == shard else None for s in range(self.num_shards)])[shard]

    def broadcast(self, method: str, *args) -> list[Any]:
        """The same call on every shard."""
        return self.call_all(method, [args] * self.num_shards)

    def shutdown(self) -> None:
        """Release the shards (no-op in process)."""


class InProcessTransport(Transport):
    """Shards in this process: calls are direct and sequential (the network model still
    books them as concurrent, which is what emulation measures)."""

    def __init__(self, shards: Sequence[PSShard]) -> None:
        self.endpoints = [ShardEndpoint(s) for s in shards]
        self.num_shards = len(shards)

    def call_all(self, method, args):
        return [None if a is None else getattr(self.endpoints[s], method)(*a) for s, a in enumerate(args)]
