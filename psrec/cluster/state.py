"""The testbed's state file: every namespace, link and directory `up` makes, written before
it is made, so that `down` can remove all of it even after `up` or the machine's user crashed.

    <root>/<name>/state.json   this record (root: $PSREC_CLUSTER_DIR, default /tmp/psrec-cluster)
    <root>/<name>/token        Ray's auth token (0600)
    <root>/<name>/n<i>/        node i's Ray --temp-dir (its logs, sockets, session)
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from psrec.cluster.config import TestbedConfig, TestbedError

__all__ = ["NodeState", "TestbedState", "state_root", "state_path", "load_state", "save_state", "all_states",
           "node_names"]


def state_root() -> Path:
    return Path(os.environ.get("PSREC_CLUSTER_DIR", "/tmp/psrec-cluster"))


def state_path(name: str) -> Path:
    return state_root() / name / "state.json"


@dataclass
class NodeState:
    """One node: its namespace, the host end of its veth (whose counters give the node's
    traffic: the host end's rx is the node's tx), its address and Ray temp dir."""

    index: int
    netns: str
    host_if: str
    peer_if: str  # the node end's name before it moves into the namespace and becomes `eth0`
    ip: str
    temp_dir: str
    ray_started: bool = False


@dataclass
class TestbedState:
    """What exists (or may: written before each step) for one testbed."""

    __test__ = False  # not a pytest class, despite the name

    name: str
    config: dict
    bridge: str
    subnet: str  # "10.200.S.0/24"
    nodes: list[NodeState] = field(default_factory=list)
    token_path: str = ""
    address: str = ""  # "ip:port" of the head's GCS, once it is up
    latency_applied: bool = False  # False: no sch_netem, the links carry rate only
    up_seconds: float = 0.0
    complete: bool = False  # True once every node has joined

    @property
    def head(self) -> NodeState:
        return self.nodes[0]

    def node_of_ip(self, ip: str) -> NodeState | None:
        return next((n for n in self.nodes if n.ip == ip), None)

    @property
    def cfg(self) -> TestbedConfig:
        return TestbedConfig(**self.config)


def node_names(cfg: TestbedConfig) -> tuple[str, list[NodeState]]:
    """The bridge name and every node's names and address (pure: no system call)."""
    base = f"psr{cfg.name}"
    root = state_root() / cfg.name
    nodes = [NodeState(i, f"psrec-{cfg.name}-n{i}", f"{base}-h{i}", f"{base}-p{i}", f"10.200.{cfg.subnet}.{i + 1}",
                       str(root / f"n{i}")) for i in range(cfg.nodes)]
    return f"{base}-br", nodes


def save_state(st: TestbedState) -> None:
    """Write atomically (rename), so that a crash mid-write leaves the previous record."""
    p = state_path(st.name)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(st), indent=1))
    os.replace(tmp, p)


def load_state(name: str) -> TestbedState | None:
    p = state_path(name)
    if not p.is_file():
        return None
    try:
        d = json.loads(p.read_text())
        nodes = [NodeState(**n) for n in d.pop("nodes")]
        return TestbedState(**d, nodes=nodes)
    except (ValueError, TypeError, KeyError) as e:
        raise TestbedError(f"{p}: unreadable testbed state ({e}); remove its namespaces with `ip netns del`") from e


def all_states() -> list[TestbedState]:
    root = state_root()
    if not root.is_dir():
        return []
    return [s for s in (load_state(d.name) for d in sorted(root.iterdir()) if (d / "state.json").is_file()) if s]
