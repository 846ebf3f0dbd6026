"""What the simulator is asked about: typed cluster, model, data and option specs.

    [cluster]   ClusterSpec  workers, parameter servers, nodes, network, speed, stragglers
    [model]     ModelSpec    embedding tables (rows, dim, lookups per sample), dense params, batch
    [data]      DataSpec     key distribution (Zipf exponent per table)
    [options]   SimOptions   partitioner, collective algorithms, overlap
    [calibration] Calibration (psrec.sim.calibration) software alpha/beta, compute, apply
    [gpu]       GPUOptions   GPU jobs' placement and comparison; [[hardware]] user-defined nodes
    [reference] ReferenceSpec  a published throughput to print the model's error against

`SimSpec` bundles them. Every spec is a frozen dataclass validated in `__post_init__`; the
command layer loads them from TOML with errors naming the key. Units: seconds, bytes,
bytes/s; "rows" are embedding rows.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from psrec.net import NetConfig
from psrec.sim.calibration import Calibration
from psrec.sim.framework_cost import get_implementation
from psrec.sim.hardware import Hardware

__all__ = ["TableSpec", "ModelSpec", "DataSpec", "ClusterSpec", "SimOptions", "GPUOptions", "ReferenceSpec",
           "SimSpec", "KEY_BYTES", "VALUE_BYTES"]

KEY_BYTES = 8  # int64 feature ids on the wire
VALUE_BYTES = 4  # float32 embeddings, gradients and dense parameters


@dataclass(frozen=True)
class TableSpec:
    """One embedding table (an embedding variable).

    Args:
        name: for reports.
        rows: rows the table holds (its key space; up to ~1e10 in the design note).
        dim: embedding width.
        keys_per_sample: lookups into this table per sample (fields sharing the table, times
            their values per field).
        fields: pooled embedding vectors per sample that leave the table (what an all-to-all
            carries); 0 = same as `keys_per_sample` (single-valued fields).

    Example:
        >>> TableSpec("ids", rows=10**9, dim=16, keys_per_sample=20).pooled
        20
    """

    name: str = "ev"
    rows: int = 1_000_000_000
    dim: int = 16  # Criteo-scale CTR models use 8-32
    keys_per_sample: int = 50  # industrial CTR samples carry tens to hundreds of sparse ids
    fields: int = 0

    def __post_init__(self) -> None:
        if self.rows < 1 or self.dim < 1 or self.keys_per_sample < 1:
            raise ValueError(f"table {self.name!r}: rows, dim and keys_per_sample must be >= 1")
        if self.fields < 0:
            raise ValueError(f"table {self.name!r}: fields must be >= 0")

    @property
    def pooled(self) -> int:
        return self.fields or self.keys_per_sample


@dataclass(frozen=True)
class ModelSpec:
    """The model as the cost model sees it: embedding tables, dense parameters, batch.

    Args:
        name: looks up the compute constant in `Calibration.compute_per_sample`.
        tables: embedding tables.
        dense_params: parameters of the dense part (MLP, cross layers), float32.
        batch_size: samples per worker per step.
        compute_per_sample: seconds per sample (forward + backward) on one worker; 0 = take
            it from the calibration by `name`.
    """

    name: str = "deepfm"
    tables: tuple[TableSpec, ...] = (TableSpec(),)
    dense_params: int = 1_000_000  # a 3-layer MLP over ~1K embedding inputs
    batch_size: int = 512
    compute_per_sample: float = 0.0

    def __post_init__(self) -> None:
        if not self.tables:
            raise ValueError("model.tables: at least one table")
        if self.dense_params < 0 or self.batch_size < 1:
            raise ValueError("model.dense_params must be >= 0 and model.batch_size >= 1")
        if self.compute_per_sample < 0:
            raise ValueError("model.compute_per_sample must be >= 0")

    @property
    def total_rows(self) -> int:
        return sum(t.rows for t in self.tables)

    def embedding_bytes(self, slots: int = 1) -> float:
        """Bytes of all embedding values (`slots` = 1 + optimizer slots per value)."""
        return float(sum(t.rows * t.dim for t in self.tables)) * VALUE_BYTES * slots


@dataclass(frozen=True)
class DataSpec:
    """The key distribution: a bounded Zipf law per table, p(rank r) ~ r^-zipf, r = 1..rows.

    Args:
        zipf: exponent for every table (0 = uniform keys). Click logs measure ~1.0-1.3.
        zipf_per_table: one exponent per table, overriding `zipf`; empty = all `zipf`.
    """

    zipf: float = 1.1  # the exponent issue 4's imbalance target uses
    zipf_per_table: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.zipf < 0 or any(s < 0 for s in self.zipf_per_table):
            raise ValueError("data.zipf exponents must be >= 0")

    def exponents(self, num_tables: int) -> tuple[float, ...]:
        if not self.zipf_per_table:
            return (self.zipf,) * num_tables
        if len(self.zipf_per_table) != num_tables:
            raise ValueError(f"data.zipf_per_table has {len(self.zipf_per_table)} entries "
                             f"for {num_tables} tables")
        return self.zipf_per_table


@dataclass(frozen=True)
class ClusterSpec:
    """Machines and network.

    Args:
        workers: training workers (ranks of the collective modes).
        ps: parameter servers (PS modes and the embedding half of hybrid).
        workers_per_node: ranks sharing one node and its NIC; > 1 makes intra-node links and
            the hierarchical collectives matter.
        net: the links (`psrec.net.NetConfig`): inter-node = every NIC, intra-node = inside a node.
        worker_speed: compute speed relative to the calibrated worker (2 = twice as fast).
        straggler_fraction: probability that a worker is a straggler in a step.
        straggler_slowdown: a straggler's compute takes this many times longer (>= 1).
        ps_imbalance: max/mean PS load to use instead of the partitioner's formula (0 = formula);
            e.g. a measured `imbalance_hash` from the PS benchmark.
        hardware: a preset or `[[hardware]]` name (`psrec.sim.hardware`): its network and node
            shape replace `net` and `workers_per_node`; a GPU one makes `collective` a GPU job
            with planned embedding placement (`psrec.sim.placement`). "" = `net` as given.
        price_per_node_hour: $ per node-hour for the cost column; 0 = the hardware's.
        cores: CPU cores that all workers (and their PS) share; 0 = every worker has its own
            cores (a cluster). A laptop running W > cores workers stretches every CPU part of a
            step (compute, software communication, apply) by W / cores
            (`psrec.sim.contention.cpu_slowdown`); emulated network time is not CPU.
    """

    workers: int = 64
    ps: int = 8
    workers_per_node: int = 1  # CPU PS clusters: one worker process per machine
    net: NetConfig = field(default_factory=lambda: NetConfig(bandwidth=10e9 / 8, latency=50e-6))
    worker_speed: float = 1.0
    straggler_fraction: float = 0.0
    straggler_slowdown: float = 1.0
    ps_imbalance: float = 0.0
    cores: float = 0.0  # a cluster: no sharing
    hardware: str = ""  # no preset: the links are `net`
    price_per_node_hour: float = 0.0

    def __post_init__(self) -> None:
        if not (self.price_per_node_hour >= 0 and math.isfinite(self.price_per_node_hour)):
            raise ValueError(f"cluster.price_per_node_hour must be a finite number >= 0, "
                             f"got {self.price_per_node_hour}")
        if not (self.cores >= 0 and math.isfinite(self.cores)):
            raise ValueError(f"cluster.cores must be a finite number >= 0 (0 = not shared), got {self.cores}")
        if self.workers < 1 or self.ps < 1 or self.workers_per_node < 1:
            raise ValueError("cluster.workers, cluster.ps and cluster.workers_per_node must be >= 1")
        if not isinstance(self.net, NetConfig):
            raise ValueError("cluster.net must be a NetConfig")
        if not self.worker_speed > 0:
            raise ValueError(f"cluster.worker_speed must be > 0, got {self.worker_speed}")
        if not 0 <= self.straggler_fraction <= 1:
            raise ValueError(f"cluster.straggler_fraction must be in [0, 1], got {self.straggler_fraction}")
        if self.straggler_slowdown < 1:
            raise ValueError(f"cluster.straggler_slowdown must be >= 1, got {self.straggler_slowdown}")
        if self.ps_imbalance and self.ps_imbalance < 1:
            raise ValueError(f"cluster.ps_imbalance is max/mean, so >= 1 (or 0 = formula), got {self.ps_imbalance}")

    @property
    def nodes(self) -> int:
        return math.ceil(self.workers / self.workers_per_node)


@dataclass(frozen=True)
class SimOptions:
    """How each mode runs.

    Args:
        partitioner: PS key placement: `hash` (hash-mod, DeepRec's default) or `balanced`
            (frequency-aware: hot keys spread).
        dense_on_ps: in the ps-* modes the dense parameters live on the PS (DeepRec/TF
            PS default) and are pulled and pushed every step; False = they cost nothing there.
        allreduce: `ring`, `tree` (binomial), `hierarchical` (intra-node reduce-scatter, inter-node
            ring, intra-node all-gather) or `auto` (the fastest of the three).
        alltoall: `flat` (pairwise exchange) or `hierarchical` (2-D: intra-node first).
        overlap_ps: ps-async prefetches the next batch's rows during compute and pushes in the
            background (DeepRec's prefetch); False = 2017 TF PS, which did not.
        overlap_allreduce: the dense all-reduce runs in buckets during the backward pass
            (PyTorch DDP, Horovod); only the part longer than the backward pass shows.
        bucket_bytes: the dense gradients go in about ceil(dense bytes / bucket_bytes)
            all-reduce calls, each a ring of 2 (n - 1) messages (`coll_alpha` each). psrec's
            collective uses 4 MiB (`collective.bucket_bytes`); PyTorch DDP's default is 25 MB.
        optimizer_slots: values kept per embedding value (1 + optimizer state: Adagrad = 2),
            for the memory column only.
        alltoall_payload: what the collective's all-to-all carries: `pooled` (DLRM/TorchRec:
            every lookup's id out, pooled vectors back, their gradients out) or `rows` (psrec's
            collective: each rank deduplicates its batch, sends the distinct keys to their
            owners, gets the rows back and sends the rows' gradients with a count; 4 calls).
        software_at_server: charge the calibrated software alpha/beta on the PS NIC too, once
            per concurrent worker (PS CPU incast). False when the constants were measured at the
            worker end of the calls, where they already hold the server's share, and the PS
            shares the workers' cores (a laptop run: `ClusterSpec.cores` models that sharing).
        emulated_net: the network is psrec's `--net` emulation: each PS worker books its own
            bytes, so no PS NIC is shared (`psrec.sim.traffic`); collectives are replayed on a
            link per rank (`psrec.comm.nic`) and priced as on a real one. False = a real network.
    """

    partitioner: Literal["hash", "balanced"] = "hash"
    dense_on_ps: bool = True
    allreduce: Literal["ring", "tree", "hierarchical", "auto"] = "ring"  # NCCL's default for large messages
    alltoall: Literal["flat", "hierarchical"] = "flat"
    overlap_ps: bool = False
    overlap_allreduce: bool = True  # DDP's default bucketing
    bucket_bytes: int = 4 << 20  # psrec's collective (the calibrated one); DDP: 25 MB
    optimizer_slots: int = 2  # Adagrad: value + accumulator
    alltoall_payload: Literal["pooled", "rows"] = "pooled"  # what DLRM-style systems exchange
    software_at_server: bool = True  # a cluster's PS has its own CPU, which W workers' calls share
    emulated_net: bool = False  # a real network: workers share a PS's NIC

    def __post_init__(self) -> None:
        if self.alltoall_payload not in ("pooled", "rows"):
            raise ValueError(f"options.alltoall_payload must be pooled or rows, got {self.alltoall_payload!r}")
        if self.partitioner not in ("hash", "balanced"):
            raise ValueError(f"options.partitioner must be hash or balanced, got {self.partitioner!r}")
        if self.allreduce not in ("ring", "tree", "hierarchical", "auto"):
            raise ValueError(f"options.allreduce must be ring, tree, hierarchical or auto, got {self.allreduce!r}")
        if self.alltoall not in ("flat", "hierarchical"):
            raise ValueError(f"options.alltoall must be flat or hierarchical, got {self.alltoall!r}")
        if self.optimizer_slots < 1:
            raise ValueError("options.optimizer_slots must be >= 1")
        if isinstance(self.bucket_bytes, bool) or not isinstance(self.bucket_bytes, int) or self.bucket_bytes < 4:
            raise ValueError(f"options.bucket_bytes must be an integer >= 4 (one float32), got {self.bucket_bytes!r}")


@dataclass(frozen=True)
class GPUOptions:
    """How a GPU job places and runs its embeddings (`psrec.sim.placement`).

    Args:
        sharding: every table `table`-, `row`- or `column`-wise, or `auto` (the planner picks
            per table for the lowest step time).
        storage: `hbm` (the shard in device memory), `cache` (rows in host memory behind an HBM
            cache of the hottest rows) or `auto` (the planner picks).
        flops_per_sample: forward + backward FLOPs of the dense part; 0 = 6 per dense parameter
            (Kaplan et al. 2020).
        dense_state_bytes: device bytes per dense parameter: fp32 weight, gradient and two Adam
            moments = 16.
        allreduce, alltoall: algorithms (`psrec.sim.collective`); NCCL all-reduces hierarchically
            over NVLink then the NICs and runs all-to-all as flat point-to-point exchanges.
        max_gpus: the largest job `gpus_needed` searches.
        batch_size: samples per GPU per step; 0 = `model.batch_size` (GPUs take larger batches).
        compare_hardware, compare_gpus: `psrec simulate` also prints these GPU jobs against the
            CPU cluster's `compare_baseline` mode (`psrec.sim.gpu_compare`).
        implementation: how the training script runs embeddings, interaction and input
            (`psrec.sim.framework_cost.IMPLEMENTATIONS`); `ideal` = the kernels alone.
        activation_bytes: bytes of one pooled embedding value in the step's activations (4 = fp32).
        interaction_vectors: vectors of a dot interaction (DLRM: tables + 1), 0 = none.
        input_bytes_per_sample: bytes of one sample copied to the device (0 = 4 per key + 4 for the label).
    """

    sharding: Literal["auto", "table", "row", "column"] = "auto"
    storage: Literal["auto", "hbm", "cache"] = "auto"
    flops_per_sample: float = 0.0
    dense_state_bytes: int = 16
    allreduce: Literal["ring", "tree", "hierarchical", "auto"] = "hierarchical"
    alltoall: Literal["flat", "hierarchical"] = "flat"
    max_gpus: int = 4096
    batch_size: int = 0
    compare_hardware: tuple[str, ...] = ()
    compare_gpus: tuple[int, ...] = (8, 16, 32, 64)
    compare_baseline: Literal["ps-async", "ps-sync", "hybrid", "collective"] = "ps-async"
    implementation: str = "ideal"  # the simulator's kernels only: what it priced before framework_cost
    activation_bytes: int = 4  # fp32 embeddings, as the tables are stored
    interaction_vectors: int = 0
    input_bytes_per_sample: int = 0

    def __post_init__(self) -> None:
        get_implementation(self.implementation)
        if self.activation_bytes < 1 or self.interaction_vectors < 0 or self.input_bytes_per_sample < 0:
            raise ValueError("gpu.activation_bytes must be >= 1, gpu.interaction_vectors and "
                             "gpu.input_bytes_per_sample >= 0")
        if self.batch_size < 0 or any(g < 1 for g in self.compare_gpus):
            raise ValueError("gpu.batch_size must be >= 0 and gpu.compare_gpus >= 1")
        if self.sharding not in ("auto", "table", "row", "column"):
            raise ValueError(f"gpu.sharding must be auto, table, row or column, got {self.sharding!r}")
        if self.storage not in ("auto", "hbm", "cache"):
            raise ValueError(f"gpu.storage must be auto, hbm or cache, got {self.storage!r}")
        if self.allreduce not in ("ring", "tree", "hierarchical", "auto"):
            raise ValueError(f"gpu.allreduce must be ring, tree, hierarchical or auto, got {self.allreduce!r}")
        if self.alltoall not in ("flat", "hierarchical"):
            raise ValueError(f"gpu.alltoall must be flat or hierarchical, got {self.alltoall!r}")
        if self.flops_per_sample < 0 or self.dense_state_bytes < 0 or self.max_gpus < 1:
            raise ValueError("gpu.flops_per_sample and gpu.dense_state_bytes must be >= 0, gpu.max_gpus >= 1")


@dataclass(frozen=True)
class ReferenceSpec:
    """A published measurement of the job the spec describes, to print the model's error against.

    Args:
        samples_per_s: the published throughput of the whole job (0 = none).
        source: where it is published (document, table, version).
    """

    samples_per_s: float = 0.0
    source: str = ""

    def __post_init__(self) -> None:
        if not (self.samples_per_s >= 0 and math.isfinite(self.samples_per_s)):
            raise ValueError(f"reference.samples_per_s must be a finite number >= 0, got {self.samples_per_s}")

    def error(self, predicted: float) -> float:
        """Relative error of a predicted throughput (+0.1 = predicted 10% faster).

        >>> round(ReferenceSpec(8e5).error(1e6), 9)
        0.25
        """
        return predicted / self.samples_per_s - 1 if self.samples_per_s > 0 else math.nan


@dataclass(frozen=True)
class SimSpec:
    """Everything one simulation needs (`hardware`: user-defined `[[hardware]]` node types;
    `reference`: a published measurement to compare with)."""

    cluster: ClusterSpec = field(default_factory=ClusterSpec)
    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataSpec = field(default_factory=DataSpec)
    options: SimOptions = field(default_factory=SimOptions)
    calibration: Calibration = field(default_factory=Calibration)
    gpu: GPUOptions = field(default_factory=GPUOptions)
    hardware: tuple[Hardware, ...] = ()
    reference: ReferenceSpec = field(default_factory=ReferenceSpec)

    def __post_init__(self) -> None:
        self.data.exponents(len(self.model.tables))  # raises on a length mismatch
        self.compute_per_sample()  # raises if the model has no compute constant
        if self.cluster.hardware:
            from psrec.sim.hardware import get_hardware

            get_hardware(self.cluster.hardware, self.hardware)  # an unknown name fails here, naming the known

    def compute_per_step(self) -> float:
        """Seconds per step that do not grow with the batch (the calibration's, by model name)."""
        return self.calibration.compute_step_for(self.model.name)

    def compute_per_sample(self) -> float:
        """Seconds per sample on the calibrated worker: the model's own value, else the calibration's."""
        return self.model.compute_per_sample or self.calibration.compute_for(self.model.name)
