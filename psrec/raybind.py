"""Where a local Ray's listeners bind: loopback, never every interface.

A local Ray (one psrec starts for itself) serves only this machine, but on Linux Ray binds
its gRPC servers (GCS, raylet, every worker), its dashboard agent and the agent's metrics
export on 0.0.0.0/[::], without authentication, and reports the node's routable address:
Ray turns "127.0.0.1" into that address on Linux unless clusters are disabled (its
`ENABLE_RAY_CLUSTER`, meant for laptops). With it off while the node starts, each Ray process
is given 127.0.0.1 as its node address, and each of them then binds that address only. PS
gRPC servers bind the node address too (`psrec.ps.grpc_server`), so they follow. A Ray that
psrec joins (`ps.address`) is the operator's: see deploy/README.md for what to firewall.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["LOOPBACK", "loopback_only"]

LOOPBACK = "127.0.0.1"


@contextmanager
def loopback_only() -> Iterator[dict]:
    """While a local Ray starts in this block, its node address is loopback; yields the
    `ray.init` keywords that say so. Ray reads the switch when it resolves the node address
    (`ray._private.services.get_node_ip_address`), so it is restored after the start."""
    from ray._private import ray_constants

    if not hasattr(ray_constants, "ENABLE_RAY_CLUSTER"):  # a Ray without the switch: its own default
        yield {"_node_ip_address": LOOPBACK}
        return
    saved = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield {"_node_ip_address": LOOPBACK}
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved
