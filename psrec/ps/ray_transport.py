"""Parameter servers as Ray actors, and the transport that calls them concurrently."""
from __future__ import annotations

import asyncio
import time
from typing import Any, Sequence

import ray

from psrec.ps.shard import DenseSpec, PSShard
from psrec.ps.transport import Transport

__all__ = ["PSActor", "RayTransport", "start_ps_actors"]


@ray.remote(max_restarts=0)
class PSActor:
    """A PSShard in its own process. Async so that a sync-mode pull can wait for its step
    without blocking the pushes that complete that step (all run on one event loop, one at
    a time: the shard needs no extra locking)."""

    def __init__(self, index: int, tables, num_workers: int, sync: bool, dense: DenseSpec | None,
                 threads: int = 1) -> None:
        import torch

        torch.set_num_threads(threads)
        self.shard = PSShard(index, tables, num_workers, sync, dense)
        self._applied = asyncio.Condition()

    async def pull(self, keys, train=True, dense=False, min_step=0, next_step=False):
        t0 = time.perf_counter()
        if self.shard.sync and min_step > self.shard.applied_step:
            async with self._applied:
                await self._applied.wait_for(lambda: self.shard.applied_step >= min_step)
        waited = time.perf_counter() - t0
        rows, d = self.shard.pull(keys, train, dense)
        return rows, d, waited, (self.shard.next_step() if next_step else None)

    async def push(self, grads, dense_grad, step):
        self.shard.push(grads, dense_grad, step)
        if self.shard.sync:
            async with self._applied:
                self._applied.notify_all()

    async def stats(self, detail=False):
        return self.shard.stats(detail)

    async def export(self, path):
        return self.shard.export(path)

    async def restore(self, path):
        return self.shard.restore(path)

    async def table_values(self, table):
        return self.shard.table_values(table)

    async def next_step(self):
        return self.shard.next_step()

    async def ping(self):
        return self.shard.index


def start_ps_actors(num_ps: int, tables, num_workers: int, sync: bool, dense: Sequence[DenseSpec | None],
                    num_cpus: float = 0.5, health_timeout_s: float = 60.0) -> list:
    """Start `num_ps` PS actors and wait until each answers a ping (bounded)."""
    actors = [PSActor.options(num_cpus=num_cpus, name=None).remote(i, tables, num_workers, sync, dense[i])
              for i in range(num_ps)]
    ray.get([a.ping.remote() for a in actors], timeout=health_timeout_s)
    return actors


class RayTransport(Transport):
    """Calls PS actors: every `.remote()` is issued before any result is awaited, so the
    requests to all shards are in flight at once."""

    def __init__(self, actors: Sequence[Any], timeout_s: float = 600.0) -> None:
        self.actors = list(actors)
        self.num_shards = len(self.actors)
        self.timeout_s = timeout_s

    def call_all(self, method, args):
        refs = [None if a is None else getattr(self.actors[s], method).remote(*a) for s, a in enumerate(args)]
        live = [r for r in refs if r is not None]
        done = dict(zip(live, ray.get(live, timeout=self.timeout_s))) if live else {}
        return [None if r is None else done[r] for r in refs]

    def shutdown(self, patience_s: float = 5.0) -> None:
        for a in self.actors:
            ray.kill(a)
        self.actors = []
