"""Rank 0's rendezvous (`psrec.comm.collectives.open_rendezvous`): no port race."""
import pytest


def test_rendezvous_port_is_held_from_the_moment_it_is_chosen():
    """Rank 0's store binds port 0 itself: the port it reports is already taken (nothing can
    race for it, as for a port probed free and bound later), and a client reaches it."""
    import errno
    import socket
    from datetime import timedelta

    import torch.distributed as dist

    from psrec.comm.collectives import open_rendezvous

    store, port = open_rendezvous("127.0.0.1", 2, timeout_s=10)
    assert port > 0
    with socket.socket() as s, pytest.raises(OSError) as e:
        s.bind(("127.0.0.1", port))
    assert e.value.errno == errno.EADDRINUSE
    client = dist.TCPStore("127.0.0.1", port, 2, is_master=False, timeout=timedelta(seconds=10))
    client.set("k", "v")
    assert store.get("k") == b"v"
