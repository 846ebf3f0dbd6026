"""The design note's question: the same model on GPU jobs of several sizes against a CPU cluster.

For each hardware and GPU count, the planner's placement (`psrec.sim.placement.plan`) gives
the step; throughput = n B / T. `gpus_needed` finds the smallest job that reaches a target
throughput (samples/s) and fits, assuming throughput grows with n (it searches 1..8, then
whole nodes by bisection). Cost per 1M samples = nodes * $/node-hour / 3600 / throughput * 1e6.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from psrec.sim.config import SimSpec
from psrec.sim.hardware import get_hardware
from psrec.sim.placement import GPUPlanCost, plan, with_gpus

__all__ = ["GPURow", "gpu_row", "gpus_needed", "cost_per_million", "gpu_batch"]


def gpu_batch(spec: SimSpec) -> SimSpec:
    """`spec` with the GPU jobs' batch per GPU (`gpu.batch_size`, when set)."""
    if not spec.gpu.batch_size:
        return spec
    return replace(spec, model=replace(spec.model, batch_size=spec.gpu.batch_size))


def cost_per_million(nodes: int, price_per_node_hour: float, samples_per_s: float) -> float:
    """$ per 1M samples (nan when the price is unknown).

    >>> cost_per_million(2, 36.0, 1e6)     # 2 nodes at $36/h: $0.02 a second, one second per 1M
    0.02
    """
    if not price_per_node_hour or not samples_per_s > 0:
        return math.nan
    return nodes * price_per_node_hour / 3600 / samples_per_s * 1e6


@dataclass(frozen=True)
class GPURow:
    """One GPU job of the comparison."""

    hardware: str
    gpus: int
    cost: GPUPlanCost
    baseline: float  # samples/s of the CPU cluster
    price_per_node_hour: float
    devices_per_node: int = 8
    show_host: bool = False  # a host_ms column: the GPU idling for the script's host work (framework_cost)

    @property
    def nodes(self) -> int:
        return math.ceil(self.gpus / self.devices_per_node)

    def as_row(self) -> dict[str, Any]:
        s = self.cost.step
        row = {"hardware": self.hardware, "gpus": self.gpus, "step_ms": 1e3 * s.total, "compute_ms": 1e3 * s.compute,
               "lookup_ms": 1e3 * s.apply, "alltoall_ms": 1e3 * s.alltoall, "allreduce_ms": 1e3 * s.allreduce,
               **({"host_ms": 1e3 * s.wait} if self.show_host else {}),
               "comm_pct": 100 * s.comm_fraction, "samples_per_s": s.throughput,
               "x_cpu": s.throughput / self.baseline if self.baseline > 0 else math.nan,
               "HBM_GB_per_gpu": self.cost.hbm_per_gpu / 1e9, "host_GB_per_gpu": self.cost.host_per_gpu / 1e9,
               "fits": "yes" if self.cost.fits else "NO"}
        if self.price_per_node_hour:
            row["usd_per_1M"] = cost_per_million(self.nodes, self.price_per_node_hour, s.throughput)
        return row


def gpu_row(spec: SimSpec, hardware: str, gpus: int, baseline: float) -> GPURow:
    """The planned job of `gpus` GPUs of `hardware` for `spec`'s model and batch per GPU."""
    h = get_hardware(hardware, spec.hardware)
    price = spec.cluster.price_per_node_hour or h.price_per_node_hour
    return GPURow(hardware, gpus, plan(with_gpus(spec, gpus, hardware)), baseline, price, h.devices_per_node,
                  spec.gpu.implementation != "ideal")


def gpus_needed(spec: SimSpec, hardware: str, target: float) -> int | None:
    """Smallest GPU count whose fitting plan reaches `target` samples/s (None: not within
    `gpu.max_gpus`)."""
    h = get_hardware(hardware, spec.hardware)
    cache: dict[int, bool] = {}

    def ok(n: int) -> bool:
        if n not in cache:
            c = plan(with_gpus(spec, n, hardware))
            cache[n] = c.fits and c.step.throughput >= target
        return cache[n]

    g = h.devices_per_node
    for n in range(1, min(g, spec.gpu.max_gpus) + 1):
        if ok(n):
            return n
    lo, hi = 1, 2  # in nodes: lo fails (a whole node was tried above)
    while hi * g <= spec.gpu.max_gpus and not ok(hi * g):
        lo, hi = hi, hi * 2
    if hi * g > spec.gpu.max_gpus:
        hi = spec.gpu.max_gpus // g
        if hi <= lo or not ok(hi * g):
            return None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if not ok(mid * g) else (lo, mid)
    return hi * g
