"""The gRPC transport: endpoint calls to PS shards' gRPC servers (`psrec.ps.grpc_server`).

Every call carries the job token and a deadline; all shards' requests are in flight before
any reply is awaited. A refusal comes back as the `psrec.ps.wire` error of its status code
(BadRequest, TooLarge, Unauthenticated), so callers see the same errors as in process.
Arrays in pull results are read-only views of the reply's bytes.

Calls are blocking gRPC calls on a thread pool kept for the transport's life (`call_all` runs
its last call on the caller's thread): a `future()` call would start a new channel-polling
thread whenever no other call is in flight, i.e. twice per pull+push (~3 ms each, measured on
a loaded 2-core machine). Bodies go both ways as bytes (`psrec.ps.grpc_codec` frames and
parses them) on the method paths of the service in proto/ps.proto.
"""
from __future__ import annotations

import concurrent.futures
import os
from collections.abc import Sequence
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from psrec.ps import grpc_codec as codec
from psrec.ps.config import WireLimits
from psrec.ps.grpc_server import SERVICE, TOKEN_KEY
from psrec.ps.heap import keep_freed_heap
from psrec.ps.transport import Transport
from psrec.ps.wire import BadRequest, error_for_code

__all__ = ["GrpcTransport"]

pb = codec.pb
_FRAMING = 1 << 20  # bytes of protobuf framing allowed on top of the array limit
_RPCS = {m.name: getattr(pb, m.output_type.name)  # method -> its reply class, as proto/ps.proto declares
         for m in pb.DESCRIPTOR.services_by_name["ParameterServer"].methods}
_MARGIN_S = 5.0  # a reply is awaited this long past the call's own deadline (gRPC ends the call at that)


class GrpcTransport(Transport):
    """Calls PS shards over gRPC.

    Args:
        addresses: "host:port" of each shard's server, in shard order.
        token: the job token.
        timeout_s: deadline of each call (a sync pull may wait this long for its step).
        tls_cert: PEM bytes of the servers' certificate (trusted as the root), or None.
        limits: the largest reply accepted (as the servers' requests).

    Example:
        >>> # t = GrpcTransport(["10.0.0.5:40123"], token); t.call(0, "ping")
    """

    def __init__(self, addresses: Sequence[str], token: str, timeout_s: float = 600.0,
                 tls_cert: bytes | None = None, limits: WireLimits | None = None) -> None:
        self.addresses = list(addresses)
        self.num_shards = len(self.addresses)
        self.timeout_s = timeout_s
        self.limits = limits or WireLimits()
        self._metadata = ((TOKEN_KEY, token),)
        size = self.limits.max_message_bytes + _FRAMING
        options = [("grpc.max_receive_message_length", size), ("grpc.max_send_message_length", size)]
        creds = None if tls_cert is None else grpc.ssl_channel_credentials(root_certificates=tls_cert)
        keep_freed_heap()
        self._channels = [grpc.insecure_channel(a, options=options) if creds is None
                          else grpc.secure_channel(a, creds, options=options) for a in self.addresses]
        # bytes in, bytes out: requests are framed by the codec, replies parsed (and checked) in _result
        self._calls = [{rpc: c.unary_unary(f"/{SERVICE}/{rpc}") for rpc in _RPCS} for c in self._channels]
        # threads start when needed: one per shard in flight, times a few callers sharing the transport
        self._pool = concurrent.futures.ThreadPoolExecutor(4 * max(1, self.num_shards), thread_name_prefix="psrec-grpc")

    # ------------------------------------------------------------------ one method
    def _request(self, method: str, args: tuple):
        if method == "pull":
            return "Pull", codec.encode_pull(*args)
        if method == "push":
            return "Push", codec.encode_push(*args)
        if method == "stats":
            return "Stats", pb.StatsRequest(detail=bool(args[0]) if args else False).SerializeToString()
        if method in ("export", "restore"):  # absolute: the PS resolves nothing against its own cwd
            base = os.path.abspath(args[1]) if len(args) > 1 and args[1] else ""
            return method.capitalize(), pb.PathRequest(path=os.path.abspath(args[0]), base=base).SerializeToString()
        if method == "table_values":
            return "TableValuesOf", pb.TableRequest(table=args[0]).SerializeToString()
        if method in ("next_step", "ping"):
            return {"next_step": "NextStep", "ping": "Ping"}[method], b""
        raise ValueError(f"gRPC transport: no method {method!r}")

    def _result(self, method: str, rpc: str, body: bytes):
        if method == "pull":  # the bulk reply: parsed by the codec, rows viewed in place
            return codec.decode_pull_reply(body, self.limits)
        try:
            reply = _RPCS[rpc].FromString(body)
        except (DecodeError, RuntimeError, ValueError) as err:
            raise BadRequest(f"gRPC {method}: malformed reply: {err}") from None
        if method == "stats":
            return codec.decode_stats(reply)
        if method == "table_values":
            return (codec.array(reply.keys, codec.KEY, 1, "table keys", self.limits),
                    codec.array(reply.values, codec.FLOAT, 2, "table values", self.limits))
        if method == "next_step":
            return reply.step
        if method == "ping":
            return reply.shard
        return None

    def start(self, shard: int, method: str, args: tuple):
        """Send one call (on the pool); returns a handle for `finish`."""
        rpc, body = self._request(method, args)
        call = self._calls[shard][rpc]
        return method, rpc, self._pool.submit(call, body, timeout=self.timeout_s, metadata=self._metadata)

    def finish(self, handle) -> Any:
        """The result of a started call; raises the PS's refusal as its `psrec.ps.wire` error."""
        method, rpc, fut = handle
        try:
            body = fut.result(timeout=self.timeout_s + _MARGIN_S)
        except concurrent.futures.TimeoutError:
            raise TimeoutError(f"gRPC {method}: no reply within {self.timeout_s} s") from None
        except grpc.RpcError as err:
            raise self._refusal(method, err) from None
        return self._result(method, rpc, body)

    def _call_here(self, shard: int, method: str, args: tuple) -> Any:
        """One call on this thread: `finish(start(...))` without the hand-off to the pool."""
        rpc, body = self._request(method, args)
        try:
            body = self._calls[shard][rpc](body, timeout=self.timeout_s, metadata=self._metadata)
        except grpc.RpcError as err:
            raise self._refusal(method, err) from None
        return self._result(method, rpc, body)

    def _refusal(self, method: str, err: grpc.RpcError) -> Exception:
        code = err.code()
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return TimeoutError(f"gRPC {method}: no reply within {self.timeout_s} s")
        return error_for_code(code.name, f"gRPC {method} refused ({code.name}): {err.details()}")

    def call_all(self, method, args):
        live = [s for s, a in enumerate(args) if a is not None]
        handles = {s: self.start(s, method, args[s]) for s in live[:-1]}  # sent before the last one runs
        out, error = [None] * len(args), None
        if live:
            try:
                out[live[-1]] = self._call_here(live[-1], method, args[live[-1]])
            except Exception as e:  # noqa: BLE001 - re-raised below, after the other replies
                error = e
        for s, h in handles.items():  # every reply is awaited before anything raises
            try:
                out[s] = self.finish(h)
            except Exception as e:  # noqa: BLE001 - re-raised below
                error = error or e
        if error is not None:
            raise error
        return out

    def shutdown(self) -> None:
        """Close the channels (the servers belong to the PS processes)."""
        for c in self._channels:
            c.close()
        self._channels, self._calls = [], []
        self._pool.shutdown(wait=False, cancel_futures=True)
