"""The testbed's pieces that need no root: its config, names, tc and `ray start` command lines,
the state file, and the refusals. The testbed itself (root) is exercised by
benchmarks/testbed_bench.py, and here by one end-to-end test when PSREC_TESTBED_TEST=1 and root."""
import os
import shutil
import subprocess

import pytest

from psrec.cluster import TestbedConfig, TestbedError
from psrec.cluster.netns import missing_caps, require_root
from psrec.cluster.nodes import node_env, ray_start_args
from psrec.cluster.shaping import Bucket, bucket_for, netem_unavailable, tbf_args
from psrec.cluster.state import TestbedState, all_states, load_state, node_names, save_state


def test_config_validates_and_parses_units():
    cfg = TestbedConfig(nodes=4, bandwidth="200Mbit", latency="200us")
    assert cfg.rate_bytes_per_s == 25e6 and cfg.latency_s == 2e-4
    for bad in (dict(nodes=0), dict(name="Bad_Name"), dict(name="toolongname"), dict(subnet=256),
                dict(bandwidth="inf"), dict(cpus_per_node=0)):
        with pytest.raises(ValueError):
            TestbedConfig(**bad)
    with pytest.raises(ValueError, match="no unit"):
        TestbedConfig(bandwidth="1000")


def test_names_fit_linux_interface_names_and_addresses_are_private(tmp_path, monkeypatch):
    monkeypatch.setenv("PSREC_CLUSTER_DIR", str(tmp_path))
    bridge, nodes = node_names(TestbedConfig(nodes=12, name="abcdef", subnet=7))
    assert bridge == "psrabcdef-br"
    assert [n.ip for n in nodes[:2]] == ["10.200.7.1", "10.200.7.2"] and nodes[11].ip == "10.200.7.12"
    for n in nodes:
        assert len(n.host_if) <= 15 and len(n.peer_if) <= 15  # IFNAMSIZ - 1
        assert n.temp_dir.startswith(str(tmp_path / "abcdef"))
    assert len({n.netns for n in nodes}) == 12


def test_token_bucket_golden_numbers():
    # 1 Gbit = 125e6 B/s: bucket 1 ms = 125 KB (over one 64 KiB GSO frame); queue 50 ms + bucket
    assert bucket_for(125e6) == Bucket(1_000_000_000, 125_000, 6_375_000)
    # 200 Mbit: 1 ms = 25 KB < one GSO frame, so the bucket holds 64 KiB + one MTU frame
    assert bucket_for(25e6) == Bucket(200_000_000, 65536 + 1514, 1_250_000 + 65536 + 1514)
    assert tbf_args("eth0", bucket_for(125e6), netns="ns1") == [
        "tc", "-n", "ns1", "qdisc", "replace", "dev", "eth0", "root", "tbf", "rate", "1000000000bit",
        "burst", "125000", "limit", "6375000"]
    assert tbf_args("h1", bucket_for(125e6), parent="1:1")[:8] == ["tc", "qdisc", "replace", "dev", "h1",
                                                                   "parent", "1:1", "tbf"]
    assert netem_unavailable('Error: Specified qdisc kind is unknown.')
    assert not netem_unavailable("RTNETLINK answers: Invalid argument")


def test_ray_start_lines_and_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("PSREC_CLUSTER_DIR", str(tmp_path))
    monkeypatch.setenv("RAY_ADDRESS", "somewhere:6379")  # a user's Ray setting must not leak into the testbed
    cfg = TestbedConfig(nodes=2, cpus_per_node=1.5)
    _, (head, other) = node_names(cfg)
    h = ray_start_args(head, cfg)
    assert "--head" in h and "--port=6379" in h and "--node-ip-address=10.200.0.1" in h
    assert f"--temp-dir={head.temp_dir}" in h and "--num-cpus=1.5" in h and "--include-dashboard=false" in h
    w = ray_start_args(other, cfg, "10.200.0.1:6379")
    assert "--head" not in w and "--address=10.200.0.1:6379" in w and "--node-ip-address=10.200.0.2" in w
    env = node_env("/x/token")
    assert env["RAY_AUTH_MODE"] == "token" and env["RAY_AUTH_TOKEN_PATH"] == "/x/token"
    assert "RAY_ADDRESS" not in env and env["GLOO_SOCKET_IFNAME"] == "eth0"  # the node's link, not loopback


def test_state_round_trip_and_partial_state(tmp_path, monkeypatch):
    monkeypatch.setenv("PSREC_CLUSTER_DIR", str(tmp_path))
    cfg = TestbedConfig(nodes=3, name="t1")
    bridge, nodes = node_names(cfg)
    from dataclasses import asdict

    st = TestbedState("t1", asdict(cfg), bridge, "10.200.0.0/24", nodes, str(tmp_path / "t1" / "token"))
    save_state(st)  # written before anything is made: `down` reads it after a crash
    back = load_state("t1")
    assert back == st and not back.complete and back.cfg == cfg
    assert back.node_of_ip("10.200.0.3").index == 2 and back.node_of_ip("10.9.9.9") is None
    assert [s.name for s in all_states()] == ["t1"]
    (tmp_path / "t1" / "state.json").write_text("{not json")
    with pytest.raises(TestbedError, match="unreadable testbed state"):
        load_state("t1")


def test_refuses_without_root_in_one_line():
    no_caps = "Name:\tx\nCapEff:\t0000000000000000\n"
    assert missing_caps(no_caps) == ["CAP_NET_ADMIN", "CAP_SYS_ADMIN"]
    assert missing_caps("CapEff:\t000001fffeffffff\n") == []
    with pytest.raises(TestbedError, match="needs root.*CAP_NET_ADMIN, CAP_SYS_ADMIN"):
        require_root("psrec cluster up", status=no_caps)


def test_cli_bad_input_is_one_line(tmp_path, monkeypatch, capsys):
    from psrec.cli import main

    monkeypatch.setenv("PSREC_CLUSTER_DIR", str(tmp_path))
    assert main(["cluster", "up", "--nodes", "0"]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "nodes must be 1..64" in err
    assert main(["cluster", "status"]) == 0 and "no testbed is up" in capsys.readouterr().out
    assert main(["cluster", "down", "--name", "nosuch"]) == 1 and "no testbed named nosuch" in capsys.readouterr().err


@pytest.mark.skipif(os.environ.get("PSREC_TESTBED_TEST") != "1" or os.geteuid() != 0,
                    reason="end to end needs root and PSREC_TESTBED_TEST=1 (brings up real namespaces)")
def test_up_and_down_leave_nothing_behind(monkeypatch):
    import tempfile

    from psrec.cluster import down, up
    from psrec.cluster.netns import link_exists, netns_exists, netns_pids

    short = tempfile.mkdtemp(prefix="psr", dir="/tmp")  # Ray's socket paths must stay under 108 bytes
    monkeypatch.setenv("PSREC_CLUSTER_DIR", short)
    st = up(TestbedConfig(nodes=2, name="ci", subnet=250, bandwidth="200Mbit", cpus_per_node=1), log=lambda *_: None)
    try:
        assert st.complete and st.address == "10.200.250.1:6379"
        assert all(netns_pids(n.netns) for n in st.nodes)  # a Ray node runs in each
        out = subprocess.run(["tc", "qdisc", "show", "dev", st.nodes[1].host_if], capture_output=True, text=True)
        assert "tbf" in out.stdout and "rate 200Mbit" in out.stdout
    finally:
        assert down("ci", log=lambda *_: None)
    assert not any(netns_exists(n.netns) or link_exists(n.host_if) for n in st.nodes)
    assert not link_exists(st.bridge) and load_state("ci") is None
    os.rmdir(short)  # `down` removed the testbed's directory: the root is empty


def test_doctests_of_the_testbed_modules():
    import doctest

    import psrec.cluster.config
    import psrec.cluster.counters
    import psrec.cluster.shaping

    for mod in (psrec.cluster.config, psrec.cluster.counters, psrec.cluster.shaping):
        res = doctest.testmod(mod)
        assert res.attempted > 0 and res.failed == 0, mod.__name__


def test_busy_rate_keeps_only_the_bursts():
    from psrec.cluster.counters import busy_rate

    # 10 ms samples at 100 MB/s shaped: idle (1 KB keep-alives), a 2-interval burst at the full
    # rate, a half-rate interval, idle again
    t = [0.0, 0.01, 0.02, 0.03, 0.04, 0.05]
    b = [0, 1_000, 1_001_000, 2_001_000, 2_501_000, 2_502_000]
    rate, secs, nbytes = busy_rate(list(zip(t, b)), 1e8)
    assert nbytes == 2_500_000 and abs(secs - 0.03) < 1e-9
    assert abs(rate - 2_500_000 / 0.03) < 1e-3  # the half-rate edge lowers it: errs low
    assert busy_rate([(0.0, 5), (0.01, 5)], 1e8) == (0.0, 0.0, 0)


def test_interior_rate_leaves_out_each_bursts_edges():
    from psrec.cluster.counters import busy_rate, interior_rate

    # two bursts at 100 MB/s shaped, 10 ms samples: [0.4 MB edge, 1 MB, 1 MB, 0.2 MB edge], idle,
    # [0.5 MB, 0.5 MB] (no interior); a half-rate gap inside the first would still count
    steps = [400_000, 1_000_000, 1_000_000, 200_000, 0, 500_000, 500_000, 0]
    t = [0.01 * i for i in range(len(steps) + 1)]
    b = [0]
    for d in steps:
        b.append(b[-1] + d)
    rate, secs, nbytes = interior_rate(list(zip(t, b)), 1e8)
    assert nbytes == 2_000_000 and abs(secs - 0.02) < 1e-9 and abs(rate - 1e8) < 1e-3
    all_rate, all_secs, all_bytes = busy_rate(list(zip(t, b)), 1e8)
    assert all_bytes == 3_600_000 and abs(all_secs - 0.06) < 1e-9 and all_rate < rate
    assert interior_rate([(0.0, 0), (0.01, 1_000_000)], 1e8) == (0.0, 0.0, 0)


def test_link_sampler_reads_both_directions_of_an_interface():
    """On loopback what is sent is received: both counters move by at least the bytes sent."""
    import socket
    import time

    from psrec.cluster.counters import LinkSampler

    s = LinkSampler(["lo"], interval_s=0.001).start()
    time.sleep(0.01)  # its first samples are in before the bytes go
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        for _ in range(50):
            tx.sendto(b"x" * 1000, ("127.0.0.1", 9))  # discard port: nothing needs to listen
        time.sleep(0.02)
    s.stop()
    sent, got = s.node(0), s.node_received(0)
    assert len(sent) == len(got) >= 2 and [t for t, _ in sent] == [t for t, _ in got]
    assert sent[-1][1] - sent[0][1] >= 50_000 and got[-1][1] - got[0][1] >= 50_000


def _can_make_namespaces() -> bool:
    """Root, iproute2, and a kernel/container that lets us make a network namespace (a root
    shell in an unprivileged container cannot)."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return False
    probe = f"psrec-probe-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, timeout=30).returncode == 0
    if made:
        subprocess.run(["ip", "netns", "delete", probe], capture_output=True, timeout=30)
    return made


@pytest.mark.skipif(not _can_make_namespaces(), reason="makes a network namespace and links: needs root, "
                                                      "iproute2 and CAP_NET_ADMIN/CAP_SYS_ADMIN")
def test_down_after_a_crash_removes_what_the_state_file_names(monkeypatch):
    """`up` died after the bridge, one namespace and its link were made (no Ray yet): `down`
    reads the state file written before each step and removes all of it."""
    import tempfile
    from dataclasses import asdict

    from psrec.cluster import down
    from psrec.cluster.netns import add_bridge, add_netns, add_node_link, link_exists, netns_exists

    monkeypatch.setenv("PSREC_CLUSTER_DIR", tempfile.mkdtemp(prefix="psr", dir="/tmp"))
    cfg = TestbedConfig(nodes=2, name="crash", subnet=251)
    bridge, nodes = node_names(cfg)
    save_state(TestbedState("crash", asdict(cfg), bridge, "10.200.251.0/24", nodes, ""))
    try:
        add_bridge(bridge)
        add_netns(nodes[0].netns)
        add_node_link(nodes[0].host_if, nodes[0].peer_if, nodes[0].netns, f"{nodes[0].ip}/24", bridge)
        assert netns_exists(nodes[0].netns) and link_exists(nodes[0].host_if) and link_exists(bridge)
    finally:
        assert down("crash", log=lambda *_: None)
    assert not netns_exists(nodes[0].netns) and not link_exists(nodes[0].host_if) and not link_exists(bridge)
    assert load_state("crash") is None
