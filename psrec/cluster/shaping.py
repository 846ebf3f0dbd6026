"""Link shaping with tc: a token bucket (tbf) on both ends of a node's veth, so the node sends
and receives at most `rate` each way (a full-duplex NIC on a non-blocking switch), and netem
delay in front of it where the kernel has sch_netem.

Without sch_netem (this machine's kernel has none, and no module directory to load one from)
Linux has no qdisc that delays packets, so the links carry the rate only: `up` says so, records
`latency_applied = false` in the state file, and `psrec cluster status` prints the `--net
latency=...` to add, with which psrec's computed model (`psrec.net`) books the delay per call
apart from the measured time. Nothing pretends the wire was delayed.

Token bucket sizes (tbf(8)): the bucket must hold at least one of the veth's largest (GSO,
64 KiB) packets or tbf has to split them; 1 ms at the rate beyond that. The queue holds 50 ms
at the rate: deep enough that an incast of a few TCP flows at a PS is queued, not dropped.
"""
from __future__ import annotations

from dataclasses import dataclass

from psrec.cluster.config import TestbedError
from psrec.cluster.netns import _run

__all__ = ["Bucket", "bucket_for", "tbf_args", "netem_args", "shape_link", "netem_unavailable"]

_GSO_BYTES = 64 << 10
_BURST_S = 1e-3
_QUEUE_S = 50e-3


@dataclass(frozen=True)
class Bucket:
    """tbf parameters: rate (bit/s), bucket (bytes), queue limit (bytes)."""

    rate_bits: int
    burst: int
    limit: int


def bucket_for(rate_bytes_per_s: float) -> Bucket:
    """The bucket and queue for a link of `rate_bytes_per_s`.

    >>> bucket_for(125e6)   # 1 Gbit: 125 KB bucket, 50 ms queue
    Bucket(rate_bits=1000000000, burst=125000, limit=6375000)
    """
    burst = max(_GSO_BYTES + 1514, int(rate_bytes_per_s * _BURST_S))
    return Bucket(int(rate_bytes_per_s * 8), burst, int(rate_bytes_per_s * _QUEUE_S) + burst)


def tbf_args(dev: str, b: Bucket, netns: str = "", parent: str = "root") -> list[str]:
    ns = ["-n", netns] if netns else []
    where = ["root"] if parent == "root" else ["parent", parent]
    return ["tc", *ns, "qdisc", "replace", "dev", dev, *where, "tbf", "rate", f"{b.rate_bits}bit",
            "burst", str(b.burst), "limit", str(b.limit)]


def netem_args(dev: str, delay_s: float, netns: str = "") -> list[str]:
    ns = ["-n", netns] if netns else []
    return ["tc", *ns, "qdisc", "replace", "dev", dev, "root", "handle", "1:", "netem", "delay",
            f"{delay_s * 1e6:.0f}us", "limit", "100000"]


def netem_unavailable(stderr: str) -> bool:
    """tc's answer when the kernel has no sch_netem."""
    return "unknown" in stderr.lower() or "no such file" in stderr.lower()


def shape_link(host_if: str, netns: str, rate_bytes_per_s: float, latency_s: float = 0.0) -> bool:
    """Shape both directions of one node's link; returns whether the delay could be applied.
    `latency_s` is one-way node to node: half of it on each of the path's two egresses."""
    b = bucket_for(rate_bytes_per_s)
    ends = [(host_if, ""), ("eth0", netns)]
    delayed = False
    if latency_s > 0:
        r = _run(netem_args(host_if, latency_s / 2), check=False)
        if r.returncode == 0:
            _run(netem_args("eth0", latency_s / 2, netns))
            delayed = True
        elif not netem_unavailable(r.stderr):
            raise TestbedError(f"tc netem on {host_if} failed: {r.stderr.strip()}")
    for dev, ns in ends:
        _run(tbf_args(dev, b, ns, parent="1:1" if delayed else "root"))
    return delayed
