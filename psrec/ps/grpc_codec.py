"""Endpoint calls <-> the messages of proto/ps.proto (stubs in `psrec.ps._proto`).

Arrays are raw little-endian bytes with a dtype string and a shape. Decoding trusts nothing:
the dtype must be the one the field expects, the shape must have the field's rank and at most
`WireLimits.max_keys` rows, and the byte length must be exactly shape x itemsize, all checked
before the bytes are viewed (`np.frombuffer`: no copy; the arrays are read-only).

The bulk messages (pull, pull reply, push) are framed and parsed here, around the arrays'
memory. Writing: each message field's length is a 5-byte varint (an overlong one, which
protobuf reads as the same number), so every offset is known as the message is written and
each array's bytes are placed 8-byte aligned (the Tensor's `align` field takes up the
difference); the parts are joined once, with none of the four copies of every array that
building nested messages costs. Reading (`psrec.ps.pbread`): each array is a view of the
received bytes, where protobuf's parser would copy it twice. tests/test_ps_grpc_codec.py checks
that protobuf reads these bytes as the same messages and that both readers agree.
"""
from __future__ import annotations

import numpy as np

from psrec.ps import pbread
from psrec.ps._proto import ps_pb2 as pb
from psrec.ps.config import WireLimits
from psrec.ps.shard import ShardStats
from psrec.ps.wire import BadRequest, TooLarge

__all__ = ["pb", "tensor", "array", "view", "encode_pull", "decode_pull", "encode_pull_reply", "decode_pull_reply",
           "encode_push", "decode_push", "encode_stats", "decode_stats", "KEY", "FLOAT"]

KEY = "<i8"  # keys and counts
FLOAT = "<f4"  # rows, gradients, dense values
_MAX_DIM = 1 << 16  # row width: an embedding of 65536 floats is not a CTR table


def tensor(a: np.ndarray, dtype: str) -> pb.Tensor:
    """`a` as a Tensor of `dtype` (converted here, on the sending side, if it differs)."""
    a = np.ascontiguousarray(a, dtype=dtype)
    return pb.Tensor(dtype=dtype, shape=a.shape, data=a.tobytes())


_LEN = 2  # protobuf's wire type of strings, bytes and messages
_SLOT = 5  # bytes of every message field's length: a fixed width, so offsets are known as we write


def _varint(n: int, width: int = 0) -> bytes:
    """`n` as a varint; `width` > 0 pads it to that many bytes (an overlong varint, which
    protobuf reads as the same number)."""
    n &= (1 << 64) - 1  # an int64 field holds a negative as its two's complement, as protobuf writes it
    out = bytearray()
    while n > 0x7F or len(out) + 1 < width:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


class _Frame:
    """A message written front to back as parts (bytes or views of arrays), with the offset
    of the next byte known at every point: the data of each Tensor lands 8-byte aligned."""

    def __init__(self) -> None:
        self.parts: list = []
        self.pos = 0

    def put(self, b) -> None:
        self.parts.append(b)
        self.pos += len(b)

    def open(self, number: int) -> tuple[int, int]:
        """Start message field `number`; `close` writes its length into the slot kept here."""
        self.put(_varint(number << 3 | _LEN))
        self.put(bytes(_SLOT))
        return len(self.parts) - 1, self.pos

    def close(self, opened: tuple[int, int]) -> None:
        slot, start = opened
        self.parts[slot] = _varint(self.pos - start, _SLOT)

    def tensor(self, number: int, a: np.ndarray, dtype: str) -> None:
        """Field `number` holding `tensor(a, dtype)`; its data part is a view of `a`."""
        a = np.ascontiguousarray(a, dtype=dtype)
        opened = self.open(number)
        self.put(pb.Tensor(dtype=dtype, shape=a.shape).SerializeToString())
        if a.nbytes:  # proto3 leaves an empty bytes field out
            head = _varint(3 << 3 | _LEN) + _varint(a.nbytes)
            if (self.pos + len(head)) % 8:  # field 4 (align): tag, length, then that many zeros
                pad = -(self.pos + 2 + len(head)) % 8
                self.put(bytes([4 << 3 | _LEN, pad]) + bytes(pad))
            self.put(head)
            self.put(memoryview(a).cast("B"))
        self.close(opened)

    def join(self, tail: bytes) -> bytes:
        """The message: the parts, then `tail` (serialized scalars, whose field numbers come
        after every part's)."""
        return b"".join(self.parts + [tail])


def _checked_shape(got_dtype: str, shape: tuple, nbytes: int, dtype: str, ndim: int, what: str,
                   limits: WireLimits) -> tuple:
    """`shape`, once dtype, rank, limits and byte length agree; BadRequest/TooLarge naming
    `what` otherwise."""
    if got_dtype != dtype:
        raise BadRequest(f"{what}: dtype {got_dtype!r}, expected {dtype!r}")
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
    if nbytes != n * itemsize:
        raise BadRequest(f"{what}: {nbytes} bytes for shape {shape} of {dtype} ({n * itemsize} expected)")
    return shape


def array(t: pb.Tensor, dtype: str, ndim: int, what: str, limits: WireLimits) -> np.ndarray:
    """The checked, read-only array of a parsed Tensor `t`; BadRequest/TooLarge naming `what`
    otherwise."""
    shape = _checked_shape(t.dtype, tuple(t.shape), len(t.data), dtype, ndim, what, limits)
    return np.frombuffer(t.data, dtype=dtype).reshape(shape)


# ---------------------------------------------------------------------- reading
_TENSOR = {1: ("dtype", "string"), 2: ("shape*", "int64"), 3: ("data", "bytes")}
_PULL = {1: ("tables*", {1: ("table", "string"), 2: ("keys", _TENSOR)}), 2: ("train", "bool"),
         3: ("dense", "bool"), 4: ("min_step", "int64"), 5: ("next_step", "bool")}
_PULL_REPLY = {1: ("tables*", {1: ("table", "string"), 2: ("rows", _TENSOR)}), 2: ("dense", _TENSOR),
               3: ("waited_s", "double"), 4: ("has_step", "bool"), 5: ("step", "int64")}
_PUSH = {1: ("tables*", {1: ("table", "string"), 2: ("keys", _TENSOR), 3: ("grads", _TENSOR),
                         4: ("counts", _TENSOR)}),
         2: ("dense_grad", _TENSOR), 3: ("step", "int64")}


def view(body: bytes, t: dict, dtype: str, ndim: int, what: str, limits: WireLimits) -> np.ndarray:
    """The checked, read-only array of Tensor `t` (as `pbread.read` returns it) in `body`: a
    view when its data is aligned (as this codec writes it), else one copy."""
    start, stop = t.get("data", (0, 0))
    shape = _checked_shape(t.get("dtype", ""), tuple(t.get("shape", ())), stop - start, dtype, ndim, what,
                           limits)
    a = np.frombuffer(body, dtype=dtype, count=(stop - start) // np.dtype(dtype).itemsize, offset=start)
    return (a if a.flags.aligned else a.copy()).reshape(shape)


def _entries(msg: dict, limits: WireLimits, what: str) -> list:
    entries = msg.get("tables", [])
    if len(entries) > limits.max_tables:
        raise TooLarge(f"{what} names {len(entries)} tables, over the limit of {limits.max_tables}")
    names = [e.get("table", "") for e in entries]
    if len(set(names)) != len(names):
        raise BadRequest(f"{what} names a table twice: {names}")
    return entries


# ---------------------------------------------------------------------- pull
def encode_pull(keys, train=True, dense=False, min_step=0, next_step=False) -> bytes:
    """A serialized PullRequest."""
    f = _Frame()
    for t, k in keys.items():
        opened = f.open(1)
        f.put(pb.TableKeys(table=t).SerializeToString())
        f.tensor(2, k, KEY)
        f.close(opened)
    return f.join(pb.PullRequest(train=bool(train), dense=bool(dense), min_step=int(min_step),
                                 next_step=bool(next_step)).SerializeToString())


def decode_pull(body: bytes, limits: WireLimits) -> tuple:
    """The endpoint's pull arguments (keys, train, dense, min_step, next_step) from a
    serialized PullRequest."""
    req = pbread.read(body, _PULL, "pull")
    keys = {e.get("table", ""): view(body, e.get("keys", {}), KEY, 1, f"pull keys of {e.get('table', '')!r}",
                                     limits)
            for e in _entries(req, limits, "pull")}
    return keys, req.get("train", False), req.get("dense", False), req.get("min_step", 0), \
        req.get("next_step", False)


def encode_pull_reply(result) -> bytes:
    """A serialized PullReply of `ShardEndpoint.pull`'s result."""
    rows, d, waited, step = result
    f = _Frame()
    for t, v in rows.items():
        opened = f.open(1)
        f.put(pb.TableRows(table=t).SerializeToString())
        f.tensor(2, v, FLOAT)
        f.close(opened)
    if d is not None:
        f.tensor(2, d, FLOAT)
    return f.join(pb.PullReply(waited_s=float(waited), has_step=step is not None,
                               step=0 if step is None else int(step)).SerializeToString())


def decode_pull_reply(body: bytes, limits: WireLimits) -> tuple:
    """(rows, dense slice or None, waited_s, step or None), as `ShardEndpoint.pull` returns,
    from a serialized PullReply."""
    rep = pbread.read(body, _PULL_REPLY, "pull reply")
    rows = {e.get("table", ""): view(body, e.get("rows", {}), FLOAT, 2, f"pulled rows of {e.get('table', '')!r}",
                                     limits) for e in rep.get("tables", [])}
    d = view(body, rep["dense"], FLOAT, 1, "pulled dense slice", limits) if "dense" in rep else None
    return rows, d, rep.get("waited_s", 0.0), rep.get("step", 0) if rep.get("has_step", False) else None


# ---------------------------------------------------------------------- push
def encode_push(grads, dense_grad, step) -> bytes:
    """A serialized PushRequest."""
    f = _Frame()
    for t, (k, g, c) in grads.items():
        opened = f.open(1)
        f.put(pb.TableGrads(table=t).SerializeToString())
        f.tensor(2, k, KEY)
        f.tensor(3, g, FLOAT)
        f.tensor(4, c, KEY)
        f.close(opened)
    if dense_grad is not None:
        f.tensor(2, dense_grad, FLOAT)
    return f.join(pb.PushRequest(step=int(step)).SerializeToString())


def decode_push(body: bytes, limits: WireLimits) -> tuple:
    """The endpoint's push arguments (grads, dense_grad, step) from a serialized PushRequest."""
    req = pbread.read(body, _PUSH, "push")
    grads = {}
    for e in _entries(req, limits, "push"):
        t = e.get("table", "")
        grads[t] = (view(body, e.get("keys", {}), KEY, 1, f"push keys of {t!r}", limits),
                    view(body, e.get("grads", {}), FLOAT, 2, f"push gradients of {t!r}", limits),
                    view(body, e.get("counts", {}), KEY, 1, f"push counts of {t!r}", limits))
    d = view(body, req["dense_grad"], FLOAT, 1, "push dense gradient", limits) if "dense_grad" in req else None
    return grads, d, req.get("step", 0)


# ---------------------------------------------------------------------- stats
def encode_stats(s: ShardStats) -> pb.StatsReply:
    return pb.StatsReply(shard=s.shard, requests=s.requests, bytes_in=s.bytes_in, bytes_out=s.bytes_out,
                         apply_seconds=s.apply_seconds, pull_seconds=s.pull_seconds, rows=s.rows,
                         waiting_keys=s.waiting_keys, admitted_keys=s.admitted_keys,
                         freq_histogram={k: pb.Counts(values=v) for k, v in s.freq_histogram.items()},
                         global_step=s.global_step, applies=s.applies, apply_recent=s.apply_recent)


def decode_stats(r: pb.StatsReply) -> ShardStats:
    return ShardStats(shard=r.shard, requests=r.requests, bytes_in=r.bytes_in, bytes_out=r.bytes_out,
                      apply_seconds=r.apply_seconds, pull_seconds=r.pull_seconds, rows=dict(r.rows),
                      waiting_keys=dict(r.waiting_keys), admitted_keys=dict(r.admitted_keys),
                      freq_histogram={k: list(v.values) for k, v in r.freq_histogram.items()},
                      global_step=r.global_step, applies=r.applies, apply_recent=list(r.apply_recent))
