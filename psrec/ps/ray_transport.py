"""Parameter servers as Ray actors, and the transport that calls them concurrently.

Each PS actor serves its shard three ways: Ray actor calls; a same-node channel
(`psrec.ps.channel`: a Unix socket with the arrays in PS-owned shared memory, no Ray call, no
object-store copy); and gRPC (`psrec.ps.grpc_server`) on the node's own address, for clients
on other nodes. `RayTransport` picks per shard, by `ps.transport`:

    auto   same node: the channel for pulls and pushes (Ray for the rest); other nodes: gRPC
    grpc   gRPC for every call to every shard
    ray    same node: the channel for pulls and pushes; everything else: Ray actor calls

The channel and gRPC both need the job token, which the PS reports (with its addresses)
through Ray: whoever may call the actor through Ray may call it anyway.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ray

from psrec.ps.channel import ChannelClient, ChannelServer, channels_available
from psrec.ps.shard import DenseSpec, PSShard
from psrec.ps.shm import shm_available
from psrec.ps.transport import ShardEndpoint, Transport
from psrec.ps.wire import WireOptions

BULK_METHODS = ("pull", "push")  # the per-step calls whose payloads are MBs
MODES = ("auto", "grpc", "ray")

__all__ = ["PSActor", "RayTransport", "start_ps_actors", "WireOptions"]


@ray.remote(max_restarts=0)
class PSActor:
    """A PSShard in its own process, behind the same `ShardEndpoint` the in-process transport
    uses. A threaded actor (not asyncio): a sync-mode pull blocks its thread on a condition
    until its step is applied while other threads serve the pushes that complete that step.
    Threaded calls cost ~3 ms less per 4 MiB call than asyncio ones (an echo actor on a loaded
    2-core machine); the shard's own lock already serialises table access. The channel server
    (one thread per same-node client) and the gRPC server (a thread pool of one thread per
    worker plus four) follow the same blocking rule."""

    def __init__(self, index: int, tables, num_workers: int, sync: bool, dense: DenseSpec | None,
                 threads: int = 1, wire: WireOptions | None = None, staleness: int = 0) -> None:
        import torch

        torch.set_num_threads(threads)
        wire = wire or WireOptions.new()
        self._token = wire.token
        self.endpoint = ShardEndpoint(PSShard(index, tables, num_workers, sync, dense, staleness), limits=wire.limits)
        self._channel = (ChannelServer(self.endpoint, wire.token, wire.limits, label=f"psrec-ps{index}")
                         if channels_available() and shm_available() else None)
        self._grpc = None
        self._tls_cert: bytes | None = None
        if wire.grpc:
            from psrec.ps.grpc_server import GrpcPSServer

            tls = None
            if wire.tls_cert:
                tls = (Path(wire.tls_cert).read_bytes(), Path(wire.tls_key).read_bytes())
                self._tls_cert = tls[0]
            # The node's own address (what Ray reports for it), never 0.0.0.0; the OS picks the port.
            self._grpc = GrpcPSServer(self.endpoint, wire.token, ray.util.get_node_ip_address(),
                                      threads=num_workers + 4, tls=tls, limits=wire.limits,
                                      export_roots=wire.roots("export"), restore_roots=wire.roots("restore"))

    def locate(self) -> dict:
        """Where and how to reach this PS: its Ray node id, channel address, gRPC address
        ("host:port"), TLS certificate (PEM, the client's root) and the job token."""
        return {"node": ray.get_runtime_context().get_node_id(),
                "channel": None if self._channel is None else self._channel.address,
                "grpc": None if self._grpc is None else self._grpc.address,
                "tls_cert": self._tls_cert, "token": self._token}

    def pull(self, keys, train=True, dense=False, min_step=0, next_step=False):
        return self.endpoint.pull(keys, train, dense, min_step, next_step)

    def push(self, grads, dense_grad, step):
        return self.endpoint.push(grads, dense_grad, step)

    def stats(self, detail=False):
        return self.endpoint.stats(detail)

    def export(self, path, base=None):
        return self.endpoint.export(path, base)

    def restore(self, path):
        return self.endpoint.restore(path)

    def table_values(self, table):
        return self.endpoint.table_values(table)

    def next_step(self):
        return self.endpoint.next_step()

    def ping(self):
        return self.endpoint.ping()


def start_ps_actors(num_ps: int, tables, num_workers: int, sync: bool, dense: Sequence[DenseSpec | None],
                    num_cpus: float = 0.5, health_timeout_s: float = 60.0, wire: WireOptions | None = None,
                    placement: Sequence[dict] | None = None, staleness: int = 0) -> list:
    """Start `num_ps` PS actors and wait until each answers a ping (bounded). `wire`: the job's
    token, gRPC and TLS settings and limits (default: a fresh token, gRPC on); `placement`: each
    actor's scheduling options (`psrec.core.placement.ActorPlacement.options`)."""
    wire = wire or WireOptions.new()
    # One thread per worker (each has at most one call in flight per shard, and a sync pull
    # may block its thread until the step's pushes arrive) plus two for driver calls.
    actors = [PSActor.options(num_cpus=num_cpus, max_concurrency=num_workers + 2, **(placement[i] if placement else {}))
              .remote(i, tables, num_workers, sync, dense[i], wire=wire, staleness=staleness)
              for i in range(num_ps)]
    ray.get([a.ping.remote() for a in actors], timeout=health_timeout_s)
    return actors


class RayTransport(Transport):
    """Calls PS actors over the route `mode` picks per shard (the module docstring): every
    request is sent before any reply is awaited, so the requests to all shards are in flight
    at once.

    Args:
        actors: PS actors, in shard order.
        timeout_s: how long to wait for a call's replies.
        shared_memory: use the same-node channel where possible (None: whenever the OS has
            it; False: never, e.g. to measure Ray's object store). Arrays in pull results over
            the channel or gRPC are read-only views, valid until the next pull or push on this
            transport (`PSClient` copies rows into the batch at once).
        mode: "auto", "grpc" or "ray" (`ps.transport`).
    """

    def __init__(self, actors: Sequence[Any], timeout_s: float = 600.0, shared_memory: bool | None = None,
                 mode: str = "auto") -> None:
        if mode not in MODES:
            raise ValueError(f"RayTransport mode {mode!r}: expected one of {MODES}")
        self.actors = list(actors)
        self.num_shards = len(self.actors)
        self.timeout_s = timeout_s
        self._channels: list[ChannelClient | None] = [None] * self.num_shards
        self._grpc_index: dict[int, int] = {}  # shard -> its index in self._grpc
        self._grpc = None
        if not self.actors:
            return
        here = ray.get_runtime_context().get_node_id()
        infos = ray.get([a.locate.remote() for a in self.actors], timeout=timeout_s)
        use_channel = shared_memory is not False and mode != "grpc" and channels_available() and shm_available()
        remote = []
        for s, info in enumerate(infos):
            if use_channel and info["node"] == here and info["channel"] is not None:
                self._channels[s] = ChannelClient(info["channel"], info["token"], timeout_s)
            elif mode != "ray" and (mode == "grpc" or info["node"] != here):
                if info["grpc"] is None:
                    raise RuntimeError(f"PS {s} has no gRPC server (started with ps.transport=ray?)")
                self._grpc_index[s] = len(remote)
                remote.append(info)
        if remote:
            from psrec.ps.grpc_transport import GrpcTransport

            certs = {i["tls_cert"] for i in remote}
            if len(certs) > 1:
                raise RuntimeError("PS servers present different TLS certificates")
            self._grpc = GrpcTransport([i["grpc"] for i in remote], remote[0]["token"], timeout_s,
                                       tls_cert=certs.pop())

    @property
    def local(self) -> list[bool]:
        """Per shard: whether pulls and pushes go over the same-node channel."""
        return [c is not None for c in self._channels]

    @property
    def routes(self) -> list[str]:
        """Per shard: "channel" (pulls and pushes; Ray for the rest), "grpc" or "ray"."""
        return ["channel" if c is not None else "grpc" if s in self._grpc_index else "ray"
                for s, c in enumerate(self._channels)]

    def call_all(self, method, args):
        if len(self._grpc_index) == self.num_shards > 0:  # every shard over gRPC, in shard order
            return self._grpc.call_all(method, args)
        bulk = method in BULK_METHODS
        refs: list[Any] = [None] * self.num_shards
        handles: dict[int, Any] = {}
        sent = []  # shards whose request went over their channel
        try:
            for s, a in enumerate(args):
                if a is None:
                    continue
                if bulk and self._channels[s] is not None:
                    self._channels[s].send(method, a)
                    sent.append(s)
                elif s in self._grpc_index:
                    handles[s] = self._grpc.start(self._grpc_index[s], method, a)
                else:
                    refs[s] = getattr(self.actors[s], method).remote(*a)
        finally:
            replies, error = self._collect(sent)  # every sent request is answered before anything raises
        for s, h in handles.items():
            try:
                replies[s] = self._grpc.finish(h)
            except Exception as e:  # noqa: BLE001 - re-raised below, after the other replies
                error = error or e
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
                out[s] = self._channels[s].recv()
            except BaseException as e:  # noqa: BLE001 - re-raised by call_all
                error = error or e
        return out, error

    def shutdown(self, patience_s: float = 5.0) -> None:
        for c in self._channels:
            if c is not None:
                c.close()
        self._channels = [None] * self.num_shards
        if self._grpc is not None:
            self._grpc.shutdown()
            self._grpc = None
        self._grpc_index = {}
        for a in self.actors:
            ray.kill(a)
        self.actors = []
