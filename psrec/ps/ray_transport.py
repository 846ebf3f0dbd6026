"""Parameter servers as Ray actors, and the transport that calls them concurrently.

Pulls and pushes to a PS on the caller's own node go over a local socket (`psrec.ps.channel`)
with their arrays in shared memory (`psrec.ps.shm`): no Ray call, no object-store copy.
Every other call, and every call across nodes, is a Ray actor call as usual.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ray

from psrec.ps.channel import ChannelClient, ChannelServer, channels_available
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
    2-core machine); the shard's own lock already serialises table access. Same-node clients
    reach pull and push through the actor's channel server instead (one thread per client
    connection, the same blocking rule)."""

    def __init__(self, index: int, tables, num_workers: int, sync: bool, dense: DenseSpec | None,
                 threads: int = 1) -> None:
        import torch

        torch.set_num_threads(threads)
        self.endpoint = ShardEndpoint(PSShard(index, tables, num_workers, sync, dense))
        # Same-node clients call pull/push over this socket instead of through Ray.
        self._channel = ChannelServer(self._serve_bulk, label=f"psrec-ps{index}") if channels_available() else None

    def locate(self) -> tuple[str, str | None]:
        """(Ray node id, channel address or None): a client on the same node uses the channel."""
        return ray.get_runtime_context().get_node_id(), None if self._channel is None else self._channel.address

    def _serve_bulk(self, state: dict, message: tuple):
        """One channel call: (method, args, request, reply). The caller's large arrays are
        in its request arena (`request`: (path, size), or None when it sent none), and the
        result's go into its reply arena.

        Returns (result, need): result with Slots into the reply arena, or the plain result
        with `need` > 0 (bytes) when it did not fit there. `state` is the connection's own
        dict (one client per connection): it keeps that client's arena mappings.
        """
        method, args, request, reply = message
        if method not in BULK_METHODS:
            raise ValueError(f"channel call {method!r}: only {BULK_METHODS} go over the channel")
        maps = state.setdefault("maps", MapCache())
        if request is not None:
            # Views are enough unless the shard keeps the arrays after this call (a sync push
            # waits for the step's other workers while this caller writes its next request).
            keep = method == "push" and self.endpoint.shard.sync
            args = unpack(args, maps.get("req", request), copy=keep)
        # Map the reply arena whatever this result needs: the caller unlinks its file after
        # this call, trusting that it is mapped here.
        out = None if reply is None else maps.get("rep", reply)
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
    """Calls PS actors: every request is sent before any reply is awaited, so the requests to
    all shards are in flight at once.

    Args:
        actors: PS actors, in shard order.
        timeout_s: how long to wait for a call's replies.
        shared_memory: send pulls and pushes to same-node actors over their channel with the
            arrays in shared memory (None: whenever /dev/shm is usable; False: always as Ray
            calls through the object store). Arrays in pull results are then read-only
            views, valid until the next pull or push on this transport (`PSClient` copies
            rows into the batch at once).
    """

    def __init__(self, actors: Sequence[Any], timeout_s: float = 600.0, shared_memory: bool | None = None) -> None:
        self.actors = list(actors)
        self.num_shards = len(self.actors)
        self.timeout_s = timeout_s
        self._channels: list[ChannelClient | None] = [None] * self.num_shards
        if shared_memory is not False and shm_available() and self.actors:
            here = ray.get_runtime_context().get_node_id()
            for s, (node, address) in enumerate(ray.get([a.locate.remote() for a in self.actors], timeout=timeout_s)):
                if node == here and address is not None:
                    self._channels[s] = ChannelClient(address, timeout_s)
        self._req = [Arena(f"req{s}") for s in range(self.num_shards)]
        self._rep = [Arena(f"rep{s}") for s in range(self.num_shards)]

    @property
    def local(self) -> list[bool]:
        """Per shard: whether pulls and pushes go over the same-node channel."""
        return [c is not None for c in self._channels]

    def call_all(self, method, args):
        bulk = method in BULK_METHODS
        refs: list[Any] = [None] * self.num_shards
        sent = []  # shards whose request went over their channel
        try:
            for s, a in enumerate(args):
                if a is None:
                    continue
                if bulk and self._channels[s] is not None:
                    req = None
                    need = payload_bytes(a)
                    if need:
                        self._req[s].ensure(need)
                        a, req = pack(a, self._req[s].buf), self._req[s].name
                    self._channels[s].send((method, a, req, self._rep[s].name))
                    sent.append(s)
                else:
                    refs[s] = getattr(self.actors[s], method).remote(*a)
        finally:
            replies, error = self._collect(sent)  # every sent request is answered before anything raises
        live = [r for r in refs if r is not None]
        done = dict(zip(live, ray.get(live, timeout=self.timeout_s))) if live else {}
        if error is not None:
            raise error
        return [replies[s] if s in replies else (None if refs[s] is None else done[refs[s]])
                for s in range(self.num_shards)]

    def _collect(self, shards: list[int]) -> tuple[dict[int, Any], BaseException | None]:
        """Channel replies of `shards`, in order; the first failure is returned, not raised,
        so that the other channels' replies are still read (a reply left unread would answer
        that channel's next call)."""
        out, error = {}, None
        for s in shards:
            try:
                res, need = self._channels[s].recv()
            except BaseException as e:  # noqa: BLE001 - re-raised by call_all
                error = error or e
                continue
            out[s] = unpack(res, self._rep[s].buf, copy=False)  # valid until the next call
            self._req[s].peer_mapped()
            self._rep[s].peer_mapped()
            self._rep[s].ensure(need)  # the reply came inline this time; next time it fits
        return out, error

    def shutdown(self, patience_s: float = 5.0) -> None:
        for c in self._channels:
            if c is not None:
                c.close()
        self._channels = [None] * self.num_shards
        for a in self.actors:
            ray.kill(a)
        self.actors = []
        for arena in self._req + self._rep:
            arena.close()
