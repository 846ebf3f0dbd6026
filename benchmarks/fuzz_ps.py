"""Malformed and unauthenticated requests against a live PS, over gRPC and over the channel.

One PS shard (sync off, two tables, a dense slice) serves both wires in this process, as a PS
actor does. Every request below must be refused; after each batch, the PS must still answer
a good call, and at the end every shard checksum (keys, rows, dense values, applied step) must
be what it was before the first bad request. RSS is read from /proc/self/status before and
after (the PS's process is this one).

Kinds: no token, wrong token; wrong dtype, rank, shape, byte length, table name, step; NaN
and inf gradients; negative counts; truncated and random bodies; lying lengths and offsets;
oversized messages and arena growth; unknown ops and flags; frames without a handshake;
Export/Restore paths outside the run directory ('..', relative, symlinks out), after which
nothing may have been written outside it.
Last line: `malformed=N crashes=0 state_changed=0 rss_growth_mb=N`
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import socket
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import grpc  # noqa: E402
import numpy as np  # noqa: E402

from psrec.ev import EVConfig, OptimizerConfig  # noqa: E402
from psrec.ps import grpc_codec as codec  # noqa: E402
from psrec.ps.channel import DESC, HEAD, MAGIC, VERSION, ChannelClient, ChannelServer, Op, Role  # noqa: E402
from psrec.ps.config import WireLimits  # noqa: E402
from psrec.ps.grpc_server import SERVICE, TOKEN_KEY, GrpcPSServer  # noqa: E402
from psrec.ps.grpc_transport import GrpcTransport  # noqa: E402
from psrec.ps.shard import DenseSpec, PSShard  # noqa: E402
from psrec.ps.transport import ShardEndpoint  # noqa: E402

pb = codec.pb
TOKEN = os.urandom(32).hex()
TABLES = {"a": EVConfig(dim=8, optimizer=OptimizerConfig(name="adagrad", lr=0.1)),
          "b": EVConfig(dim=4, optimizer=OptimizerConfig(name="sgd", lr=0.1))}
LIMITS = WireLimits(max_message_bytes=8 << 20, max_keys=1 << 17, max_tables=8)


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def checksum(ep: ShardEndpoint) -> str:
    h = hashlib.sha256()
    for t in TABLES:
        keys, values = ep.table_values(t)
        order = np.argsort(keys)
        h.update(keys[order].tobytes() + values[order].tobytes())
    h.update(ep.pull({}, False, True, 0, False)[1].tobytes())
    h.update(str(ep.applied_step).encode())
    return h.hexdigest()


def path_cases(run: Path, outside: Path):
    """(method, body bytes, token) of authenticated Export/Restore calls naming paths the PS
    must refuse: `run` is its run directory, `outside` a directory beside it."""
    def req(path, base=""):
        return pb.PathRequest(path=path, base=base).SerializeToString()

    inside = str(run / "checkpoints" / "x")
    return [("Export", req(str(outside / "x")), TOKEN), ("Export", req(f"{run}/../{outside.name}/x"), TOKEN),
            ("Export", req("checkpoints/x"), TOKEN), ("Export", req(str(run / "out" / "x")), TOKEN),
            ("Export", req(inside, base=str(outside)), TOKEN), ("Export", req(inside + "\0"), TOKEN),
            ("Restore", req(str(outside)), TOKEN), ("Restore", req("/"), TOKEN),
            ("Restore", req(str(run / "out")), TOKEN), ("Restore", req(str(run / "trap")), TOKEN),
            ("Restore", req(inside, base=inside), TOKEN),
            ("Export", req(""), TOKEN), ("Restore", req("x" * 5000), TOKEN)]


def grpc_cases(rng, keys):
    """(method, body bytes, token) of malformed or unauthenticated gRPC calls."""
    g8 = rng.standard_normal((len(keys), 8)).astype(np.float32)
    c = np.ones(len(keys), np.int64)
    T = codec.tensor

    def push(table="a", k=None, g=None, cnt=None, step=1, dense=None, n=1):
        req = pb.PushRequest(tables=[pb.TableGrads(table=table, keys=k or T(keys, "<i8"), grads=g or T(g8, "<f4"),
                                                   counts=cnt or T(c, "<i8"))] * n, step=step)
        if dense is not None:
            req.dense_grad.CopyFrom(dense)
        return req.SerializeToString()

    def pull(table="a", k=None, min_step=0, n=1):
        return pb.PullRequest(tables=[pb.TableKeys(table=table, keys=k or T(keys, "<i8"))] * n,
                              min_step=min_step, train=True).SerializeToString()

    nan, inf = g8.copy(), g8.copy()
    nan[0, 0], inf[-1, -1] = np.nan, np.inf
    good_push, good_pull = push(), pull()
    cases = [
        ("Push", good_push, ""), ("Push", good_push, "x" * 64), ("Pull", good_pull, TOKEN[:-2]),
        ("Ping", b"", "not-it"), ("Stats", b"", ""), ("Export", pb.PathRequest(path="/tmp/x").SerializeToString(), "z"),
        ("Restore", pb.PathRequest(path="/tmp/x").SerializeToString(), TOKEN.upper()),
        ("Push", push(g=T(g8.astype(np.float64), "<f8")), TOKEN),
        ("Push", push(k=T(keys.astype(np.int32), "<i4")), TOKEN),
        ("Push", push(g=T(g8[:, :4], "<f4")), TOKEN), ("Push", push(g=T(g8.reshape(-1), "<f4")), TOKEN),
        ("Push", push(table="b"), TOKEN), ("Push", push(table="zz"), TOKEN), ("Push", push(table=""), TOKEN),
        ("Push", push(step=-1), TOKEN), ("Push", push(step=1 << 62), TOKEN), ("Push", push(g=T(nan, "<f4")), TOKEN),
        ("Push", push(g=T(inf, "<f4")), TOKEN), ("Push", push(cnt=T(-c, "<i8")), TOKEN),
        ("Push", push(cnt=T(c[:-1], "<i8")), TOKEN), ("Push", push(n=2), TOKEN), ("Push", push(n=20), TOKEN),
        ("Push", push(dense=T(np.ones(3, np.float32), "<f4")), TOKEN),
        ("Push", push(dense=T(np.full(16, np.nan, np.float32), "<f4")), TOKEN),
        ("Push", push(k=pb.Tensor(dtype="<i8", shape=[len(keys)], data=keys.tobytes()[:-1])), TOKEN),
        ("Push", push(k=pb.Tensor(dtype="<i8", shape=[1 << 50], data=b"")), TOKEN),
        ("Push", push(k=pb.Tensor(dtype="<i8", shape=[-1], data=b"")), TOKEN),
        ("Push", push(g=pb.Tensor(dtype="<f4", shape=[len(keys), 1 << 30], data=b"")), TOKEN),
        ("Pull", pull(table="zz"), TOKEN), ("Pull", pull(k=T(keys.astype(np.float32), "<f4")), TOKEN),
        ("Pull", pull(k=pb.Tensor(dtype="<i8", shape=[2, 2], data=b"\0" * 32)), TOKEN), ("Pull", pull(n=2), TOKEN),
        ("Pull", pull(min_step=-4), TOKEN), ("Pull", pull(k=T(np.zeros(LIMITS.max_keys + 1, np.int64), "<i8")), TOKEN),
        ("Push", os.urandom(int(rng.integers(1, 512))), TOKEN), ("Pull", os.urandom(int(rng.integers(1, 512))), TOKEN),
        ("Push", good_push[: int(rng.integers(1, len(good_push)))], TOKEN),
        ("Pull", good_pull[: int(rng.integers(1, len(good_pull)))], TOKEN),
        ("Push", b"\0" * (LIMITS.max_message_bytes + 16), TOKEN),
        ("TableValuesOf", pb.TableRequest(table="nope").SerializeToString(), TOKEN),
    ]
    return cases


def fuzz_grpc(server, rng, keys, rounds: int, paths: list) -> tuple[int, int]:
    """Returns (requests sent, requests not refused)."""
    sent = accepted = 0
    opts = [("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)]
    with grpc.insecure_channel(server.address, options=opts) as ch:
        for _ in range(rounds):
            for method, body, token in grpc_cases(rng, keys) + paths:
                md = ((TOKEN_KEY, token),) if token else ()
                sent += 1
                try:
                    ch.unary_unary(f"/{SERVICE}/{method}")(body, timeout=30, metadata=md)
                    accepted += 1
                except grpc.RpcError as e:
                    if e.code() not in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED,
                                        grpc.StatusCode.UNAUTHENTICATED):
                        print(f"  unexpected status for {method}: {e.code()} {e.details()[:100]}")
                        accepted += 1
    return sent, accepted


def _desc(name=b"a", role=Role.KEYS, code=1, ndim=1, d0=64, d1=0, offset=0):
    return DESC.pack(name, role, code, ndim, d0, d1, offset)


def channel_frames(rng):
    """(op, scalars, descriptors) of malformed authenticated frames (each must be refused)."""
    k = _desc()
    g = _desc(role=Role.GRADS, code=2, ndim=2, d1=8, offset=512)
    cnt = _desc(role=Role.COUNTS, offset=4096)
    return [
        (Op.PULL, (1, 0, 0, 0), [_desc(name=b"zz")]), (Op.PULL, (1, 0, 0, 0), [_desc(code=2)]),
        (Op.PULL, (1, 0, 0, 0), [_desc(ndim=2, d1=3)]), (Op.PULL, (1, 0, 0, 0), [_desc(d0=1 << 40)]),
        (Op.PULL, (1, 0, 0, 0), [_desc(d0=(1 << 17) + 1)]), (Op.PULL, (1, 0, 0, 0), [_desc(offset=(1 << 63) - 8)]),
        (Op.PULL, (1, 0, 0, 0), [_desc(offset=3)]), (Op.PULL, (0xFF, 0, 0, 0), [k]), (Op.PULL, (1, -1, 0, 0), [k]),
        (Op.PULL, (1, 0, 0, 0), [k, k]), (Op.PULL, (1, 0, 0, 0), [_desc(name=b"\xff")]),
        (Op.PULL, (1, 0, 0, 0), [_desc(role=0)]), (Op.PULL, (1, 0, 0, 0), [g]),
        (Op.PUSH, (1, 0, 0, 0), [k]), (Op.PUSH, (1, 0, 0, 0), [k, g]), (Op.PUSH, (-1, 0, 0, 0), [k, g, cnt]),
        (Op.PUSH, (1 << 62, 0, 0, 0), [k, g, cnt]), (Op.PUSH, (1, 0, 0, 0), [k, _desc(role=Role.GRADS, code=2, ndim=2,
                                                                                      d1=4, offset=512), cnt]),
        (Op.PUSH, (1, 0, 0, 0), [k, g, _desc(role=Role.COUNTS, d0=63, offset=4096)]),
        (Op.PUSH, (1, 0, 0, 0), [k, g, cnt, cnt]), (Op.PUSH, (1, 1, 0, 0), [k, g, cnt]),
        (Op.PUSH, (1, 0, 0, 0), [k, g, cnt, _desc(name=b"", role=Role.DENSE, code=2, d0=3, offset=8192)]),
        (Op.PUSH, (1, 7, 0, 0), []), (Op.GROW, (1 << 40, 0, 0, 0), []), (Op.GROW, (0, 0, 0, 0), []),
        (Op.GROW, (-5, 0, 0, 0), []), (int(rng.integers(8, 256)), (0, 0, 0, 0), []),
    ]


def _fill_bad_values(req, rng):
    """Real-looking arrays where the descriptors point: keys, NaN gradients, negative counts."""
    np.frombuffer(req, np.int64, 64)[:] = np.arange(1, 65)
    g = np.frombuffer(req, np.float32, 64 * 8, offset=512)
    g[:] = rng.standard_normal(64 * 8)
    g[int(rng.integers(0, 64 * 8))] = np.nan
    np.frombuffer(req, np.int64, 64, offset=4096)[:] = -1


def fuzz_channel(server, rng, rounds: int) -> tuple[int, int]:
    sent = accepted = 0
    addr = server.address
    for r in range(rounds):
        # unauthenticated: wrong tokens, no handshake, garbage, lying lengths
        for first in (HEAD.pack(MAGIC, VERSION, Op.HELLO, 0, 32, 0, 0, 0, 0) + os.urandom(32),
                      HEAD.pack(MAGIC, VERSION, Op.HELLO, 0, 0xFFFFFFFF, 0, 0, 0, 0),
                      HEAD.pack(MAGIC, VERSION, Op.PULL, 1, 0, 1, 0, 0, 0) + _desc(),
                      HEAD.pack(b"XXXX", 9, Op.HELLO, 60000, 1 << 31, 0, 0, 0, 0), os.urandom(48),
                      b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + b"x" * 32):
            sent += 1
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(15)
            try:
                s.connect(addr)
                s.sendall(first)
                head = s.recv(HEAD.size)
                if not (len(head) == HEAD.size and HEAD.unpack(head)[2] == Op.ERROR):
                    accepted += 1
            except OSError:
                pass  # dropped: also a refusal
            finally:
                s.close()
        # authenticated, malformed frames on one connection (it must keep serving)
        c = ChannelClient(addr, TOKEN, timeout_s=15)
        try:
            for op, scalars, descs in channel_frames(rng):
                _fill_bad_values(c._req, rng)
                sent += 1
                c._sock.sendall(HEAD.pack(MAGIC, VERSION, op, len(descs), 0, *scalars) + b"".join(descs))
                fop, fsc, _, _, fds = c._read()
                for fd in fds:
                    os.close(fd)
                if fop != Op.ERROR or fsc[0] not in (3, 8):
                    print(f"  channel frame not refused: op {op} scalars {scalars}: reply {fop} {fsc[0]}")
                    accepted += 1
            # framing errors: the connection is dropped
            sent += 1
            c._sock.sendall(HEAD.pack(b"PSRX", VERSION, Op.PULL, 0, 0, 0, 0, 0, 0))
            fop, *_ = c._read()
            accepted += fop != Op.ERROR
        finally:
            c.close()
        if r % 10 == 0:
            sent += 1  # an oversized request through the client: refused before any row is made
            c = ChannelClient(addr, TOKEN, timeout_s=15)
            try:
                c.call("pull", ({"a": np.arange(LIMITS.max_keys + 1, dtype=np.int64)}, True, False, 0, False))
                accepted += 1
            except Exception:  # noqa: BLE001 - any refusal counts
                pass
            finally:
                c.close()
    return sent, accepted


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20, help="passes over every kind of bad request")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    ep = ShardEndpoint(PSShard(0, TABLES, 1, False, DenseSpec(np.zeros(16, np.float32), "sgd", 0.1)),
                       timeout_s=10, limits=LIMITS)
    tmp = Path(tempfile.mkdtemp(prefix="psrec-fuzz-"))
    run, outside = tmp / "run", tmp / "outside"
    (run / "checkpoints").mkdir(parents=True)
    outside.mkdir()
    (run / "out").symlink_to(outside, target_is_directory=True)
    (run / "trap").mkdir()
    (run / "trap" / "steps.json").symlink_to(outside / "steps.json")  # a link out, inside a restorable path
    paths = path_cases(run, outside)
    grpc_server = GrpcPSServer(ep, TOKEN, "127.0.0.1", threads=6, limits=LIMITS, export_roots=(str(run),),
                               restore_roots=(str(run),))
    chan = ChannelServer(ep, TOKEN, LIMITS, label="psrec-fuzz")
    good = GrpcTransport([grpc_server.address], TOKEN, timeout_s=30, limits=LIMITS)
    keys = np.arange(1, 65, dtype=np.int64)
    good.call(0, "pull", {"a": keys, "b": keys}, True, False, 0, False)  # rows to protect
    good.call(0, "push", {"a": (keys, np.ones((64, 8), np.float32), np.ones(64, np.int64))}, np.ones(16, np.float32), 1)
    before = checksum(ep)
    # one pass of each first, so that lazily made threads and buffers count as the baseline
    fuzz_grpc(grpc_server, rng, keys, 1, paths)
    fuzz_channel(chan, rng, 1)
    rss0 = rss_mb()
    crashes = state_changed = total = accepted = 0
    for r in range(args.rounds):
        for fuzz in (lambda: fuzz_grpc(grpc_server, rng, keys, 1, paths), lambda: fuzz_channel(chan, rng, 1)):
            try:
                n, ok = fuzz()
            except Exception as e:  # noqa: BLE001 - a fuzz pass that blew up is a crash
                print(f"  round {r}: {type(e).__name__}: {e}")
                crashes += 1
                continue
            total += n
            accepted += ok
        try:  # still serving over both wires
            good.call(0, "ping")
            c = ChannelClient(chan.address, TOKEN, timeout_s=15)
            c.call("pull", ({"a": keys}, False, False, 0, False))
            c.close()
        except Exception as e:  # noqa: BLE001
            print(f"  round {r}: the PS stopped serving: {e}")
            crashes += 1
        state_changed += checksum(ep) != before
        written = [str(p) for p in outside.rglob("*")] + [str(p) for p in (run / "checkpoints").rglob("*")]
        if written:
            print(f"  round {r}: refused exports wrote {written[:3]}")
            state_changed += 1
    growth = rss_mb() - rss0
    print(f"  {total} malformed or unauthenticated requests, {accepted} not refused; "
          f"grpc at {grpc_server.address}, channel {chan.address[1:]!r}")
    good.shutdown()
    grpc_server.close()
    chan.close()
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"malformed={total} crashes={crashes + accepted} state_changed={state_changed} rss_growth_mb={growth:.1f}")


if __name__ == "__main__":
    main()
