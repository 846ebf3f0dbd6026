"""The gRPC transport: endpoint calls to PS shards' gRPC servers (`psrec.ps.grpc_server`).

Every call carries the job token and a deadline; all shards' requests are in flight before
any reply is awaited. A refusal comes back as the `psrec.ps.wire` error of its status code
(BadRequest, TooLarge, Unauthenticated), so callers see the same errors as in process.
Arrays in pull results are read-only views of the reply's bytes.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from psrec.ps import grpc_codec as codec
from psrec.ps._proto import ps_pb2_grpc
from psrec.ps.config import WireLimits
from psrec.ps.grpc_server import TOKEN_KEY
from psrec.ps.transport import Transport
from psrec.ps.wire import error_for_code

__all__ = ["GrpcTransport"]

pb = codec.pb
_FRAMING = 1 << 20  # bytes of protobuf framing allowed on top of the array limit


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
        self._channels = [grpc.insecure_channel(a, options=options) if creds is None
                          else grpc.secure_channel(a, creds, options=options) for a in self.addresses]
        self._stubs = [ps_pb2_grpc.ParameterServerStub(c) for c in self._channels]

    # ------------------------------------------------------------------ one method
    def _request(self, method: str, args: tuple):
        if method == "pull":
            return "Pull", codec.encode_pull(*args)
        if method == "push":
            return "Push", codec.encode_push(*args)
        if method == "stats":
            return "Stats", pb.StatsRequest(detail=bool(args[0]) if args else False)
        if method in ("export", "restore"):
            return method.capitalize(), pb.PathRequest(path=str(args[0]))
        if method == "table_values":
            return "TableValuesOf", pb.TableRequest(table=args[0])
        if method in ("next_step", "ping"):
            return {"next_step": "NextStep", "ping": "Ping"}[method], pb.Empty()
        raise ValueError(f"gRPC transport: no method {method!r}")

    def _result(self, method: str, reply):
        if method == "pull":
            return codec.decode_pull_reply(reply, self.limits)
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
        """Send one call; returns a handle for `finish`."""
        rpc, request = self._request(method, args)
        return method, getattr(self._stubs[shard], rpc).future(request, timeout=self.timeout_s,
                                                               metadata=self._metadata)

    def finish(self, handle) -> Any:
        """The result of a started call; raises the PS's refusal as its `psrec.ps.wire` error."""
        method, fut = handle
        try:
            reply = fut.result()
        except grpc.RpcError as err:
            code = err.code()
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise TimeoutError(f"gRPC {method}: no reply within {self.timeout_s} s") from None
            raise error_for_code(code.name, f"gRPC {method} refused ({code.name}): {err.details()}") from None
        return self._result(method, reply)

    def call_all(self, method, args):
        handles = [None if a is None else self.start(s, method, a) for s, a in enumerate(args)]
        out, error = [], None
        for h in handles:  # every reply is awaited before anything raises
            try:
                out.append(None if h is None else self.finish(h))
            except Exception as e:  # noqa: BLE001 - re-raised below
                error = error or e
                out.append(None)
        if error is not None:
            raise error
        return out

    def shutdown(self) -> None:
        """Close the channels (the servers belong to the PS processes)."""
        for c in self._channels:
            c.close()
        self._channels, self._stubs = [], []
