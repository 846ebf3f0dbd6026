"""`[collective]`: how collective (all-to-all + all-reduce) training is laid out."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["CollectiveConfig", "collective_config_for"]


@dataclass(frozen=True)
class CollectiveConfig:
    """Workers that shard the embedding tables among themselves and all-reduce the dense part.

    Args:
        workers: ranks of the process group (N); each holds one shard of every table
            (row-wise) or whole tables (table-wise) and a replica of the dense parameters.
        sharding: "row" places each key on rank `hash_mod_shard(key, N)` (TorchRec's row-wise,
            HugeCTR's distributed hash table); "table" places each whole table on one rank
            (TorchRec's table-wise), balancing tables by width x fields.
        bucket_bytes: dense gradients are fused into buckets of about this many bytes, one
            all-reduce each (PyTorch DDP's gradient bucketing).
        overlap: launch a bucket's all-reduce from backward hooks as soon as its gradients
            are ready, so that it runs behind the rest of backward (DDP's overlap).
        backend: "auto" = NCCL when CUDA is available, else gloo; or force one.
        transport: "ray" runs each rank in a Ray actor (the real thing); "inprocess" runs
            ranks on threads with an in-process message-passing group (tests, debugging).
        worker_cpus: Ray CPU request per worker actor (fractional: N actors fit on a 2-core laptop).
        threads: torch intra-op threads per worker.
        address: join this Ray cluster ("" starts a local Ray).
        placement: "spread" the ranks over a multi-node cluster's nodes or "pack" them
            (`psrec.core.placement`; one node: no difference).
        net: network to emulate on collective transfers, e.g. "bandwidth=10Gbit,latency=50us".
        metrics_port: Prometheus endpoint on the driver; 0 picks a free port, -1 turns it off.
        timeout_s: a collective that waits longer than this fails instead of hanging (a dead
            peer would otherwise block the others for gloo's default 30 minutes).
        data: how rows reach the ranks: `interleaved` (rank r takes batch r of every round of
            N batches) or `queue` (each rank takes row-range tasks from the work queue,
            `[workqueue]`, under its policy; ranks still step in lockstep, see
            `CollectiveWorker.run_tasks`). The queue balances data (uneven task sizes, shares
            that do not split evenly); it cannot shorten a synchronous step, which still
            waits for the slowest rank (docs/longtail.md). `proportional`: every step trains
            the interleaved round's N x batch_size rows, split among the ranks in proportion
            to their measured speeds (`[shares]`, `collective.proportional`), so a straggler
            trains fewer rows instead of setting every step's pace.
        backup: b of the `workers` ranks are backups (Chen et al. 2016): every step applies
            the first `workers - backup` gradients to arrive and drops the rest
            (`collective.backup`); 0 = plain lockstep.

    Example:
        >>> CollectiveConfig(workers=4, sharding="table").sharding
        'table'
    """

    workers: int = 2
    sharding: Literal["row", "table"] = "row"  # row-wise spreads a hot table's load; table-wise sends fewer messages
    # Measured (benchmarks/allreduce_bench.py, 2 loaded cores): a gloo call costs ~0.3-1.5 ms
    # beside its bytes, so 256 KiB buckets got 0.4-0.7x one big call's bus bandwidth at 1-4 MB;
    # 4 MiB buckets keep one call up to 4 MB and still pipeline bigger models (32 MB = 8
    # buckets). DDP's default is 25 MB. DeepFM's 0.6 MB is one bucket: nothing to overlap,
    # and little worth it (~1 ms of all-reduce in a ~75 ms step).
    bucket_bytes: int = 4 << 20
    overlap: bool = True  # as DDP does by default
    backend: Literal["auto", "gloo", "nccl"] = "auto"
    transport: Literal["ray", "inprocess"] = "ray"
    worker_cpus: float = 0.5  # same as ps.worker_cpus: 2 workers per core on a laptop
    threads: int = 1  # N ranks already share the cores; more intra-op threads spin against each other
    address: str = ""
    placement: Literal["spread", "pack"] = "spread"  # as ps.placement: ranks on different nodes cross the network
    net: str = ""
    metrics_port: int = 0
    timeout_s: float = 300.0
    # the fixed split equals local training step by step
    data: Literal["interleaved", "queue", "proportional"] = "interleaved"
    backup: int = 0  # no backup ranks: every gradient is applied, the equivalence with local training holds

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"collective.workers must be >= 1, got {self.workers}")
        if self.bucket_bytes < 4:
            raise ValueError(f"collective.bucket_bytes must be >= 4 (one float32), got {self.bucket_bytes}")
        if self.worker_cpus <= 0 or self.threads < 1:
            raise ValueError("collective.worker_cpus must be > 0 and collective.threads >= 1")
        if self.metrics_port < -1 or self.metrics_port > 65535:
            raise ValueError(f"collective.metrics_port must be -1, 0 or a port, got {self.metrics_port}")
        if self.timeout_s <= 0:
            raise ValueError(f"collective.timeout_s must be > 0, got {self.timeout_s}")
        if not 0 <= self.backup < self.workers:
            raise ValueError(f"collective.backup must be in [0, workers), got {self.backup} of {self.workers}")
        if self.backup and self.data != "interleaved":
            raise ValueError(f"collective.backup needs collective.data = \"interleaved\", got {self.data!r}")
        if self.data not in ("interleaved", "queue", "proportional"):
            raise ValueError(f"collective.data must be interleaved, queue or proportional, got {self.data!r}")
        if self.placement not in ("spread", "pack"):
            raise ValueError(f"collective.placement must be spread or pack, got {self.placement!r}")
        if self.net:
            from psrec.net import parse_net

            parse_net(self.net, where="collective.net")  # fail at load time, naming the bad part


def collective_config_for(cfg) -> CollectiveConfig:
    """The run's CollectiveConfig: its `[collective]` section when the Config has one, else
    one that takes the settings both architectures share (workers, Ray address, network,
    metrics port) from `[ps]`, so that `psrec compare` runs both on the same cluster."""
    own = getattr(cfg, "collective", None)
    if own is not None:
        return own
    p = cfg.ps
    return CollectiveConfig(workers=p.workers, worker_cpus=p.worker_cpus, threads=p.threads,
                            address=p.address, placement=p.placement, net=p.net, metrics_port=p.metrics_port)
