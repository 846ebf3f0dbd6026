"""Parameter servers as Ray actors, and the transport that calls them concurrently."""
from __future__ import annotations

from typing import Any, Sequence

import ray

from psrec.ps.shard import DenseSpec, PSShard
from psrec.ps.transport import ShardEndpoint, Transport

__all__ = ["PSActor", "RayTransport", "start_ps_actors"]


@ray.remote(max_restarts=0)
class PSActor:
    """A PSShard in its own process, behind the same `ShardEndpoint` the in-process transport
    uses. A threaded actor (not asyncio): a sync-mode pull blocks its thread on a condition
    until its step is applied while other threads serve the pushes that complete that step.
    Threaded calls cost measurably less per call than asyncio ones in Ray (ps_bench), and the
    shard's own lock already serialises table access."""

    def __init__(self, index: int, tables, num_workers: int, sync: bool, dense: DenseSpec | None,
                 threads: int = 1) -> None:
        import torch

        torch.set_num_threads(threads)
        self.endpoint = ShardEndpoint(PSShard(index, tables, num_workers, sync, dense))

    def pull(self, keys, train=True, dense=False, min_step=0, next_step=False):
        return self.endpoint.pull(keys, train, dense, min_step, next_step)

    def push(self, grads, dense_grad, step):
        return self.endpoint.push(grads, dense_grad, step)

    def stats(self, detail=False):
        return self.endpoint.stats(detail)

    def export(self, path):
        return self.endpoint.export(path)

    def restore(self, path):
        return self.endpoint.restore(path)

    def table_values(self, table):
        return self.endpoint.table_values(table)

    def next_step(self):
        return self.endpoint.next_step()

    def ping(self):
        return self.endpoint.ping()


def start_ps_actors(num_ps: int, tables, num_workers: int, sync: bool, dense: Sequence[DenseSpec | None],
                    num_cpus: float = 0.5, health_timeout_s: float = 60.0) -> list:
    """Start `num_ps` PS actors and wait until each answers a ping (bounded)."""
    # One thread per worker (each has at most one call in flight per shard, and a sync pull
    # may block its thread until the step's pushes arrive) plus two for driver calls.
    actors = [PSActor.options(num_cpus=num_cpus, max_concurrency=num_workers + 2)
              .remote(i, tables, num_workers, sync, dense[i])
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
