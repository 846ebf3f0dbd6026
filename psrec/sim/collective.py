"""Collective operations under the alpha-beta model, and the nccl-tests bandwidth definitions.

Per link: a message of b bytes costs alpha + b * beta (alpha = latency, beta = 1/bandwidth).
Algorithms and their costs, n ranks, S bytes (R. Thakur, R. Rabenseifner, W. Gropp,
"Optimization of Collective Communication Operations in MPICH", IJHPCA 19(1), 2005, sec. 3-4;
P. Patarasuk, X. Yuan, "Bandwidth optimal all-reduce algorithms for clusters of
workstations", JPDC 69(2), 2009):

    ring all-reduce (reduce-scatter + all-gather)  2(n-1) alpha + 2 (n-1)/n S beta
    binomial-tree all-reduce (reduce + broadcast)  2 ceil(log2 n) (alpha + S beta)
    ring reduce-scatter / all-gather               (n-1) alpha + (n-1)/n S beta     (S = total size)
    pairwise-exchange all-to-all                   (n-1) alpha + (n-1)/n S beta
                                                   (S = bytes each rank sends, itself included)

Ranks sit `g` to a node; one NIC per node (the CPU clusters this project models). A flat
ring crosses each node boundary once per direction, so every step runs at the slowest link's
alpha and beta (what nccl-tests reports as bus bandwidth = the bottleneck link). A flat
all-to-all pushes g (n-g)/n S bytes of each node through its NIC.

Hierarchical variants:
- all-reduce: intra-node reduce-scatter, inter-node ring all-reduce of the node's S bytes
  (the g slices as g concurrent rings through the one NIC), intra-node all-gather
  (H. Mikami et al., "Massively Distributed SGD: ImageNet/ResNet-50 Training in a Flash",
  2018, 2D-torus all-reduce; X. Jia et al., "Highly Scalable Deep Learning Training System
  with Mixed-Precision", 2018, hierarchical all-reduce);
- all-to-all: intra-node all-to-all that gathers each destination node's data on one local
  rank, then an inter-node all-to-all among N nodes with g-times larger messages
  (C. Hwang et al., "Tutel: Adaptive Mixture-of-Experts at Scale", MLSys 2023, 2D
  hierarchical all-to-all): N-1 instead of n-1 inter-node messages.

Bus bandwidth (nccl-tests, doc/PERFORMANCE.md, https://github.com/NVIDIA/nccl-tests):
algbw = S / t; busbw = algbw * 2(n-1)/n for all-reduce, algbw * (n-1)/n for all-gather,
reduce-scatter and all-to-all, algbw for broadcast/reduce. With the ring formulas above and
alpha = 0, busbw equals the link bandwidth: the number the definition was made to show.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from psrec.net import NetConfig

__all__ = ["CollectiveCost", "bus_factor", "allreduce_cost", "alltoall_cost", "reduce_scatter_cost",
           "allgather_cost"]

_BUS_FACTOR = {
    "allreduce": lambda n: 2 * (n - 1) / n,
    "allgather": lambda n: (n - 1) / n,
    "reducescatter": lambda n: (n - 1) / n,
    "alltoall": lambda n: (n - 1) / n,
    "broadcast": lambda n: 1.0,
    "reduce": lambda n: 1.0,
}


def bus_factor(op: str, n: int) -> float:
    """busbw / algbw for `op` on n ranks (nccl-tests PERFORMANCE.md).

    >>> bus_factor("allreduce", 4), bus_factor("alltoall", 4)
    (1.5, 0.75)
    """
    if op not in _BUS_FACTOR:
        raise ValueError(f"unknown collective {op!r}; known: {', '.join(_BUS_FACTOR)}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return _BUS_FACTOR[op](n)


@dataclass(frozen=True)
class CollectiveCost:
    """One collective's time (seconds) split into its latency and bandwidth terms.

    Args:
        op: allreduce, alltoall, reducescatter or allgather.
        algorithm: ring, tree, hierarchical, flat.
        ranks: n.
        size: S in bytes, as nccl-tests defines it for `op`.
        latency: the alpha terms (seconds).
        transfer: the beta terms (seconds).
    """

    op: str
    algorithm: str
    ranks: int
    size: float
    latency: float
    transfer: float

    @property
    def time(self) -> float:
        return self.latency + self.transfer

    @property
    def algbw(self) -> float:
        """S / t in bytes/s (inf when t = 0)."""
        return self.size / self.time if self.time > 0 else math.inf

    @property
    def busbw(self) -> float:
        """algbw * the nccl-tests bus factor of `op`, bytes/s."""
        return self.algbw * bus_factor(self.op, self.ranks)


def _check(n: int, size: float, per_node: int) -> None:
    if n < 1 or per_node < 1:
        raise ValueError(f"ranks and ranks per node must be >= 1, got {n}, {per_node}")
    if size < 0:
        raise ValueError(f"size must be >= 0 bytes, got {size}")


def _flat_link(net: NetConfig, n: int, per_node: int) -> tuple[float, float]:
    """(bandwidth, latency) of the slowest link a flat algorithm uses."""
    if n <= per_node:  # one node: everything is intra-node
        return net.link(intra=True)
    bw_i, lat_i = net.link(intra=True)
    bw_e, lat_e = net.link(intra=False)
    return (min(bw_e, bw_i), max(lat_e, lat_i)) if per_node > 1 else (bw_e, lat_e)


def reduce_scatter_cost(net: NetConfig, n: int, size: float, per_node: int = 1) -> CollectiveCost:
    """Ring reduce-scatter of S = `size` total bytes: (n-1) alpha + (n-1)/n S beta.

    >>> c = reduce_scatter_cost(NetConfig(bandwidth=1e9, latency=1e-5), 4, 4e6)
    >>> round(c.latency, 9), round(c.transfer, 9)      # 3 * 10us, 3/4 * 4MB / 1GB/s
    (3e-05, 0.003)
    """
    _check(n, size, per_node)
    bw, lat = _flat_link(net, n, per_node)
    return CollectiveCost("reducescatter", "ring", n, size, (n - 1) * lat, (n - 1) / n * size / bw)


def allgather_cost(net: NetConfig, n: int, size: float, per_node: int = 1) -> CollectiveCost:
    """Ring all-gather of S = `size` total bytes: (n-1) alpha + (n-1)/n S beta."""
    c = reduce_scatter_cost(net, n, size, per_node)
    return CollectiveCost("allgather", "ring", n, size, c.latency, c.transfer)


def allreduce_cost(net: NetConfig, n: int, size: float, algorithm: str = "ring",
                   per_node: int = 1) -> CollectiveCost:
    """All-reduce of `size` bytes on n ranks, `per_node` ranks a node (formulas in the module doc).

    `algorithm`: ring, tree, hierarchical, or auto (the fastest of the three).

    >>> net = NetConfig(bandwidth=1e9, latency=1e-5)
    >>> c = allreduce_cost(net, 4, 4e6)                # 2*3*10us, 2*3/4 * 4MB / 1GB/s
    >>> round(c.latency, 9), round(c.transfer, 9), round(c.busbw / 1e9, 3)
    (6e-05, 0.006, 0.99)
    """
    _check(n, size, per_node)
    if algorithm == "auto":
        return min((allreduce_cost(net, n, size, a, per_node) for a in ("ring", "tree", "hierarchical")),
                   key=lambda c: c.time)
    if n == 1:
        return CollectiveCost("allreduce", algorithm, 1, size, 0.0, 0.0)
    if algorithm == "ring":
        bw, lat = _flat_link(net, n, per_node)
        return CollectiveCost("allreduce", "ring", n, size, 2 * (n - 1) * lat, 2 * (n - 1) / n * size / bw)
    if algorithm == "tree":
        bw, lat = _flat_link(net, n, per_node)
        steps = 2 * math.ceil(math.log2(n))
        return CollectiveCost("allreduce", "tree", n, size, steps * lat, steps * size / bw)
    if algorithm == "hierarchical":
        g = min(per_node, n)
        nodes = math.ceil(n / g)
        bw_i, lat_i = net.link(intra=True)
        bw_e, lat_e = net.link(intra=False)
        # intra reduce-scatter + intra all-gather: 2 (g-1) alpha_i + 2 (g-1)/g S beta_i
        lat = 2 * (g - 1) * lat_i
        xfer = 2 * (g - 1) / g * size / bw_i
        if nodes > 1:
            # inter-node ring all-reduce of the node's S bytes through its NIC
            lat += 2 * (nodes - 1) * lat_e
            xfer += 2 * (nodes - 1) / nodes * size / bw_e
        return CollectiveCost("allreduce", "hierarchical", n, size, lat, xfer)
    raise ValueError(f"unknown all-reduce algorithm {algorithm!r}; known: ring, tree, hierarchical, auto")


def alltoall_cost(net: NetConfig, n: int, size: float, algorithm: str = "flat",
                  per_node: int = 1) -> CollectiveCost:
    """All-to-all where each rank sends `size` bytes in total (1/n to each rank, itself included).

    flat (pairwise exchange): (n-1) alpha + the slower of the intra-node part (g-1)/n S beta_i
    and the node NIC's part g (n-g)/n S beta_e; with g = 1: (n-1) alpha + (n-1)/n S beta.
    hierarchical: (g-1) alpha_i + (g-1)/g S beta_i + (N-1) alpha_e + g (N-1)/N S beta_e.

    >>> c = alltoall_cost(NetConfig(bandwidth=1e9, latency=1e-5), 4, 4e6)   # 3*10us, 3/4*4MB/1GB/s
    >>> round(c.latency, 9), round(c.transfer, 9)
    (3e-05, 0.003)
    """
    _check(n, size, per_node)
    if n == 1:
        return CollectiveCost("alltoall", algorithm, 1, size, 0.0, 0.0)
    g = min(per_node, n)
    nodes = math.ceil(n / g)
    bw_i, lat_i = net.link(intra=True)
    bw_e, lat_e = net.link(intra=False)
    if algorithm == "flat":
        if nodes == 1:
            return CollectiveCost("alltoall", "flat", n, size, (n - 1) * lat_i, (n - 1) / n * size / bw_i)
        intra = (g - 1) / n * size / bw_i
        inter = g * (n - g) / n * size / bw_e
        lat = (n - 1) * (max(lat_e, lat_i) if g > 1 else lat_e)
        return CollectiveCost("alltoall", "flat", n, size, lat, max(intra, inter))
    if algorithm == "hierarchical":
        lat = (g - 1) * lat_i + (nodes - 1) * lat_e
        xfer = (g - 1) / g * size / bw_i + g * (nodes - 1) / nodes * size / bw_e
        return CollectiveCost("alltoall", "hierarchical", n, size, lat, xfer)
    raise ValueError(f"unknown all-to-all algorithm {algorithm!r}; known: flat, hierarchical")
