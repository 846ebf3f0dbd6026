"""`TestbedConfig`: the shape of a testbed of Ray nodes in network namespaces on one machine."""
from __future__ import annotations

import re
from dataclasses import dataclass

from psrec.net import parse_bandwidth, parse_duration

__all__ = ["TestbedConfig", "TestbedError"]

_NAME = re.compile(r"^[a-z0-9]{1,6}$")  # interface names are <= 15 bytes: "psr<name>-h<i>" must fit


class TestbedError(RuntimeError):
    """A testbed that cannot be made, found or removed; the message is one line for the user."""

    __test__ = False  # not a pytest class, despite the name


@dataclass(frozen=True)
class TestbedConfig:
    """N Ray nodes, one per network namespace, each behind a shaped link to one bridge.

    Args:
        nodes: Ray nodes (namespaces); the head is node 0.
        bandwidth: each node's link rate, both directions, e.g. "1Gbit" (`psrec.net` units).
        latency: one-way node-to-node delay, e.g. "200us" ("" = none). Needs sch_netem in the
            kernel; without it the links carry no delay and `up` says so (see `shaping.py`).
        cpus_per_node: logical CPUs each Ray node offers (Ray schedules by these; the OS shares
            the machine's cores among all nodes).
        object_store_mb: each node's shared-memory object store (MiB).
        name: the testbed's name: namespaces, interfaces and the state directory carry it.
        subnet: the third octet of the testbed's private 10.200.<subnet>.0/24.
        port: the head's GCS port (inside its own namespace, so it never meets another Ray).
        ready_timeout_s: how long `up` waits for every node to join before giving up.

    Example:
        >>> TestbedConfig(nodes=4, bandwidth="1Gbit").rate_bytes_per_s
        125000000.0
    """

    nodes: int = 4
    bandwidth: str = "1Gbit"  # the testbed: a commodity datacentre NIC
    latency: str = ""
    cpus_per_node: float = 2.0  # a PS or worker actor asks for 0.25-0.5: a few actors per node
    object_store_mb: int = 256  # PS payloads are MBs; N nodes' stores share /dev/shm
    name: str = "tb"
    subnet: int = 0
    port: int = 6379
    ready_timeout_s: float = 90.0

    __test__ = False  # not a pytest class, despite the name

    def __post_init__(self) -> None:
        if not 1 <= self.nodes <= 64:
            raise ValueError(f"cluster nodes must be 1..64, got {self.nodes}")
        if not _NAME.match(self.name):
            raise ValueError(f"cluster name must be 1-6 of [a-z0-9], got {self.name!r}")
        if not 0 <= self.subnet <= 255:
            raise ValueError(f"cluster subnet must be 0..255 (10.200.<subnet>.0/24), got {self.subnet}")
        if self.cpus_per_node <= 0 or self.object_store_mb < 64:
            raise ValueError("cluster cpus_per_node must be > 0 and object_store_mb >= 64 (Ray's minimum is ~75 MB)")
        rate = parse_bandwidth(self.bandwidth, "--bandwidth")
        if not 0 < rate < float("inf"):
            raise ValueError(f"--bandwidth must be a finite rate, got {self.bandwidth!r}")
        if self.latency and parse_duration(self.latency, "--latency") < 0:
            raise ValueError(f"--latency must be >= 0, got {self.latency!r}")

    @property
    def rate_bytes_per_s(self) -> float:
        return parse_bandwidth(self.bandwidth, "--bandwidth")

    @property
    def latency_s(self) -> float:
        return parse_duration(self.latency, "--latency") if self.latency else 0.0
