"""The same-node PS channel (psrec/ps/channel.py): binary frames, the token on connect, every
length checked before use, refusals that store nothing, a dead peer, timeouts."""
import os
import resource
import socket
import struct
import threading
from pathlib import Path

import numpy as np
import pytest

from psrec.ev import EVConfig, OptimizerConfig
from psrec.ps.channel import (
    DESC,
    HEAD,
    MAGIC,
    VERSION,
    ChannelClient,
    ChannelClosed,
    ChannelServer,
    Op,
    Role,
    channels_available,
)
from psrec.ps.config import WireLimits
from psrec.ps.shard import PSShard
from psrec.ps.shm import shm_available
from psrec.ps.transport import ShardEndpoint
from psrec.ps.wire import BadRequest, TooLarge, Unauthenticated

pytestmark = pytest.mark.skipif(not (channels_available() and shm_available()), reason="Linux-only")

TOKEN = "fedcba9876543210" * 4
TABLES = {"emb": EVConfig(dim=4, optimizer=OptimizerConfig(name="sgd", lr=0.1))}


def _server(sync=False, workers=1, limits=None):
    ep = ShardEndpoint(PSShard(0, TABLES, workers, sync), timeout_s=5.0, limits=limits)
    return ep, ChannelServer(ep, TOKEN, limits)


def _checksum(ep):
    keys, values = ep.table_values("emb")
    order = np.argsort(keys)
    return keys[order].tobytes(), values[order].tobytes()


def test_the_channel_carries_no_pickle():
    src = (Path(__file__).resolve().parents[1] / "psrec/ps/channel.py").read_text()
    assert "import pickle" not in src and "pickle." not in src


def test_pull_and_push_over_the_channel_equal_in_process_calls_and_arenas_grow():
    ep, server = _server()
    local = ShardEndpoint(PSShard(0, TABLES))
    c = ChannelClient(server.address, TOKEN, timeout_s=30)
    rng = np.random.default_rng(0)
    try:
        for step, n in enumerate((10, 70000, 300000, 50), start=1):  # small, then past the 1 MiB arenas
            keys = rng.integers(-(1 << 40), 1 << 40, n).astype(np.int64)
            got = c.call("pull", ({"emb": keys}, True, False, 0, step == 1))
            want = local.pull({"emb": keys}, True, False, 0, step == 1)
            np.testing.assert_array_equal(got[0]["emb"], want[0]["emb"])
            assert not got[0]["emb"].flags.writeable and got[3] == want[3]
            grads = rng.standard_normal((n, 4)).astype(np.float32)
            args = ({"emb": (keys, grads, np.ones(n, np.int64))}, None, step)
            assert c.call("push", args) is None
            local.push(*args)
        assert _checksum(ep) == _checksum(local)
    finally:
        c.close(), server.close()


def test_a_client_without_the_token_is_refused_on_connect():
    ep, server = _server()
    try:
        for token in ("wrong" * 8, TOKEN[:-1] + "x", "x"):
            with pytest.raises(Unauthenticated, match="token"):
                ChannelClient(server.address, token, timeout_s=10)
        # a raw peer that skips the handshake and sends a pull at once is refused, not served
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(server.address)
        s.sendall(HEAD.pack(MAGIC, VERSION, Op.PULL, 0, 0, 1, 0, 0, 0))
        reply = s.recv(HEAD.size)
        assert HEAD.unpack(reply)[2] == Op.ERROR and HEAD.unpack(reply)[5] == 16
        rest = b""
        while chunk := s.recv(4096):  # the error's text, then end of stream: dropped
            rest += chunk
        assert b"token" in rest and len(rest) == HEAD.unpack(reply)[4]
        s.close()
        assert ep.stats().requests == 0
    finally:
        server.close()


class _Raw:
    """An authenticated peer that writes frames by hand (into the arenas the PS handed it)."""

    def __init__(self, address):
        self.client = ChannelClient(address, TOKEN, timeout_s=10)
        self.sock = self.client._sock

    def send(self, op, scalars=(0, 0, 0, 0), descs=(), body=b"", n=None):
        self.sock.sendall(HEAD.pack(MAGIC, VERSION, op, len(descs) if n is None else n, len(body), *scalars)
                          + b"".join(descs) + body)

    def reply(self):
        op, scalars, _, body, fds = self.client._read()
        for fd in fds:
            os.close(fd)
        return op, scalars[0], body.decode()


def _keys_desc(name=b"emb", role=Role.KEYS, code=1, ndim=1, d0=8, d1=0, offset=0):
    return DESC.pack(name, role, code, ndim, d0, d1, offset)


BAD_FRAMES = {
    "unknown table": (Op.PULL, (1, 0, 0, 0), [_keys_desc(name=b"nope")], 3),
    "keys as floats": (Op.PULL, (1, 0, 0, 0), [_keys_desc(code=2)], 3),
    "keys of rank 2": (Op.PULL, (1, 0, 0, 0), [_keys_desc(ndim=2, d1=4)], 3),
    "past the arena": (Op.PULL, (1, 0, 0, 0), [_keys_desc(d0=1 << 20)], 3),
    "offset past the arena": (Op.PULL, (1, 0, 0, 0), [_keys_desc(offset=1 << 40)], 3),
    "over max_keys": (Op.PULL, (1, 0, 0, 0), [_keys_desc(d0=1 << 30)], 8),
    "unknown flags": (Op.PULL, (0xF0, 0, 0, 0), [_keys_desc()], 3),
    "pull negative step": (Op.PULL, (1, -3, 0, 0), [_keys_desc()], 3),
    "table twice": (Op.PULL, (1, 0, 0, 0), [_keys_desc(), _keys_desc()], 3),
    "name not utf-8": (Op.PULL, (1, 0, 0, 0), [_keys_desc(name=b"\xff\xfe")], 3),
    "unknown role": (Op.PULL, (1, 0, 0, 0), [_keys_desc(role=9)], 3),
    "push without grads": (Op.PUSH, (1, 0, 0, 0), [_keys_desc()], 3),
    "push negative step": (Op.PUSH, (-5, 0, 0, 0), [_keys_desc(), _keys_desc(role=Role.GRADS, code=2, ndim=2, d1=4,
                                                                          offset=64),
                                                    _keys_desc(role=Role.COUNTS, offset=192)], 3),
    "push wrong width": (Op.PUSH, (1, 0, 0, 0), [_keys_desc(), _keys_desc(role=Role.GRADS, code=2, ndim=2, d1=5,
                                                                        offset=64),
                                                 _keys_desc(role=Role.COUNTS, offset=256)], 3),
    "push dense flag alone": (Op.PUSH, (1, 1, 0, 0), [], 3),
    "grow too large": (Op.GROW, (1 << 40, 0, 0, 0), [], 8),
    "grow negative": (Op.GROW, (-1, 0, 0, 0), [], 8),
    "unknown op": (99, (0, 0, 0, 0), [], 3),
}


@pytest.mark.parametrize("case", sorted(BAD_FRAMES))
def test_a_bad_frame_is_refused_with_its_code_stores_nothing_and_the_channel_goes_on(case):
    op, scalars, descs, code = BAD_FRAMES[case]
    ep, server = _server()
    raw = _Raw(server.address)
    good = ChannelClient(server.address, TOKEN, timeout_s=10)
    keys = np.arange(1, 9, dtype=np.int64)
    try:
        good.call("pull", ({"emb": keys}, True, False, 0, False))
        np.frombuffer(raw.client._req, np.int64, 8)[:] = keys  # real keys where the descriptors point
        before = _checksum(ep)
        raw.send(op, scalars, descs)
        got_op, got_code, text = raw.reply()
        assert (got_op, got_code) == (Op.ERROR, code), text
        assert _checksum(ep) == before
        # the same connection still serves a good call
        assert raw.client.call("pull", ({"emb": keys}, True, False, 0, False))[0]["emb"].shape == (8, 4)
        good.call("push", ({"emb": (keys, np.ones((8, 4), np.float32), np.ones(8, np.int64))}, None, 1))
        assert _checksum(ep) != before
    finally:
        raw.client.close(), good.close(), server.close()


def test_nan_and_bad_shapes_through_the_client_raise_the_wire_errors():
    ep, server = _server(limits=WireLimits(max_message_bytes=1 << 20, max_keys=1 << 16))
    c = ChannelClient(server.address, TOKEN, timeout_s=10)
    keys = np.arange(1, 9, dtype=np.int64)
    try:
        c.call("pull", ({"emb": keys}, True, False, 0, False))
        before = _checksum(ep)
        nan = np.ones((8, 4), np.float32)
        nan[2, 1] = np.nan
        with pytest.raises(BadRequest, match="non-finite"):
            c.call("push", ({"emb": (keys, nan, np.ones(8, np.int64))}, None, 1))
        with pytest.raises(BadRequest, match="8 keys"):
            c.call("push", ({"emb": (keys, np.ones((8, 4), np.float32), np.ones(7, np.int64))}, None, 1))
        with pytest.raises(TooLarge, match="RESOURCE|limit"):  # 2 MiB of keys: over a 1 MiB request limit
            c.call("pull", ({"emb": np.arange(1 << 18, dtype=np.int64)}, True, False, 0, False))
        assert _checksum(ep) == before
    finally:
        c.close(), server.close()


def test_framing_errors_drop_the_connection_and_announced_lengths_allocate_nothing():
    ep, server = _server()
    try:
        raw = _Raw(server.address)
        raw.send(Op.PULL, n=60000)  # 60000 descriptors announced, none sent: over the limit
        assert raw.reply()[:2] == (Op.ERROR, 8)
        with pytest.raises((ChannelClosed, OSError)):
            raw.reply()
        raw.client.close()
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for _ in range(50):  # headers claiming huge bodies; each is refused before any allocation
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(10)
            s.connect(server.address)
            s.sendall(HEAD.pack(MAGIC, VERSION, Op.HELLO, 0, 0xFFFFFFFF, 0, 0, 0, 0))
            assert HEAD.unpack(s.recv(HEAD.size))[5] == 16
            s.close()
            bad = _Raw(server.address)
            bad.sock.sendall(b"GET / HTTP/1.1\r\n" + b"x" * 32)
            assert bad.reply()[0] == Op.ERROR
            bad.client.close()
        assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0 < 50 << 10  # KiB: < 50 MB
        c = ChannelClient(server.address, TOKEN, timeout_s=10)
        assert c.call("pull", ({"emb": np.arange(3, dtype=np.int64)}, True, False, 0, False))[0]["emb"].shape == (3, 4)
        c.close()
    finally:
        server.close()


def test_a_peer_that_goes_away_is_reported_not_waited_for():
    # A bare socket that answers the handshake with nothing and closes, as a PS that dies.
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    address = f"\0psrec-test-{os.getpid()}-dies"
    listener.bind(address)
    listener.listen(1)

    def die():
        conn, _ = listener.accept()
        conn.recv(1 << 16)
        conn.close()

    t = threading.Thread(target=die)
    t.start()
    try:
        with pytest.raises(ChannelClosed, match="closed"):
            ChannelClient(address, TOKEN, timeout_s=10)
    finally:
        t.join()
        listener.close()


def test_a_reply_later_than_the_timeout_raises_and_closes_the_channel():
    ep, server = _server(sync=True, workers=2)
    c = ChannelClient(server.address, TOKEN, timeout_s=0.5)
    keys = np.arange(4, dtype=np.int64)
    try:
        c.call("push", ({"emb": (keys, np.ones((4, 4), np.float32), np.ones(4, np.int64))}, None, 1))
        with pytest.raises(TimeoutError, match="no reply"):  # step 1 waits for the second worker
            c.call("pull", ({"emb": keys}, True, False, 1, False))
        with pytest.raises(OSError):  # closed: a late reply cannot answer the next call
            c.call("pull", ({"emb": keys}, True, False, 0, False))
    finally:
        server.close()


def test_connecting_to_a_closed_server_fails_at_once():
    _, server = _server()
    address = server.address
    server.close()
    with pytest.raises(OSError):
        ChannelClient(address, TOKEN)


def test_struct_layouts_are_fixed():
    assert HEAD.size == 48 and DESC.size == 160 and struct.calcsize("<q") == 8
