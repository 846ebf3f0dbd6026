"""Shared-memory arenas of the same-node channel (psrec/ps/shm.py): PS-owned sealed memfds,
refused short descriptors, and the same results as Ray's object store."""
from __future__ import annotations

import glob
import os

import numpy as np
import pytest

from psrec.ps.shm import Arena, map_fd, shm_available

pytestmark = pytest.mark.skipif(not shm_available(), reason="needs Linux memfds")


def test_an_arena_is_sealed_against_shrinking_and_grows_into_a_new_memfd():
    arena = Arena("t", max_bytes=8 << 20)
    assert arena.ensure(10) and arena.capacity == 1 << 20
    with pytest.raises(PermissionError):  # no holder of the fd can truncate it under the PS's mapping
        os.ftruncate(arena.fd, 4096)
    old = arena.fd
    assert arena.ensure(3 << 20) and arena.capacity == 4 << 20 and arena.fd != old
    assert not arena.ensure(100)
    with pytest.raises(MemoryError, match="limit"):
        arena.ensure(9 << 20)
    assert arena.capacity == 4 << 20  # a refused growth keeps the arena
    arena.close()


def test_a_write_through_the_arena_reaches_the_peer_mapping_and_a_short_fd_is_refused():
    arena = Arena("peer", max_bytes=1 << 20)
    arena.ensure(1)
    peer = map_fd(os.dup(arena.fd), arena.capacity, writable=False)
    arena.view(64, "<f4", (4, 2))[...] = np.arange(8, dtype=np.float32).reshape(4, 2)
    np.testing.assert_array_equal(np.frombuffer(peer, np.float32, 8, offset=64), np.arange(8))
    with pytest.raises(ValueError, match="announced"):
        map_fd(os.dup(arena.fd), arena.capacity * 2, writable=False)
    peer.close()
    arena.close()


def test_ray_transport_shared_memory_matches_object_store(ray_session):
    from psrec.ev import EVConfig, OptimizerConfig
    from psrec.ps.ray_transport import RayTransport, start_ps_actors

    tables = {"emb": EVConfig(dim=8, optimizer=OptimizerConfig(name="adagrad", lr=0.1))}
    before = set(glob.glob("/dev/shm/psrec-*"))  # memfds have no name: nothing may appear here
    shm = RayTransport(start_ps_actors(1, tables, 1, False, [None], num_cpus=0.1))
    obj = RayTransport(start_ps_actors(1, tables, 1, False, [None], num_cpus=0.1), shared_memory=False)
    assert shm.local == [True] and obj.local == [False]
    rng = np.random.default_rng(1)
    try:
        for step, n in enumerate((100, 20000, 50000, 20000), start=1):  # small, then growing arenas
            keys = rng.integers(1, 1 << 40, n).astype(np.int64)
            keys = np.unique(keys)
            grads = rng.standard_normal((len(keys), 8)).astype(np.float32)
            counts = rng.integers(1, 4, len(keys)).astype(np.int64)
            pulled = [t.call_all("pull", [({"emb": keys}, True, False, 0, False)])[0][0]["emb"] for t in (shm, obj)]
            np.testing.assert_array_equal(pulled[0], pulled[1])
            for t in (shm, obj):
                t.call_all("push", [({"emb": (keys, grads, counts)}, None, step)])
        vals = [t.call(0, "table_values", "emb") for t in (shm, obj)]
        order = [np.argsort(k) for k, _ in vals]
        np.testing.assert_array_equal(vals[0][0][order[0]], vals[1][0][order[1]])
        np.testing.assert_array_equal(vals[0][1][order[0]], vals[1][1][order[1]])
    finally:
        shm.shutdown()
        obj.shutdown()
    assert set(glob.glob("/dev/shm/psrec-*")) <= before  # nothing left behind


def test_a_bad_push_over_the_channel_is_refused_with_its_error_and_the_channel_goes_on(ray_session):
    from psrec.ev import EVConfig
    from psrec.ps.ray_transport import RayTransport, start_ps_actors

    t = RayTransport(start_ps_actors(1, {"emb": EVConfig(dim=4)}, 1, False, [None], num_cpus=0.1))
    assert t.local == [True]
    keys = np.arange(1, 30001, dtype=np.int64)  # large enough that the arrays use the arenas
    try:
        before = t.call_all("pull", [({"emb": keys}, True, False, 0, False)])[0][0]["emb"].copy()
        bad = np.ones((len(keys), 5), np.float32)  # width 5 on a width-4 table
        with pytest.raises(ValueError, match="gradient shape"):
            t.call_all("push", [({"emb": (keys, bad, np.ones(len(keys), np.int64))}, None, 1)])
        after = t.call_all("pull", [({"emb": keys}, True, False, 0, False)])[0][0]["emb"]
        np.testing.assert_array_equal(before, after)  # nothing stored, and the channel still answers
    finally:
        t.shutdown()
