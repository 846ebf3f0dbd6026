"""The gRPC PS server and transport (psrec/ps/grpc_server.py, grpc_transport.py): results equal
to in-process calls, authentication, TLS, and refusals that store nothing. The wire format is
tested in tests/test_ps_grpc_codec.py."""
from __future__ import annotations

import datetime
from pathlib import Path

import grpc
import numpy as np
import pytest

from psrec.ev import EVConfig, OptimizerConfig
from psrec.ps import grpc_codec as codec
from psrec.ps.config import WireLimits
from psrec.ps.grpc_server import SERVICE, TOKEN_KEY, GrpcPSServer
from psrec.ps.grpc_transport import GrpcTransport
from psrec.ps.shard import DenseSpec, PSShard
from psrec.ps.transport import ShardEndpoint
from psrec.ps.wire import BadRequest, TooLarge, Unauthenticated

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "0123456789abcdef" * 4
TABLES = {"emb": EVConfig(dim=4, optimizer=OptimizerConfig(name="sgd", lr=0.1))}
pb = codec.pb


def _server(sync=False, workers=1, dense=None, limits=None, tls=None):
    ep = ShardEndpoint(PSShard(0, TABLES, workers, sync, dense), timeout_s=5.0, limits=limits)
    return ep, GrpcPSServer(ep, TOKEN, "127.0.0.1", threads=4, tls=tls, limits=limits)


def _checksum(ep: ShardEndpoint) -> tuple:
    keys, values = ep.table_values("emb")
    order = np.argsort(keys)
    return keys[order].tobytes(), values[order].tobytes(), ep.applied_step


def test_grpc_calls_return_what_in_process_calls_return():
    dense = DenseSpec(np.arange(6, dtype=np.float32), optimizer="sgd", lr=0.5)
    ep, server = _server(dense=dense)
    local = ShardEndpoint(PSShard(0, TABLES, 1, False, dense))
    t = GrpcTransport([server.address], TOKEN, timeout_s=30)
    rng = np.random.default_rng(0)
    try:
        assert t.call(0, "ping") == 0
        for step in (1, 2):
            keys = rng.integers(-(1 << 40), 1 << 40, 3000).astype(np.int64)
            got = t.call(0, "pull", {"emb": keys}, True, True, 0, True)
            want = local.pull({"emb": keys}, True, True, 0, True)
            np.testing.assert_array_equal(got[0]["emb"], want[0]["emb"])
            np.testing.assert_array_equal(got[1], want[1])
            assert got[3] == want[3] == step
            grads = rng.standard_normal((len(keys), 4)).astype(np.float32)
            counts = np.ones(len(keys), np.int64)
            args = ({"emb": (keys, grads, counts)}, np.ones(6, np.float32), step)
            t.call(0, "push", *args)
            local.push(*args)
        gk, gv = t.call(0, "table_values", "emb")
        lk, lv = local.table_values("emb")
        np.testing.assert_array_equal(gv[np.argsort(gk)], lv[np.argsort(lk)])
        s = t.call(0, "stats", True)
        assert s.rows == {"emb": len(lk)} and s.requests == local.stats().requests and s.freq_histogram["emb"]
        assert s.applies == 2 and len(s.apply_recent) == 2 and sum(s.apply_recent) == pytest.approx(s.apply_seconds)
    finally:
        t.shutdown()
        server.close()


def test_a_call_without_the_job_token_is_unauthenticated_and_stores_nothing():
    ep, server = _server()
    keys = np.arange(10, dtype=np.int64)
    try:
        for token in ("", "wrong-token-of-some-length", TOKEN[:-1] + "x"):
            t = GrpcTransport([server.address], token or "-", timeout_s=10)
            with pytest.raises(Unauthenticated, match="UNAUTHENTICATED"):
                t.call(0, "pull", {"emb": keys}, True, False, 0, False)
            t.shutdown()
        # no metadata at all, on a raw channel
        with grpc.insecure_channel(server.address) as ch:
            with pytest.raises(grpc.RpcError) as info:
                ch.unary_unary(f"/{SERVICE}/Ping")(b"", timeout=10)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert ep.stats().rows == {"emb": 0} and ep.stats().requests == 0  # the pulls never reached the shard
    finally:
        server.close()


def _raw(server, method: str, body: bytes, token=TOKEN):
    with grpc.insecure_channel(server.address, options=[("grpc.max_send_message_length", 1 << 30)]) as ch:
        call = ch.unary_unary(f"/{SERVICE}/{method}")
        try:
            call(body, timeout=30, metadata=((TOKEN_KEY, token),))
        except grpc.RpcError as e:
            return e.code(), e.details()
    return grpc.StatusCode.OK, ""


def _bad_requests():
    k = np.arange(1, 9, dtype=np.int64)
    g = np.ones((8, 4), np.float32)
    c = np.ones(8, np.int64)

    def push(table="emb", keys=None, grads=None, counts=None, step=1, dense=None):
        req = pb.PushRequest(tables=[pb.TableGrads(table=table, keys=keys or codec.tensor(k, "<i8"),
                                                   grads=grads or codec.tensor(g, "<f4"),
                                                   counts=counts or codec.tensor(c, "<i8"))], step=step)
        if dense is not None:
            req.dense_grad.CopyFrom(dense)
        return req.SerializeToString()

    nan = g.copy()
    nan[3, 2] = np.nan
    good = push()
    return {
        "wrong dtype": ("Push", push(grads=codec.tensor(g.astype(np.float64), "<f8")), "INVALID_ARGUMENT"),
        "wrong shape": ("Push", push(grads=codec.tensor(np.ones((8, 5), np.float32), "<f4")), "INVALID_ARGUMENT"),
        "short data": ("Push", push(keys=pb.Tensor(dtype="<i8", shape=[8], data=k.tobytes()[:-3])),
                       "INVALID_ARGUMENT"),
        "lying shape": ("Push", push(keys=pb.Tensor(dtype="<i8", shape=[1 << 40], data=k.tobytes())),
                        "RESOURCE_EXHAUSTED"),
        "negative dim": ("Push", push(keys=pb.Tensor(dtype="<i8", shape=[-8], data=k.tobytes())), "INVALID_ARGUMENT"),
        "counts length": ("Push", push(counts=codec.tensor(c[:5], "<i8")), "INVALID_ARGUMENT"),
        "negative counts": ("Push", push(counts=codec.tensor(-c, "<i8")), "INVALID_ARGUMENT"),
        "unknown table": ("Push", push(table="nope"), "INVALID_ARGUMENT"),
        "negative step": ("Push", push(step=-1), "INVALID_ARGUMENT"),
        "huge step": ("Push", push(step=1 << 60), "INVALID_ARGUMENT"),
        "nan gradient": ("Push", push(grads=codec.tensor(nan, "<f4")), "INVALID_ARGUMENT"),
        "dense not held": ("Push", push(dense=codec.tensor(np.ones(3, np.float32), "<f4")), "INVALID_ARGUMENT"),
        "truncated": ("Push", good[:-5], "INVALID_ARGUMENT"),
        "garbage": ("Push", b"\xff" * 64, "INVALID_ARGUMENT"),
        "pull unknown table": ("Pull", pb.PullRequest(tables=[pb.TableKeys(table="x", keys=codec.tensor(k, "<i8"))])
                               .SerializeToString(), "INVALID_ARGUMENT"),
        "pull float keys": ("Pull", pb.PullRequest(tables=[pb.TableKeys(table="emb", keys=codec.tensor(
            k.astype(np.float32), "<f4"))]).SerializeToString(), "INVALID_ARGUMENT"),
        "pull twice a table": ("Pull", pb.PullRequest(tables=[pb.TableKeys(table="emb", keys=codec.tensor(k, "<i8"))]
                                                      * 2).SerializeToString(), "INVALID_ARGUMENT"),
        "table values of nothing": ("TableValuesOf", pb.TableRequest(table="x").SerializeToString(),
                                    "INVALID_ARGUMENT"),
    }


@pytest.mark.parametrize("case", sorted(_bad_requests()))
def test_a_bad_request_is_refused_with_its_status_and_the_server_goes_on(case):
    method, body, code = _bad_requests()[case]
    ep, server = _server()
    t = GrpcTransport([server.address], TOKEN, timeout_s=30)
    keys = np.arange(1, 9, dtype=np.int64)
    try:
        t.call(0, "pull", {"emb": keys}, True, False, 0, False)  # rows exist: a stored push would change them
        before = _checksum(ep)
        got, details = _raw(server, method, body)
        assert got.name == code, details
        assert _checksum(ep) == before
        t.call(0, "push", {"emb": (keys, np.ones((8, 4), np.float32), np.ones(8, np.int64))}, None, 1)
        assert _checksum(ep) != before  # still serving, and a good push does change the rows
    finally:
        t.shutdown()
        server.close()


def test_export_and_restore_over_grpc_stay_inside_the_run_directory(tmp_path):
    run, outside = tmp_path / "run", tmp_path / "elsewhere"
    (run / "checkpoints").mkdir(parents=True)
    outside.mkdir()
    (run / "link-out").symlink_to(outside, target_is_directory=True)
    ep = ShardEndpoint(PSShard(0, TABLES), timeout_s=5.0)
    server = GrpcPSServer(ep, TOKEN, "127.0.0.1", threads=4, export_roots=(str(run),), restore_roots=(str(run),))
    closed = GrpcPSServer(ShardEndpoint(PSShard(0, TABLES)), TOKEN, "127.0.0.1", threads=2)  # no run directory
    t = GrpcTransport([server.address], TOKEN, timeout_s=30)
    keys = np.arange(1, 9, dtype=np.int64)
    try:
        t.call(0, "pull", {"emb": keys}, True, False, 0, False)
        good = run / "checkpoints" / "step-1" / "shard-0"
        t.call(0, "export", str(good))
        assert (good / "steps.json").is_file()
        before = _checksum(ep)
        t.call(0, "push", {"emb": (keys, np.ones((8, 4), np.float32), np.ones(8, np.int64))}, None, 1)
        t.call(0, "restore", str(good))
        assert _checksum(ep) == before  # a path inside works both ways
        bad = {
            "outside": ("Export", str(outside / "x")),
            "dot-dot": ("Export", f"{run}/checkpoints/../../elsewhere/x"),
            "relative": ("Export", "checkpoints/x"),
            "symlink out": ("Export", str(run / "link-out" / "x")),
            "restore outside": ("Restore", str(outside)),
            "restore via symlink": ("Restore", str(run / "link-out")),
            "nul byte": ("Export", f"{run}/a\0b"),
            "empty": ("Restore", ""),
        }
        for case, (method, path) in bad.items():
            got, details = _raw(server, method, pb.PathRequest(path=path).SerializeToString())
            assert got.name == "INVALID_ARGUMENT", (case, details)
        body = pb.PathRequest(path=str(run / "y"), base=str(outside)).SerializeToString()
        got, details = _raw(server, "Export", body)
        assert got.name == "INVALID_ARGUMENT" and "export base" in details
        (good / "sneaky").symlink_to(outside)  # inside a checkpoint, pointing out: the whole tree is checked
        got, details = _raw(server, "Restore", pb.PathRequest(path=str(good)).SerializeToString())
        assert got.name == "INVALID_ARGUMENT" and "links outside" in details, details
        got, details = _raw(closed, "Export", pb.PathRequest(path=str(run / "z")).SerializeToString())
        assert got.name == "INVALID_ARGUMENT" and "no paths" in details
        with pytest.raises(BadRequest, match="outside the job's run directory"):
            t.call(0, "export", str(outside / "y"))
        assert list(outside.iterdir()) == [] and not (run / "z").exists()  # nothing written anywhere refused
        assert _checksum(ep) == before and t.call(0, "ping") == 0
    finally:
        t.shutdown()
        server.close()
        closed.close()


def test_oversized_messages_are_refused_by_the_limit():
    limits = WireLimits(max_message_bytes=1 << 20, max_keys=1 << 16)
    ep, server = _server(limits=limits)
    t = GrpcTransport([server.address], TOKEN, timeout_s=30, limits=limits)
    try:
        with pytest.raises(TooLarge, match="RESOURCE_EXHAUSTED"):
            t.call(0, "pull", {"emb": np.arange(1 << 18, dtype=np.int64)}, True, False, 0, False)  # 2 MiB of keys
        with pytest.raises(TooLarge, match="RESOURCE_EXHAUSTED"):  # under the bytes, over the keys
            t.call(0, "pull", {"emb": np.arange((1 << 16) + 1, dtype=np.int64)}, True, False, 0, False)
        assert ep.stats().rows == {"emb": 0}
        assert t.call(0, "ping") == 0
    finally:
        t.shutdown()
        server.close()


def test_sync_steps_outside_the_window_are_refused():
    ep, server = _server(sync=True, workers=2)
    t = GrpcTransport([server.address], TOKEN, timeout_s=30)
    keys = np.arange(4, dtype=np.int64)
    push = {"emb": (keys, np.ones((4, 4), np.float32), np.ones(4, np.int64))}
    try:
        with pytest.raises(BadRequest, match="ahead of applied step 0"):
            t.call(0, "push", push, None, 2)  # would wait forever for step 1
        with pytest.raises(BadRequest, match="ahead of applied step 0"):
            t.call(0, "pull", {"emb": keys}, True, False, 5, False)  # would hold a thread until the timeout
        t.call(0, "push", push, None, 1)
        t.call(0, "push", push, None, 1)
        assert ep.applied_step == 1
        with pytest.raises(BadRequest, match="already applied"):
            t.call(0, "push", push, None, 1)
    finally:
        t.shutdown()
        server.close()


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    x509 = pytest.importorskip("cryptography.x509")
    import ipaddress

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "psrec-ps")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "ps.crt", tmp_path / "ps.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_tls_server_serves_a_client_that_trusts_its_certificate_and_no_plaintext_one(tmp_path):
    cert, key = _self_signed(tmp_path)
    ep, server = _server(tls=(cert.read_bytes(), key.read_bytes()))
    t = GrpcTransport([server.address], TOKEN, timeout_s=30, tls_cert=cert.read_bytes())
    plain = GrpcTransport([server.address], TOKEN, timeout_s=5)
    try:
        assert t.call(0, "ping") == 0
        rows = t.call(0, "pull", {"emb": np.arange(3, dtype=np.int64)}, True, False, 0, False)[0]["emb"]
        assert rows.shape == (3, 4)
        with pytest.raises((RuntimeError, TimeoutError)):  # UNAVAILABLE: the handshake fails
            plain.call(0, "ping")
    finally:
        t.shutdown(), plain.shutdown()
        server.close()


def test_ps_config_knows_the_transports_and_wants_tls_files_in_pairs():
    from psrec.config import ConfigError, load_config

    assert load_config(None, ["ps.transport=grpc"]).ps.transport == "grpc"
    with pytest.raises(ConfigError, match="ps.transport"):
        load_config(None, ["ps.transport=carrier-pigeon"])
    with pytest.raises((ConfigError, ValueError), match="tls_cert and ps.tls_key"):
        load_config(None, ["ps.tls_cert=/tmp/x.crt"])


# ------------------------------------------------------------------ on Ray
def test_sync_ps_on_ray_over_grpc_matches_local(ray_session):
    from test_ps_equivalence import BASE, B, K, local_params

    from psrec.config import load_config
    from psrec.core.progress import progress_bar
    from psrec.ps.ray_runner import RayPSJob
    from psrec.ps.runner import plan_ps

    want_rows, want_dense, _ = local_params(2)
    cfg = load_config(None, BASE + [f"data.batch_size={B}", f"data.train_rows={K * B * 2}", "ps.sync=true",
                                    "ps.workers=2", "ps.num_ps=2", "ps.metrics_port=-1", "ps.transport=grpc"])
    plan = plan_ps(cfg)
    job = RayPSJob(plan, plan.source.build())
    try:
        assert job.transport.routes == ["grpc", "grpc"]
        with progress_bar(0, False) as bar:
            reports = job.train(bar, None)
        dense = job.dense()
        for t, want in want_rows.items():
            got = {}
            for keys, values in job.transport.broadcast("table_values", t):
                got.update(zip(keys.tolist(), values))
            assert sorted(got) == sorted(want)
            np.testing.assert_allclose(np.stack([got[k] for k in sorted(want)]),
                                       np.stack([want[k] for k in sorted(want)]), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(dense, want_dense, rtol=1e-5, atol=1e-6)
        assert all(len(r.steps) == K for r in reports)
        assert sum(s["requests"] for s in job.transport.broadcast("stats", False) for s in [s.__dict__]) > 0
    finally:
        job.close()


def test_auto_uses_the_channel_on_this_node_and_grpc_is_refused_without_the_token(ray_session):
    from psrec.ps.ray_transport import RayTransport, start_ps_actors

    actors = start_ps_actors(1, TABLES, 1, False, [None], num_cpus=0.1)
    auto = RayTransport(actors, mode="auto")
    grpc_t = RayTransport(actors, mode="grpc")
    try:
        assert auto.routes == ["channel"] and grpc_t.routes == ["grpc"]
        info = ray_session.get(actors[0].locate.remote(), timeout=60)
        assert not info["grpc"].startswith(("0.0.0.0", "[::]"))  # the node's own address only
        keys = np.arange(1, 100, dtype=np.int64)
        a = auto.call(0, "pull", {"emb": keys}, True, False, 0, False)[0]["emb"].copy()
        b = grpc_t.call(0, "pull", {"emb": keys}, True, False, 0, False)[0]["emb"]
        np.testing.assert_array_equal(a, b)
        stranger = GrpcTransport([info["grpc"]], "not-the-job-token", timeout_s=30)
        with pytest.raises(Unauthenticated):
            stranger.call(0, "ping")
        stranger.shutdown()
    finally:
        grpc_t._grpc.shutdown()
        grpc_t.actors = []
        auto.shutdown()


def test_a_ps_run_over_grpc_checkpoints_into_its_run_directory(ray_session, tmp_path):
    """The run tells its PS its run directory: the checkpoints and the saved model, exported over
    gRPC, land there; a checkpoint of another run is restorable (WireOptions.resume_dir)."""
    import psrec
    from psrec.core import checkpoint
    from psrec.ps.wire import WireOptions

    cfg = psrec.load_config(overrides=["synthetic.num_fields=6", "synthetic.num_dense=2", "embedding.dim=4",
                                       "model.params.hidden=[8]", "data.batch_size=64", "data.train_rows=768",
                                       "data.eval_rows=256", "train.progress=false", "ps.metrics_port=-1",
                                       "ps.transport=grpc", "ps.workers=1", "ps.num_ps=2", f"run.dir={tmp_path}",
                                       "run.name=over-grpc", "run.checkpoint_every_steps=4"])
    res = psrec.train(cfg, "ps")
    run = Path(res.path)
    assert res["checkpoints"]["written"] >= 1
    (ckpt,) = checkpoint.list_checkpoints(run / "checkpoints")[-1:]
    assert sorted(p.name for p in (ckpt / "tables").iterdir()) == ["shard-0", "shard-1"]
    (model,) = checkpoint.list_checkpoints(run / "model")
    assert sorted(p.name for p in (model / "tables").iterdir()) == ["shard-0", "shard-1"]
    wire = WireOptions.for_job(cfg.ps, str(run), str(tmp_path / "other" / "checkpoints"))
    assert wire.roots("export") == (str(run),)
    assert wire.roots("restore") == (str(run), str(tmp_path / "other" / "checkpoints"))
