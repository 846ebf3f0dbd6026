"""One Ray node per namespace: `ray start` run inside it (`ip netns exec`), with the node's own
address, its own --temp-dir, and Ray's token auth on; and stopping exactly the processes that
live in the testbed's namespaces (never `ray stop`, which would stop every Ray on the machine).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from psrec.cluster.config import TestbedConfig, TestbedError
from psrec.cluster.netns import netns_pids
from psrec.cluster.state import NodeState

__all__ = ["ray_start_args", "node_env", "start_node", "wait_started", "stop_processes"]


def _ray_bin() -> str:
    here = Path(sys.executable).with_name("ray")  # the ray of the interpreter running psrec
    return str(here) if here.exists() else "ray"


def ray_start_args(node: NodeState, cfg: TestbedConfig, head_address: str = "") -> list[str]:
    """`ray start` for `node`: the head when `head_address` is empty, else a node joining it."""
    args = [_ray_bin(), "start", f"--node-ip-address={node.ip}", f"--num-cpus={cfg.cpus_per_node:g}",
            f"--object-store-memory={cfg.object_store_mb << 20}", f"--temp-dir={node.temp_dir}",
            "--disable-usage-stats", "--num-gpus=0"]
    if head_address:
        return [*args, f"--address={head_address}"]
    return [*args, "--head", f"--port={cfg.port}", "--include-dashboard=false"]


def node_env(token_path: str) -> dict[str, str]:
    """The environment of every process of the testbed: token auth with the testbed's own
    token file (not ~/.ray/auth_token, which other users' local Rays would pick up)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    # GLOO_SOCKET_IFNAME: gloo (collective ranks, hybrid PS workers) would bind the address the
    # host name resolves to, 127.0.0.1, which inside each namespace is that node's own loopback
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=token_path, RAY_USAGE_STATS_ENABLED="0",
               OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="eth0")
    return env


def start_node(node: NodeState, cfg: TestbedConfig, token_path: str, head_address: str = "") -> subprocess.Popen:
    """Launch `ray start` in the node's namespace (it returns once the node's daemons run)."""
    Path(node.temp_dir).mkdir(parents=True, exist_ok=True)
    log = open(Path(node.temp_dir) / "ray-start.log", "w")  # noqa: SIM115 - the child owns it
    return subprocess.Popen(["ip", "netns", "exec", node.netns, *ray_start_args(node, cfg, head_address)],
                            stdout=log, stderr=subprocess.STDOUT, env=node_env(token_path), start_new_session=True)


def wait_started(procs: dict[int, subprocess.Popen], nodes: list[NodeState], deadline: float) -> None:
    """Wait for every `ray start`; a failure names the node and the last line of its log."""
    for i, p in procs.items():
        try:
            rc = p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired as e:
            p.kill()
            raise TestbedError(f"node {i}: `ray start` did not finish in time (log: {nodes[i].temp_dir}/"
                               "ray-start.log)") from e
        if rc != 0:
            tail = (Path(nodes[i].temp_dir) / "ray-start.log").read_text().strip().splitlines()[-1:]
            raise TestbedError(f"node {i}: `ray start` failed (rc {rc}): {tail[0] if tail else '?'} "
                               f"(log: {nodes[i].temp_dir}/ray-start.log)")


def stop_processes(netns_names: list[str], patience_s: float = 10.0) -> int:
    """SIGTERM every process in the testbed's namespaces, then SIGKILL what is left after
    `patience_s`; returns how many were signalled. Only those namespaces' processes: the
    nodes this testbed started and whatever they or a joined driver started there."""
    pids = {p for ns in netns_names for p in netns_pids(ns)}
    for p in pids:
        _signal(p, signal.SIGTERM)
    deadline = time.monotonic() + patience_s
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.2)
    for p in pids:
        if _alive(p):
            _signal(p, signal.SIGKILL)
    return len(pids)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is gone, only not yet reaped
    except (FileNotFoundError, IndexError):
        return False
