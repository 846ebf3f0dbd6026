"""The gRPC server of one PS shard: the ParameterServer service of proto/ps.proto over a
`ShardEndpoint`.

Trust nothing received: every call must carry the job token ("x-psrec-token" metadata,
compared in constant time) before its body is even parsed; bodies are parsed here, not by
gRPC, so a truncated or garbled message is INVALID_ARGUMENT (gRPC's own parse failure
would be INTERNAL); a message over `WireLimits.max_message_bytes` is refused by gRPC itself
(RESOURCE_EXHAUSTED) before it is buffered; arrays are checked by `psrec.ps.grpc_codec` and
`psrec.ps.wire`; Export and Restore name directories under the job's run directory only
(`psrec.ps.wire.check_path`: no '..', no symlink out; INVALID_ARGUMENT otherwise). A refused
call stores nothing and the server goes on serving.

The server binds one address (the node's own, from Ray, or loopback), never 0.0.0.0, on a
port the OS picks; `address` is what the PS reports to workers.
"""
from __future__ import annotations

import hmac
from concurrent import futures

import grpc
from google.protobuf.message import DecodeError

from psrec.ps import grpc_codec as codec
from psrec.ps.config import WireLimits
from psrec.ps.heap import keep_freed_heap
from psrec.ps.transport import ShardEndpoint
from psrec.ps.wire import WireError, check_path

__all__ = ["GrpcPSServer", "TOKEN_KEY", "SERVICE"]

TOKEN_KEY = "x-psrec-token"
SERVICE = "psrec.ps.ParameterServer"
pb = codec.pb


def _serialize(reply) -> bytes:
    """A reply message's bytes; the codec's pull replies come framed already."""
    return reply if isinstance(reply, bytes) else reply.SerializeToString()


class _TokenCheck(grpc.ServerInterceptor):
    """Refuses a call without this job's token before its handler (or its parser) runs."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()

        def deny(request, context):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong psrec job token")

        self._deny = grpc.unary_unary_rpc_method_handler(deny)  # no deserializer: the body stays unread bytes

    def intercept_service(self, continuation, details):
        given = next((v for k, v in details.invocation_metadata or () if k == TOKEN_KEY), None)
        if isinstance(given, str) and hmac.compare_digest(given.encode(), self._token):
            return continuation(details)
        return self._deny


class GrpcPSServer:
    """Serves `endpoint` over gRPC until `close`.

    Args:
        endpoint: the shard, behind its checks.
        token: the job's secret (every call must carry it).
        host: the one address to bind (the node's IP, or "127.0.0.1").
        threads: server threads: one per worker (a sync pull holds its thread until its step
            is applied) plus a few for driver calls.
        tls: (cert PEM bytes, key PEM bytes), or None for plaintext.
        limits: what one request may hold.
        export_roots, restore_roots: the directories Export and Restore may name paths under
            (`WireOptions.roots`); none: those calls are refused.
    """

    def __init__(self, endpoint: ShardEndpoint, token: str, host: str = "127.0.0.1", threads: int = 8,
                 tls: tuple[bytes, bytes] | None = None, limits: WireLimits | None = None,
                 export_roots: tuple[str, ...] = (), restore_roots: tuple[str, ...] = ()) -> None:
        if not token:
            raise ValueError("a gRPC PS server needs a job token")
        self.endpoint = endpoint
        self.limits = limits or endpoint.limits
        self.export_roots, self.restore_roots = tuple(export_roots), tuple(restore_roots)
        size = self.limits.max_message_bytes
        keep_freed_heap()
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix=f"ps{endpoint.index}-grpc"),
            interceptors=[_TokenCheck(token)],
            options=[("grpc.max_receive_message_length", size), ("grpc.max_send_message_length", size),
                     ("grpc.so_reuseport", 0)],
            # queued calls beyond this are refused (RESOURCE_EXHAUSTED), not buffered without bound
            maximum_concurrent_rpcs=4 * threads)
        self._server.add_generic_rpc_handlers([self._handlers()])
        bind = f"[{host}]:0" if ":" in host else f"{host}:0"
        creds = None if tls is None else grpc.ssl_server_credentials([(tls[1], tls[0])])
        port = self._server.add_insecure_port(bind) if creds is None else self._server.add_secure_port(bind, creds)
        if port == 0:
            raise OSError(f"gRPC PS server could not bind {bind}")
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.tls = tls is not None
        self._server.start()

    # ------------------------------------------------------------------ handlers
    def _handlers(self) -> grpc.GenericRpcHandler:
        e, lim = self.endpoint, self.limits
        calls = {
            # the bulk calls parse their own bodies (arrays viewed in place); the rest, protobuf
            "Pull": (None, lambda b: codec.encode_pull_reply(e.pull(*codec.decode_pull(b, lim)))),
            "Push": (None, lambda b: (e.push(*codec.decode_push(b, lim)), pb.Empty())[1]),
            "Stats": (pb.StatsRequest, lambda r: codec.encode_stats(e.stats(r.detail))),
            "Export": (pb.PathRequest, self._export),
            "Restore": (pb.PathRequest, self._restore),
            "TableValuesOf": (pb.TableRequest, self._table_values),
            "NextStep": (pb.Empty, lambda r: pb.StepReply(step=e.next_step())),
            "Ping": (pb.Empty, lambda r: pb.PingReply(shard=e.ping())),
        }
        handlers = {name: grpc.unary_unary_rpc_method_handler(self._guarded(name, cls, fn),
                                                              response_serializer=_serialize)
                    for name, (cls, fn) in calls.items()}
        return grpc.method_handlers_generic_handler(SERVICE, handlers)

    def _export(self, r):
        path = check_path(r.path, self.export_roots, "export")
        base = check_path(r.base, self.export_roots, "export base") if r.base else None
        if base is None:
            self.endpoint.export(path)
        else:
            self.endpoint.export(path, base)
        return pb.Empty()

    def _restore(self, r):
        if r.base:
            raise ValueError("restore takes no base")
        self.endpoint.restore(check_path(r.path, self.restore_roots, "restore"))
        return pb.Empty()

    def _table_values(self, r):
        if r.table not in self.endpoint.store.table_names:
            raise KeyError(f"unknown table {r.table!r}")
        keys, values = self.endpoint.table_values(r.table)
        return pb.TableValues(keys=codec.tensor(keys, codec.KEY), values=codec.tensor(values, codec.FLOAT))

    @staticmethod
    def _guarded(name, cls, fn):
        """Parse the raw body (with `cls`, or in `fn` where `cls` is None), run the call, and
        turn every failure into one gRPC status."""

        def handle(body: bytes, context):
            try:
                request = body if cls is None else cls.FromString(body)
            except (DecodeError, RuntimeError, ValueError) as err:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{name}: malformed request: {err}")
            try:
                return fn(request)
            except WireError as err:
                context.abort(grpc.StatusCode[err.code], str(err))
            except (KeyError, ValueError, TypeError) as err:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{name}: {err}")
            except TimeoutError as err:
                context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, str(err))
            except Exception as err:  # noqa: BLE001 - a failed call must not take the server down
                context.abort(grpc.StatusCode.INTERNAL, f"{name}: {type(err).__name__}: {err}")

        return handle

    def close(self, grace_s: float = 1.0) -> None:
        """Stop accepting calls; calls in flight get `grace_s` seconds to finish."""
        self._server.stop(grace_s).wait(grace_s + 5.0)
