"""Hardware presets: the machines the simulator can put a job on, each number with its source.

A `Hardware` is one kind of node: its devices (CPU sockets' worth of cores, or GPUs), their
compute and memory, and the links inside the node and between nodes. `get_hardware(name)`
finds a preset or a user-defined `[[hardware]]` table of the simulate TOML;
`apply_hardware(spec)` puts a preset's network and node shape into a `SimSpec`.

Links are per device and per direction. A GPU node has one InfiniBand NIC per GPU (the
rail-optimised DGX layout), so the node's inter-node bandwidth is `devices_per_node` times the
per-GPU NIC: that aggregate is what `psrec.sim.collective` calls the node's NIC.

    >>> h = get_hardware("h100-ib400")
    >>> h.devices_per_node, h.hbm_bytes / 1e9, h.inter_bandwidth * 8 / 1e9
    (8, 80.0, 400.0)
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

from psrec.net import NetConfig

__all__ = ["Hardware", "PRESETS", "get_hardware", "hardware_names", "apply_hardware"]

_GB = 1e9
_GBIT = 1e9 / 8


@dataclass(frozen=True)
class Hardware:
    """One node type. Units: FLOP/s, bytes, bytes/s (per direction), seconds, $/hour.

    Args:
        name: registry key (`cluster.hardware`).
        kind: `cpu` (a PS-cluster machine: one worker per node) or `gpu`.
        devices_per_node: GPUs per node (cpu: 1, the worker process).
        peak_flops: dense peak per device (GPU: 16-bit tensor cores, `-fp32` presets FP32; CPU: fp32 FMA,
            all sockets).
        mlp_efficiency: share of `peak_flops` the dense MLP's forward + backward reaches.
        hbm_bytes, hbm_bandwidth: device memory per device (CPU: the node's DRAM).
        host_bytes: host DRAM per node (backs an HBM embedding cache); cpu: = hbm_bytes.
        host_bandwidth: host <-> device link per device (PCIe, per direction); cpu: DRAM.
        intra_bandwidth, intra_latency: device <-> device inside a node (NVLink), per device.
        inter_bandwidth, inter_latency: per device NIC across nodes.
        step_overhead: seconds per step whatever the batch (kernel launches, Python).
        hbm_reserve: share of device memory kept for activations, workspace and the runtime.
        price_per_node_hour: $ per node-hour (0 = unknown: no cost column).
        source: where the numbers come from.
    """

    name: str
    kind: Literal["cpu", "gpu"] = "gpu"
    devices_per_node: int = 8
    peak_flops: float = 1e14
    mlp_efficiency: float = 0.4
    hbm_bytes: float = 80 * _GB
    hbm_bandwidth: float = 2e12
    host_bytes: float = 2000 * _GB
    host_bandwidth: float = 25 * _GB
    intra_bandwidth: float = 300 * _GB
    intra_latency: float = 3e-6
    inter_bandwidth: float = 200 * _GBIT
    inter_latency: float = 5e-6
    step_overhead: float = 5e-4
    hbm_reserve: float = 0.1
    price_per_node_hour: float = 0.0
    source: str = "user-defined"

    def __post_init__(self) -> None:
        if self.kind not in ("cpu", "gpu"):
            raise ValueError(f"hardware {self.name!r}: kind must be cpu or gpu, got {self.kind!r}")
        if self.devices_per_node < 1:
            raise ValueError(f"hardware {self.name!r}: devices_per_node must be >= 1")
        for f in ("peak_flops", "hbm_bytes", "hbm_bandwidth", "host_bytes", "host_bandwidth", "intra_bandwidth",
                  "inter_bandwidth"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise ValueError(f"hardware {self.name!r}: {f} must be a number > 0, got {v!r}")
        for f in ("intra_latency", "inter_latency", "step_overhead", "price_per_node_hour"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v >= 0 and math.isfinite(v)):
                raise ValueError(f"hardware {self.name!r}: {f} must be a finite number >= 0, got {v!r}")
        if not 0 < self.mlp_efficiency <= 1:
            raise ValueError(f"hardware {self.name!r}: mlp_efficiency must be in (0, 1], got {self.mlp_efficiency}")
        if not 0 <= self.hbm_reserve < 1:
            raise ValueError(f"hardware {self.name!r}: hbm_reserve must be in [0, 1), got {self.hbm_reserve}")

    def net(self) -> NetConfig:
        """The node's links for `psrec.sim.collective`: inter-node = all the node's NICs."""
        return NetConfig(bandwidth=self.inter_bandwidth * self.devices_per_node, latency=self.inter_latency,
                         intra_bandwidth=self.intra_bandwidth, intra_latency=self.intra_latency)

    @property
    def usable_hbm(self) -> float:
        """Bytes of device memory a plan may fill (after `hbm_reserve`)."""
        return self.hbm_bytes * (1 - self.hbm_reserve)


def _cpu(gbit: int) -> Hardware:
    """A 2017-era CPU PS-cluster machine with a `gbit` Ethernet NIC.

    Dual Xeon E5-2682 v4 (Broadwell, the design note's "no low-precision features"): 2 x 16
    cores x 2.5 GHz x 32 fp32 FLOP/cycle (2 AVX2 FMA units) = 2.56 TFLOP/s (Intel ARK, E5-2682
    v4); 2 x 4 channels DDR4-2400 = 153.6 GB/s; 256 GB DRAM (configs/design_note.toml's PS
    size). TF 1.x Eigen GEMMs at CTR batch sizes: ~15% of peak (the design note's compute
    assumption, 100 GFLOP/s of 8 cores' 640). 50 us one-way kernel TCP inside a datacenter.
    """
    return Hardware(name=f"cpu-xeon2017-{gbit}g", kind="cpu", devices_per_node=1, peak_flops=2.56e12,
                    mlp_efficiency=0.15, hbm_bytes=256 * _GB, hbm_bandwidth=153.6 * _GB, host_bytes=256 * _GB,
                    host_bandwidth=153.6 * _GB, intra_bandwidth=153.6 * _GB, intra_latency=1e-6,
                    inter_bandwidth=gbit * _GBIT, inter_latency=50e-6, step_overhead=1e-3, hbm_reserve=0.1,
                    source=f"Intel ARK E5-2682 v4; {gbit} GbE; design-note assumptions")


# NVIDIA A100 80GB SXM4 (A100 datasheet, 2021): 312 TFLOP/s dense BF16/FP16 tensor, 80 GB HBM2e at
# 2,039 GB/s, NVLink 3 at 600 GB/s bidirectional (300 per direction), PCIe Gen4 x16 (32 GB/s per
# direction, ~25 achieved). DGX A100 (System Architecture whitepaper, 2020): 8 GPUs, 8x ConnectX-6
# HDR 200 Gbit/s compute NICs, one per GPU; 2 TB DRAM (640 GB model). Latencies: NCCL's
# per-step latency over NVLink ~3 us and over IB ~5 us (nccl-tests small-message order;
# assumption). MLP efficiency 0.4 and 0.5 ms a step of launches: assumptions (CTR MLP layers of
# 256-1024 units with bias/activation epilogues, eager PyTorch), not fitted to any result.
A100 = Hardware(name="a100-ib200", kind="gpu", devices_per_node=8, peak_flops=312e12, mlp_efficiency=0.4,
                hbm_bytes=80 * _GB, hbm_bandwidth=2039 * _GB, host_bytes=2000 * _GB, host_bandwidth=25 * _GB,
                intra_bandwidth=300 * _GB, intra_latency=3e-6, inter_bandwidth=200 * _GBIT, inter_latency=5e-6,
                step_overhead=5e-4, source="NVIDIA A100 datasheet; DGX A100 architecture whitepaper")
# NVIDIA H100 SXM5 80GB (H100 datasheet, 2022): 989 TFLOP/s dense BF16 tensor, 80 GB HBM3 at
# 3.35 TB/s, NVLink 4 at 900 GB/s bidirectional (450 per direction), PCIe Gen5 x16 (64 GB/s per
# direction, ~50 achieved). DGX H100 (user guide): 8 GPUs, 8x ConnectX-7 NDR 400 Gbit/s, one
# per GPU; 2 TB DRAM. Latency, efficiency and launch overhead: as for the A100 (assumptions).
H100 = Hardware(name="h100-ib400", kind="gpu", devices_per_node=8, peak_flops=989e12, mlp_efficiency=0.4,
                hbm_bytes=80 * _GB, hbm_bandwidth=3350 * _GB, host_bytes=2000 * _GB, host_bandwidth=50 * _GB,
                intra_bandwidth=450 * _GB, intra_latency=3e-6, inter_bandwidth=400 * _GBIT, inter_latency=5e-6,
                step_overhead=5e-4, source="NVIDIA H100 datasheet; DGX H100 user guide")

# NVIDIA Tesla V100 SXM2 32GB (V100 datasheet, 2018): 125 TFLOP/s FP16 tensor (15.7 FP32), 32 GB
# HBM2 at 900 GB/s, NVLink 2 at 300 GB/s bidirectional (6 links x 25 GB/s per direction = 150),
# PCIe Gen3 x16 (15.75 GB/s per direction, ~12 achieved). DGX-1 with V100 (System Architecture
# whitepaper, 2017): 8 GPUs in a hybrid cube-mesh (not every pair has all 6 links: 150 GB/s is an
# upper bound), 4x 100 Gbit/s EDR IB for the 8 GPUs (50 Gbit/s per GPU), 512 GB DRAM. Latency,
# MLP efficiency and launch overhead: the A100's assumptions, not fitted to any result.
V100 = Hardware(name="v100-dgx1", kind="gpu", devices_per_node=8, peak_flops=125e12, mlp_efficiency=0.4,
                hbm_bytes=32 * _GB, hbm_bandwidth=900 * _GB, host_bytes=512 * _GB, host_bandwidth=12 * _GB,
                intra_bandwidth=150 * _GB, intra_latency=3e-6, inter_bandwidth=50 * _GBIT, inter_latency=5e-6,
                step_overhead=5e-4, source="NVIDIA V100 datasheet; DGX-1 with V100 architecture whitepaper")
# The same node running the MLP in FP32 (no tensor cores): the V100 datasheet's 15.7 TFLOP/s.
V100_FP32 = dataclasses.replace(V100, name="v100-dgx1-fp32", peak_flops=15.7e12,
                                source="NVIDIA V100 datasheet (FP32); DGX-1 with V100 architecture whitepaper")

# NVIDIA A100 40GB SXM4 (A100 datasheet, 40GB column): 312 TFLOP/s FP16/BF16 tensor (156 TF32),
# 40 GB HBM2 at 1,555 GB/s; NVLink and NICs as the 80 GB node (the first DGX A100, 8x A100 40GB,
# 8x ConnectX-6 HDR 200 Gbit/s compute NICs, 1 TB DRAM: DGX A100 System Architecture whitepaper).
A100_40 = dataclasses.replace(A100, name="a100-40gb-ib200", hbm_bytes=40 * _GB, hbm_bandwidth=1555 * _GB,
                              host_bytes=1000 * _GB,
                              source="NVIDIA A100 datasheet (40GB); DGX A100 architecture whitepaper")
# The same node with the MLP in TF32 (the datasheet's 156 TFLOP/s dense TF32 tensor).
A100_40_TF32 = dataclasses.replace(A100_40, name="a100-40gb-ib200-tf32", peak_flops=156e12,
                                   source="NVIDIA A100 datasheet (40GB, TF32); DGX A100 architecture whitepaper")

PRESETS: dict[str, Hardware] = {h.name: h for h in (_cpu(10), _cpu(25), _cpu(100), V100, V100_FP32, A100, A100_40,
                                                    A100_40_TF32, H100)}


def hardware_names(extra: tuple[Hardware, ...] = ()) -> list[str]:
    return sorted({*PRESETS, *(h.name for h in extra)})


def get_hardware(name: str, extra: tuple[Hardware, ...] = ()) -> Hardware:
    """The preset or user-defined (`extra`, which wins) hardware called `name`."""
    for h in extra:
        if h.name == name:
            return h
    if name in PRESETS:
        return PRESETS[name]
    raise ValueError(f"cluster.hardware: unknown hardware {name!r}; known: {', '.join(hardware_names(extra))}")


def apply_hardware(spec: Any) -> Any:
    """`spec` (a SimSpec) with its `cluster.hardware`'s network and devices per node; unchanged
    when no hardware is named."""
    c = spec.cluster
    if not c.hardware:
        return spec
    h = get_hardware(c.hardware, spec.hardware)
    if h.kind == "cpu":  # one worker per machine; the PS machines have the same NIC
        net = NetConfig(bandwidth=h.inter_bandwidth, latency=h.inter_latency)
        return dataclasses.replace(spec, cluster=dataclasses.replace(c, net=net, workers_per_node=1))
    return dataclasses.replace(spec, cluster=dataclasses.replace(c, net=h.net(), workers_per_node=h.devices_per_node))
