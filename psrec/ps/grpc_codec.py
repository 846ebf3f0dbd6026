"""Endpoint calls <-> the messages of proto/ps.proto (stubs in `psrec.ps._proto`).

Arrays are raw little-endian bytes with a dtype string and a shape. Decoding trusts nothing:
the dtype must be the one the field expects, the shape must have the field's rank and at most
`WireLimits.max_keys` rows, and the byte length must be exactly shape x itemsize, all checked
before the bytes are viewed (`np.frombuffer`: no copy; the arrays are read-only).

Encoding the bulk messages (pull, pull reply, push) writes protobuf's own framing around the
arrays' memory and joins it once: the bytes equal `SerializeToString` of the same message
(tests/test_ps_grpc.py checks), without the four copies of every array that building nested
messages costs (`tobytes`, the Tensor, each enclosing message, the serialization). Parsing
stays with protobuf's parser.
"""
from __future__ import annotations

import numpy as np

from psrec.ps._proto import ps_pb2 as pb
from psrec.ps.config import WireLimits
from psrec.ps.shard import ShardStats
from psrec.ps.wire import BadRequest, TooLarge

__all__ = ["pb", "tensor", "array", "encode_pull", "decode_pull", "encode_pull_reply", "decode_pull_reply",
           "encode_push", "decode_push", "encode_stats", "decode_stats", "KEY", "FLOAT"]

KEY = "<i8"  # keys and counts
FLOAT = "<f4"  # rows, gradients, dense values
_MAX_DIM = 1 << 16  # row width: an embedding of 65536 floats is not a CTR table


def tensor(a: np.ndarray, dtype: str) -> pb.Tensor:
    """`a` as a Tensor of `dtype` (converted here, on the sending side, if it differs)."""
    a = np.ascontiguousarray(a, dtype=dtype)
    return pb.Tensor(dtype=dtype, shape=a.shape, data=a.tobytes())


_LEN = 2  # protobuf's wire type of strings, bytes and messages


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # an int64 field holds a negative as its two's complement, as protobuf writes it
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(number: int, parts: list) -> list:
    """Field `number` holding `parts` (bytes or byte views) as one length-delimited value."""
    return [_varint(number << 3 | _LEN), _varint(sum(len(p) for p in parts)), *parts]


def _tensor(a: np.ndarray, dtype: str) -> list:
    """The parts of `tensor(a, dtype)`'s serialization; the data part is a view of `a`."""
    a = np.ascontiguousarray(a, dtype=dtype)
    parts = [pb.Tensor(dtype=dtype, shape=a.shape).SerializeToString()]
    if a.nbytes:  # proto3 leaves an empty bytes field out
        parts += _field(3, [memoryview(a).cast("B")])  # field 3 (data) is the Tensor's last
    return parts


def _join(parts: list, tail: bytes) -> bytes:
    """One message: repeated field 1 and the other message fields in `parts`, then `tail` (the
    serialized scalars, whose field numbers all come after)."""
    return b"".join(parts + [tail])


def array(t: pb.Tensor, dtype: str, ndim: int, what: str, limits: WireLimits) -> np.ndarray:
    """The checked, read-only array of `t`; BadRequest/TooLarge naming `what` otherwise."""
    if t.dtype != dtype:
        raise BadRequest(f"{what}: dtype {t.dtype!r}, expected {dtype!r}")
    shape = tuple(t.shape)
    if len(shape) != ndim:
        raise BadRequest(f"{what}: shape {shape}, expected {ndim} dimensions")
    if any(d < 0 for d in shape):
        raise BadRequest(f"{what}: negative dimension in shape {shape}")
    if shape and shape[0] > limits.max_keys:
        raise TooLarge(f"{what}: {shape[0]} rows, over the limit of {limits.max_keys}")
    if ndim == 2 and shape[1] > _MAX_DIM:
        raise TooLarge(f"{what}: width {shape[1]}, over the limit of {_MAX_DIM}")
    itemsize = np.dtype(dtype).itemsize
    n = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if len(t.data) != n * itemsize:
        raise BadRequest(f"{what}: {len(t.data)} bytes for shape {shape} of {dtype} ({n * itemsize} expected)")
    return np.frombuffer(t.data, dtype=dtype).reshape(shape)


def _tables(entries, limits: WireLimits, what: str) -> None:
    if len(entries) > limits.max_tables:
        raise TooLarge(f"{what} names {len(entries)} tables, over the limit of {limits.max_tables}")
    names = [e.table for e in entries]
    if len(set(names)) != len(names):
        raise BadRequest(f"{what} names a table twice: {names}")


# ---------------------------------------------------------------------- pull
def encode_pull(keys, train=True, dense=False, min_step=0, next_step=False) -> bytes:
    """A serialized PullRequest."""
    parts = []
    for t, k in keys.items():
        parts += _field(1, [pb.TableKeys(table=t).SerializeToString(), *_field(2, _tensor(k, KEY))])
    return _join(parts, pb.PullRequest(train=bool(train), dense=bool(dense), min_step=int(min_step),
                                       next_step=bool(next_step)).SerializeToString())


def decode_pull(req: pb.PullRequest, limits: WireLimits) -> tuple:
    """The endpoint's pull arguments (keys, train, dense, min_step, next_step)."""
    _tables(req.tables, limits, "pull")
    keys = {e.table: array(e.keys, KEY, 1, f"pull keys of {e.table!r}", limits) for e in req.tables}
    return keys, req.train, req.dense, req.min_step, req.next_step


def encode_pull_reply(result) -> bytes:
    """A serialized PullReply of `ShardEndpoint.pull`'s result."""
    rows, d, waited, step = result
    parts = []
    for t, v in rows.items():
        parts += _field(1, [pb.TableRows(table=t).SerializeToString(), *_field(2, _tensor(v, FLOAT))])
    if d is not None:
        parts += _field(2, _tensor(d, FLOAT))
    return _join(parts, pb.PullReply(waited_s=float(waited), has_step=step is not None,
                                     step=0 if step is None else int(step)).SerializeToString())


def decode_pull_reply(rep: pb.PullReply, limits: WireLimits) -> tuple:
    """(rows, dense slice or None, waited_s, step or None), as `ShardEndpoint.pull` returns."""
    rows = {e.table: array(e.rows, FLOAT, 2, f"pulled rows of {e.table!r}", limits) for e in rep.tables}
    d = array(rep.dense, FLOAT, 1, "pulled dense slice", limits) if rep.HasField("dense") else None
    return rows, d, rep.waited_s, rep.step if rep.has_step else None


# ---------------------------------------------------------------------- push
def encode_push(grads, dense_grad, step) -> bytes:
    """A serialized PushRequest."""
    parts = []
    for t, (k, g, c) in grads.items():
        parts += _field(1, [pb.TableGrads(table=t).SerializeToString(), *_field(2, _tensor(k, KEY)),
                            *_field(3, _tensor(g, FLOAT)), *_field(4, _tensor(c, KEY))])
    if dense_grad is not None:
        parts += _field(2, _tensor(dense_grad, FLOAT))
    return _join(parts, pb.PushRequest(step=int(step)).SerializeToString())


def decode_push(req: pb.PushRequest, limits: WireLimits) -> tuple:
    """The endpoint's push arguments (grads, dense_grad, step)."""
    _tables(req.tables, limits, "push")
    grads = {}
    for e in req.tables:
        grads[e.table] = (array(e.keys, KEY, 1, f"push keys of {e.table!r}", limits),
                          array(e.grads, FLOAT, 2, f"push gradients of {e.table!r}", limits),
                          array(e.counts, KEY, 1, f"push counts of {e.table!r}", limits))
    d = array(req.dense_grad, FLOAT, 1, "push dense gradient", limits) if req.HasField("dense_grad") else None
    return grads, d, req.step


# ---------------------------------------------------------------------- stats
def encode_stats(s: ShardStats) -> pb.StatsReply:
    return pb.StatsReply(shard=s.shard, requests=s.requests, bytes_in=s.bytes_in, bytes_out=s.bytes_out,
                         apply_seconds=s.apply_seconds, pull_seconds=s.pull_seconds, rows=s.rows,
                         waiting_keys=s.waiting_keys, admitted_keys=s.admitted_keys,
                         freq_histogram={k: pb.Counts(values=v) for k, v in s.freq_histogram.items()},
                         global_step=s.global_step)


def decode_stats(r: pb.StatsReply) -> ShardStats:
    return ShardStats(shard=r.shard, requests=r.requests, bytes_in=r.bytes_in, bytes_out=r.bytes_out,
                      apply_seconds=r.apply_seconds, pull_seconds=r.pull_seconds, rows=dict(r.rows),
                      waiting_keys=dict(r.waiting_keys), admitted_keys=dict(r.admitted_keys),
                      freq_histogram={k: list(v.values) for k, v in r.freq_histogram.items()},
                      global_step=r.global_step)
