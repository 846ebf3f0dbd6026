"""Bring a testbed up, report it, take it down; and let a driver in this process join it.

    up(cfg)      state file first, then: bridge; per node a namespace, a veth on the bridge,
                 tc on both ends; the head's `ray start`, then the others' in parallel; wait
                 until the head's GCS counts every node alive
    down(name)   every process in the namespaces (TERM, then KILL), the namespaces (and with
                 them the veths), the bridge, the state directory; works from any partial state
    join(addr)   a driver about to `ray.init(addr)`: if `addr` is a testbed's head, enter the
                 head's namespace and take its token, so that this process is on the head node
"""
from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from psrec.cluster import netns, nodes, shaping
from psrec.cluster.config import TestbedConfig, TestbedError
from psrec.cluster.state import TestbedState, all_states, load_state, node_names, save_state, state_root

__all__ = ["up", "down", "reshape", "join", "find_by_address", "gcs_alive_nodes", "interface_bytes"]


def up(cfg: TestbedConfig, log=print) -> TestbedState:
    """Make the testbed of `cfg`; on any failure take down what was made and raise."""
    netns.require_root("psrec cluster up")
    old = load_state(cfg.name)
    if old is not None and old.complete:
        raise TestbedError(f"testbed {cfg.name} is already up at {old.address}; `psrec cluster down` first")
    if old is not None:
        log(f"testbed {cfg.name}: removing the leftovers of an earlier `up` first")
        down(cfg.name, log=lambda *_: None)
    for other in all_states():
        if other.name != cfg.name and other.subnet == f"10.200.{cfg.subnet}.0/24":
            raise TestbedError(f"testbed {other.name} already uses 10.200.{cfg.subnet}.0/24; pick --subnet")
    t0 = time.monotonic()
    bridge, nlist = node_names(cfg)
    longest = len(nlist[-1].temp_dir) + len("/session_2026-01-01_00-00-00_000000_4194304/sockets/plasma_store")
    if longest > 107:  # AF_UNIX paths: Ray's sockets live under each node's temp dir
        raise TestbedError(f"state directory {state_root()} is too long for Ray's socket paths ({longest} > 107 "
                           "bytes); set PSREC_CLUSTER_DIR to a shorter path")
    root = state_root() / cfg.name
    st = TestbedState(cfg.name, asdict(cfg), bridge, f"10.200.{cfg.subnet}.0/24", nlist, str(root / "token"))
    save_state(st)  # before anything exists: `down` reads it to know what to remove
    try:
        _make(st, cfg, log)
    except BaseException:
        log(f"testbed {cfg.name}: start-up failed; taking down what was made")
        down(cfg.name, log=lambda *_: None)
        raise
    st.up_seconds = time.monotonic() - t0
    st.complete = True
    save_state(st)
    return st


def _make(st: TestbedState, cfg: TestbedConfig, log) -> None:
    fd = os.open(st.token_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    for n in st.nodes:
        if netns.netns_exists(n.netns) or netns.link_exists(n.host_if):
            raise TestbedError(f"namespace {n.netns} or link {n.host_if} already exists, not made by this "
                               f"testbed's state file; remove it by hand (`ip netns del {n.netns}`)")
    netns.add_bridge(st.bridge)
    for n in st.nodes:
        netns.add_netns(n.netns)
        netns.add_node_link(n.host_if, n.peer_if, n.netns, f"{n.ip}/24", st.bridge)
        st.latency_applied = shaping.shape_link(n.host_if, n.netns, cfg.rate_bytes_per_s, cfg.latency_s)
    if cfg.latency_s > 0 and not st.latency_applied:
        log(f"warning: this kernel has no sch_netem: the links are shaped to {cfg.bandwidth} but carry NO "
            f"{cfg.latency} delay; add it to jobs with psrec's computed model: --net latency={cfg.latency}")
    save_state(st)
    deadline = time.monotonic() + cfg.ready_timeout_s
    head = st.head
    nodes.wait_started({0: nodes.start_node(head, cfg, st.token_path)}, st.nodes, deadline)
    st.address = f"{head.ip}:{cfg.port}"
    head.ray_started = True
    save_state(st)
    procs = {n.index: nodes.start_node(n, cfg, st.token_path, st.address) for n in st.nodes[1:]}
    for n in st.nodes[1:]:
        n.ray_started = True  # recorded as soon as it may be running: `down` finds it by namespace anyway
    save_state(st)
    nodes.wait_started(procs, st.nodes, deadline)
    while True:
        alive = gcs_alive_nodes(st, timeout_s=max(1.0, deadline - time.monotonic()))
        if alive == cfg.nodes:
            return
        if time.monotonic() > deadline:
            raise TestbedError(f"only {alive} of {cfg.nodes} Ray nodes joined in {cfg.ready_timeout_s:.0f} s "
                               f"(logs under {state_root() / cfg.name})")
        time.sleep(0.5)


def reshape(name: str, bandwidth: str) -> TestbedState:
    """Change the rate of every link of a running testbed (tc replaces the token buckets in place;
    Ray and its connections stay up)."""
    netns.require_root("psrec cluster reshape")
    st = load_state(name)
    if st is None or not st.complete:
        raise TestbedError(f"no testbed {name} is up")
    cfg = TestbedConfig(**{**st.config, "bandwidth": bandwidth})
    for n in st.nodes:
        shaping.shape_link(n.host_if, n.netns, cfg.rate_bytes_per_s, cfg.latency_s if st.latency_applied else 0.0)
    st.config = asdict(cfg)
    save_state(st)
    return st


def gcs_alive_nodes(st: TestbedState, timeout_s: float = 20.0) -> int:
    """Alive nodes as the head's GCS counts them (-1: no answer), asked from the head's namespace."""
    code = ("from ray._raylet import GcsClient\n"
            f"c = GcsClient(address={st.address!r})\n"
            "print(sum(1 for n in c.get_all_node_info(timeout=5).values() if n.state == 0))")
    try:
        r = subprocess.run(["ip", "netns", "exec", st.head.netns, sys.executable, "-c", code], capture_output=True,
                           text=True, timeout=timeout_s, env=nodes.node_env(st.token_path))
    except subprocess.TimeoutExpired:
        return -1
    lines = r.stdout.strip().splitlines()
    return int(lines[-1]) if r.returncode == 0 and lines and lines[-1].isdigit() else -1


def down(name: str, log=print) -> bool:
    """Remove testbed `name` and everything it made; False if there was no such testbed."""
    st = load_state(name)
    if st is None:
        return False
    netns.require_root("psrec cluster down")
    names = [n.netns for n in st.nodes]
    killed = nodes.stop_processes(names)
    killed += nodes.stop_processes(names, patience_s=2.0)  # anything a dying raylet started meanwhile
    for n in st.nodes:
        netns.delete_netns(n.netns)
        netns.delete_link(n.host_if)  # normally gone with its peer; not if the move into the namespace failed
        netns.delete_link(n.peer_if)
    netns.delete_link(st.bridge)
    left = [n.netns for n in st.nodes if netns.netns_exists(n.netns)] + \
           [d for d in [st.bridge, *(n.host_if for n in st.nodes)] if netns.link_exists(d)]
    if left:
        raise TestbedError(f"testbed {name}: could not remove {', '.join(left)}; the state file is kept")
    shutil.rmtree(state_root() / name, ignore_errors=True)
    log(f"testbed {name} down: {killed} processes stopped, {len(st.nodes)} namespaces and their links removed")
    return True


def interface_bytes(host_if: str) -> tuple[int, int]:
    """(node tx, node rx) bytes so far, read from the host end of the node's veth (its rx is
    what the node sent). Counts every frame on the wire, headers included, as tbf does."""
    base = Path("/sys/class/net", host_if, "statistics")
    return int((base / "rx_bytes").read_text()), int((base / "tx_bytes").read_text())


def find_by_address(address: str) -> TestbedState | None:
    """The testbed whose head is at `address` (None: none, or its state file is unreadable,
    which `psrec cluster status` reports)."""
    try:
        return next((s for s in all_states() if s.complete and s.address == address), None)
    except TestbedError:
        return None


def join(address: str) -> str | None:
    """Prepare this process to join `address` if it is a testbed's head: token auth from the
    testbed's token file, and this thread moved into the head's namespace (the Ray threads
    `ray.init` starts follow it). Returns the head's node address, None if `address` is no testbed."""
    st = find_by_address(address)
    if st is None:
        return None
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN_PATH"] = st.token_path
    os.environ.pop("RAY_AUTH_TOKEN", None)
    try:  # Ray reads its config once per process: refresh it if ray is already imported
        from ray._raylet import Config

        Config.initialize("")
    except ImportError:
        pass
    netns.enter_netns(st.head.netns)
    return st.head.ip
