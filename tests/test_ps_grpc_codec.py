"""The gRPC wire format: the committed stubs match proto/ps.proto, and the codec's framed bulk
messages are what protobuf reads, with arrays viewed in place (`psrec.ps.grpc_codec`,
`psrec.ps.pbread`). The server and transport are tested in tests/test_ps_grpc.py."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from psrec.ps import grpc_codec as codec
from psrec.ps.config import WireLimits
from psrec.ps.grpc_server import SERVICE
from psrec.ps.wire import BadRequest

ROOT = Path(__file__).resolve().parents[1]
pb = codec.pb


def test_committed_stubs_match_the_proto(tmp_path):
    """psrec/ps/_proto was generated from proto/ps.proto as it is now (regenerate: see the .proto)."""
    from google.protobuf import descriptor_pb2

    from psrec.ps._proto import ps_pb2

    out = tmp_path / "ps.desc"
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "--proto_path=psrec/ps/_proto=proto",
                    f"--descriptor_set_out={out}", "proto/ps.proto"], cwd=ROOT, check=True, timeout=120)
    fresh = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file[0]
    committed = descriptor_pb2.FileDescriptorProto.FromString(ps_pb2.DESCRIPTOR.serialized_pb)

    def strip(messages):  # protoc fills json_name only in descriptor sets
        for m in messages:
            for f in m.field:
                f.ClearField("json_name")
            strip(m.nested_type)

    strip(fresh.message_type)
    strip(committed.message_type)
    assert committed == fresh
    grpc_stub = (ROOT / "psrec/ps/_proto/ps_pb2_grpc.py").read_text()
    for method in fresh.service[0].method:
        assert f"/{SERVICE}/{method.name}'" in grpc_stub


def _bulk_cases():
    """(framed bytes, the protobuf message they must be, the decoder) for the bulk messages."""
    rng = np.random.default_rng(1)
    k = rng.integers(-(1 << 62), 1 << 62, 50)  # negative keys: 10-byte varints nowhere, raw bytes here
    g = rng.standard_normal((50, 4)).astype(np.float32)
    c = rng.integers(1, 9, 50)
    d = rng.standard_normal(7).astype(np.float32)
    T = codec.tensor

    def rows(name, v):
        return pb.TableRows(table=name, rows=T(v, codec.FLOAT))

    return [
        (codec.encode_pull({"a": k, "": k[:0], "é": k[:3]}, True, True, 7, True),
         pb.PullRequest(tables=[pb.TableKeys(table=t, keys=T(k[:n], codec.KEY)) for t, n in
                                (("a", 50), ("", 0), ("é", 3))], train=True, dense=True, min_step=7,
                        next_step=True), codec.decode_pull),
        (codec.encode_pull({}, False, False, -3, False), pb.PullRequest(min_step=-3), codec.decode_pull),
        (codec.encode_pull_reply(({"a": g, "b": g[:0]}, d, 0.25, 0)),
         pb.PullReply(tables=[rows("a", g), rows("b", g[:0])], dense=T(d, codec.FLOAT), waited_s=0.25,
                      has_step=True, step=0), codec.decode_pull_reply),
        (codec.encode_pull_reply(({"a": g[:3]}, None, 0.0, None)), pb.PullReply(tables=[rows("a", g[:3])]),
         codec.decode_pull_reply),
        (codec.encode_push({"a": (k, g, c), "b": (k[:1], g[:1], c[:1])}, d, 1 << 40),
         pb.PushRequest(tables=[pb.TableGrads(table=t, keys=T(k[:n], codec.KEY), grads=T(g[:n], codec.FLOAT),
                                              counts=T(c[:n], codec.KEY)) for t, n in (("a", 50), ("b", 1))],
                        dense_grad=T(d, codec.FLOAT), step=1 << 40), codec.decode_push),
        (codec.encode_push({}, None, 0), pb.PushRequest(), codec.decode_push),
    ]


def _same(a, b) -> None:
    """Decoded results equal, arrays by value and dtype."""
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    elif isinstance(a, (tuple, list)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _same(x, y)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for x in a:
            _same(a[x], b[x])
    else:
        assert a == b


def _arrays(x):
    if isinstance(x, np.ndarray):
        yield x
    elif isinstance(x, (tuple, list)):
        for y in x:
            yield from _arrays(y)
    elif isinstance(x, dict):
        for y in x.values():
            yield from _arrays(y)


def test_framed_messages_are_read_by_protobuf_as_the_same_messages_with_aligned_arrays():
    """The codec frames the bulk messages itself (no array copies): protobuf must read them as
    the message it would have written, and every array's bytes start 8-byte aligned, so the
    decoded arrays are views of the received bytes."""
    limits = WireLimits()
    for framed, message, decode in _bulk_cases():
        parsed = type(message).FromString(framed)
        parsed_plain = type(message).FromString(parsed.SerializeToString())  # align fields dropped
        for t in [*getattr(parsed_plain, "tables", [])]:
            for f in ("keys", "rows", "grads", "counts"):
                if t.DESCRIPTOR.fields_by_name.get(f) is not None:
                    getattr(t, f).ClearField("align")
        assert parsed_plain.SerializeToString() == message.SerializeToString(), message
        got = decode(framed, limits)
        _same(got, decode(message.SerializeToString(), limits))  # protobuf's own bytes read the same
        base = np.frombuffer(framed, np.uint8).ctypes.data
        for a in _arrays(got):
            assert not a.flags.writeable
            if a.size:  # a view of the message, 8-byte aligned in it
                assert a.base is not None and (a.ctypes.data - base) % 8 == 0
    rows, d, waited, step = codec.decode_pull_reply(_bulk_cases()[2][0], limits)
    assert rows["b"].shape == (0, 4) and (waited, step) == (0.25, 0) and d.shape == (7,)


def test_the_bulk_reader_agrees_with_protobuf_and_refuses_garbage_in_one_error():
    """Every truncation and 300 random byte flips of each bulk message: where protobuf reads
    the bytes and our checks pass, the codec returns what protobuf's message gives; otherwise
    the codec refuses with BadRequest (or TooLarge), never another exception."""
    limits = WireLimits()
    rng = np.random.default_rng(7)
    agreed = refused = 0
    for framed, message, decode in _bulk_cases():
        cls = type(message)
        bad = [framed[:n] for n in range(len(framed))]
        for _ in range(300 if framed else 0):
            b = bytearray(framed)  # most bytes are array data: half the flips go to the framing in front
            for i in rng.integers(0, min(len(b), 80) if rng.random() < 0.5 else len(b), rng.integers(1, 4)):
                b[i] = rng.integers(0, 256)
            bad.append(bytes(b))
        for body in bad:
            try:
                got = decode(body, limits)
            except BadRequest:
                refused += 1
                continue
            try:  # it read: protobuf must read it too, to the same values
                want = decode(cls.FromString(body).SerializeToString(), limits)
            except Exception:  # noqa: BLE001 - protobuf refused what we read: only merges do that
                raise AssertionError(f"read bytes protobuf refuses: {body!r}") from None
            _same(got, want)
            agreed += 1
    assert refused > 1000 and agreed > 10
