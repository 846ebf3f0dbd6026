"""The same-node PS channel (psrec/ps/channel.py): framing, errors, a dead peer, timeouts."""
import os
import socket
import threading

import numpy as np
import pytest

from psrec.ps.channel import ChannelClient, ChannelClosed, ChannelServer, channels_available

pytestmark = pytest.mark.skipif(not channels_available(), reason="abstract Unix sockets are Linux-only")


def _echo(state, message):
    state["calls"] = state.get("calls", 0) + 1
    if message == "fail":
        raise ValueError("bad gradient shape (3, 4)")
    if message == "unpicklable":
        return threading.Lock()
    return message, state["calls"]


def test_round_trip_small_and_large_messages_with_per_connection_state():
    server = ChannelServer(_echo)
    a, b = ChannelClient(server.address), ChannelClient(server.address)
    try:
        big = np.arange(1 << 17, dtype=np.float32)  # 512 KiB: the two-write path
        got, calls = a.call(("x", big))
        assert got[0] == "x" and np.array_equal(got[1], big) and calls == 1
        assert a.call("y") == ("y", 2)
        assert b.call("z") == ("z", 1)  # its own connection, its own state
    finally:
        a.close(), b.close(), server.close()


def test_server_exception_is_raised_at_the_caller_with_its_type_and_the_channel_stays_usable():
    server = ChannelServer(_echo)
    c = ChannelClient(server.address)
    try:
        with pytest.raises(ValueError, match=r"bad gradient shape \(3, 4\)") as info:
            c.call("fail")
        assert any("raised in the PS process" in n for n in info.value.__notes__)
        with pytest.raises(RuntimeError, match="could not be pickled"):
            c.call("unpicklable")
        assert c.call("ok") == ("ok", 3)
    finally:
        c.close(), server.close()


def test_a_peer_that_goes_away_is_reported_not_waited_for():
    # A bare socket that reads the request and closes, as a PS process that dies mid-call.
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
    c = ChannelClient(address, timeout_s=10)
    try:
        with pytest.raises(ChannelClosed, match="closed"):
            c.call("anything")
    finally:
        t.join()
        c.close(), listener.close()


def test_a_reply_later_than_the_timeout_raises_and_closes_the_channel():
    release = threading.Event()
    server = ChannelServer(lambda state, m: release.wait(5))
    c = ChannelClient(server.address, timeout_s=0.2)
    try:
        with pytest.raises(TimeoutError, match="no reply"):
            c.call("slow")
        with pytest.raises(OSError):  # closed: a late reply cannot answer the next call
            c.call("next")
    finally:
        release.set()
        server.close()


def test_connecting_to_a_closed_server_fails_at_once():
    server = ChannelServer(_echo)
    address = server.address
    server.close()
    with pytest.raises(OSError):
        ChannelClient(address)
