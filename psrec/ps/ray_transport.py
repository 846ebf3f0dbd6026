"""Parameter servers as Ray actors, and the transport that calls them concurrently.

Pulls and pushes to a PS on the caller's own node carry their arrays through shared memory
(`psrec.ps.shm`); every other call, and every call across nodes, goes through Ray's object
store as usual.
"""
from __future__ import annotations

import uuid
from typing import Any, Sequence

import ray

from psrec.ps.shard import DenseSpec, PSShard
from psrec.ps.shm import Arena, MapCache, pack, payload_bytes, shm_available, unpack
from psrec.ps.transport import ShardEndpoint, Transport

BULK_METHODS = ("pull", "push")  # the per-step calls whose payloads are MBs

__all__ = ["PSActor", "RayTransport", "start_ps_actors"]


@ray.remote(max_restarts=0)
class PSActor:
    """A PSShard in its own process, behind the same `ShardEndpoint` the in-process transport
    uses. A threaded actor (not asyncio): a sync-mode pull blocks its thread on a condition
    until its step is applied while other threads serve the pushes that complete that step.
    Threaded calls cost ~3 ms less per 4 MiB call than asyncio ones (an echo actor on a loaded
    2-core machine); the shard's own lock already serialises table access."""

    def __init__(self, index: int, tables, num_workers: int, sync: bool, dense: DenseSpec | None,
                 threads: int = 1) -> None:
        import torch

        torch.set_num_threads(threads)
        self.endpoint = ShardEndpoint(PSShard(index, tables, num_workers, sync, dense))
        self._maps = MapCache()

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()

    def call_shm(self, method: str, channel: str, args: tuple, request, reply):
        """`method(*args)` with the caller's large arrays in its request arena (`request`:
        (path, size), or None when it sent none) and the result's placed in its reply arena.

        Returns (result, need): result with Slots into the reply arena, or the plain result
        with `need` > 0 (bytes) when it did not fit there.
        """
        if request is not None:
            # Views are enough unless the shard keeps the arrays after this call (a sync push
            # waits for the step's other workers while this caller writes its next request).
            keep = method == "push" and self.endpoint.shard.sync
            args = unpack(args, self._maps.get(channel + "/req", request), copy=keep)
        # Map the reply arena whatever this result needs: the caller unlinks its file after
        # this call, trusting that it is mapped here.
        out = None if reply is None else self._maps.get(channel + "/rep", reply)
        result = getattr(self.endpoint, method)(*args)
        need = payload_bytes(result)
        if need == 0:
            return result, 0
        if out is None or need > reply[1]:
            return result, need
        return pack(result, out), 0

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
    requests to all shards are in flight at once.

    Args:
        actors: PS actors, in shard order.
        timeout_s: how long to wait for a call's replies.
        shared_memory: send pull/push arrays to same-node actors through shared memory
            (None: whenever /dev/shm is usable; False: always Ray's object store). Arrays
            in pull results are then read-only views, valid until the next pull or push on
            this transport (`PSClient` copies rows into the batch at once).
    """

    def __init__(self, actors: Sequence[Any], timeout_s: float = 600.0, shared_memory: bool | None = None) -> None:
        self.actors = list(actors)
        self.num_shards = len(self.actors)
        self.timeout_s = timeout_s
        self.local = [False] * self.num_shards
        if shared_memory is not False and shm_available() and self.actors:
            here = ray.get_runtime_context().get_node_id()
            self.local = [n == here for n in ray.get([a.node_id.remote() for a in self.actors], timeout=timeout_s)]
        self._caller = uuid.uuid4().hex
        self._req = [Arena(f"req{s}") for s in range(self.num_shards)]
        self._rep = [Arena(f"rep{s}") for s in range(self.num_shards)]

    def call_all(self, method, args):
        bulk = method in BULK_METHODS
        refs, via_shm = [], []
        for s, a in enumerate(args):
            shm = a is not None and bulk and self.local[s]
            via_shm.append(shm)
            if a is None:
                refs.append(None)
            elif shm:
                req = None
                need = payload_bytes(a)
                if need:
                    self._req[s].ensure(need)
                    a, req = pack(a, self._req[s].buf), self._req[s].name
                refs.append(self.actors[s].call_shm.remote(method, f"{self._caller}:{s}", a, req, self._rep[s].name))
            else:
                refs.append(getattr(self.actors[s], method).remote(*a))
        live = [r for r in refs if r is not None]
        done = dict(zip(live, ray.get(live, timeout=self.timeout_s))) if live else {}
        out = []
        for s, r in enumerate(refs):
            if r is None:
                out.append(None)
                continue
            res = done[r]
            if via_shm[s]:
                res, need = res
                res = unpack(res, self._rep[s].buf, copy=False)  # valid until the next call
                self._req[s].peer_mapped()
                self._rep[s].peer_mapped()
                self._rep[s].ensure(need)  # the reply came through Ray this time; next time it fits
            out.append(res)
        return out

    def shutdown(self, patience_s: float = 5.0) -> None:
        for a in self.actors:
            ray.kill(a)
        self.actors = []
        for arena in self._req + self._rep:
            arena.close()
