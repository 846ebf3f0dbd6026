"""Shared-memory payloads of the Ray PS transport: exact round trips, arena lifecycle, and the
same results as Ray's object store."""
from __future__ import annotations

import glob
import os

import numpy as np
import pytest

from psrec.ps.shm import MIN_BYTES, Arena, MapCache, Slot, pack, payload_bytes, shm_available, unpack

pytestmark = pytest.mark.skipif(not shm_available(), reason="needs a writable /dev/shm")


def _payload(rng):
    n = MIN_BYTES // 8 + 3  # just over the threshold for int64 keys
    return ({"a": (rng.integers(-5, 5, n).astype(np.int64), rng.standard_normal((n, 3)).astype(np.float32),
                   np.arange(4, dtype=np.int64))},
            [rng.standard_normal(MIN_BYTES // 4).astype(np.float32).reshape(-1, 2), None, 7, "x"],
            np.float64(2.5))


def _assert_same(a, b):
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _assert_same(a[k], b[k])
    elif isinstance(a, (tuple, list)):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same(x, y)
    else:
        assert a == b


def test_pack_unpack_is_exact_and_only_moves_large_arrays():
    obj = _payload(np.random.default_rng(0))
    arena = Arena("t")
    need = payload_bytes(obj)
    # Two large arrays (keys and 3-wide grads) and one large float32 matrix, each 64-B aligned.
    keys, grads = obj[0]["a"][0], obj[0]["a"][1]
    mat = obj[1][0]
    assert need == sum(-(-x.nbytes // 64) * 64 for x in (keys, grads, mat))
    arena.ensure(need)
    packed = pack(obj, arena.buf)
    assert isinstance(packed[0]["a"][0], Slot) and isinstance(packed[1][0], Slot)
    assert isinstance(packed[0]["a"][2], np.ndarray)  # small: stays inline
    _assert_same(obj, unpack(packed, arena.buf))
    views = unpack(packed, arena.buf, copy=False)
    _assert_same(obj, views)
    assert not views[1][0].flags.writeable
    arena.close()


def test_arena_files_are_unlinked_once_mapped_and_on_close():
    arena = Arena("life")
    arena.ensure(10)
    assert arena.capacity == 1 << 20 and os.path.exists(arena.path)
    cache = MapCache()
    first = arena.name
    cache.get("c/req", first)
    arena.peer_mapped()
    assert not os.path.exists(first[0])  # the peer keeps the memory, the name is gone
    arena.ensure(3 << 20)  # grows into a new file: doubling to 4 MiB
    assert arena.capacity == 4 << 20 and arena.path != first[0]
    buf = cache.get("c/req", arena.name)  # replaces the channel's old mapping
    assert len(cache) == 1 and len(buf) == 4 << 20
    path = arena.path
    arena.close()
    assert not os.path.exists(path)


def test_a_write_through_the_arena_reaches_the_peer_mapping():
    arena = Arena("peer")
    a = np.arange(MIN_BYTES // 4, dtype=np.float32)
    arena.ensure(payload_bytes(a))
    peer = MapCache().get("p", arena.name)
    packed = pack({"x": a}, arena.buf)
    _assert_same({"x": a}, unpack(packed, peer))
    arena.close()


def test_ray_transport_shared_memory_matches_object_store(ray_session):
    from psrec.ev import EVConfig, OptimizerConfig
    from psrec.ps.ray_transport import RayTransport, start_ps_actors

    tables = {"emb": EVConfig(dim=8, optimizer=OptimizerConfig(name="adagrad", lr=0.1))}
    before = set(glob.glob("/dev/shm/psrec-*"))
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
