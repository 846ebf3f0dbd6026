"""`[ps]`: how parameter-server training is laid out."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["PSConfig", "WireLimits"]


@dataclass(frozen=True)
class WireLimits:
    """What a PS accepts from one request on any wire (gRPC, the same-node channel): checked
    before anything is allocated, so a hostile length costs the PS nothing.

    Args:
        max_message_bytes: bytes of one request or reply (arrays and framing).
        max_keys: keys of one table in one pull or push.
        max_tables: tables named in one request.
    """

    max_message_bytes: int = 256 << 20  # 4M keys x dim 16 x 4 B rows = 256 MiB: far above a real batch
    max_keys: int = 1 << 22
    max_tables: int = 256  # a CTR model has one table per field group: tens

    def __post_init__(self) -> None:
        if self.max_message_bytes < 1 << 16 or self.max_keys < 1 or self.max_tables < 1:
            raise ValueError(f"wire limits too small: {self}")


@dataclass(frozen=True)
class PSConfig:
    """Parameter servers, workers, and how they talk.

    Args:
        workers: training workers (N).
        num_ps: parameter servers (M).
        sync: aggregate each step's gradients from all workers before applying them.
        staleness: with `sync`, bounded staleness (stale-synchronous parallel, Ho et al.
            2013): a worker may pull for step k once step k - 1 - staleness is applied, i.e.
            run at most `staleness` steps ahead of the slowest; 0 is sync, and async
            (`sync = false`) is staleness = infinity. Steps are still applied whole and in
            order (each the mean of every worker's push for it).
        backup: with `sync`, b of the `workers` are backups (Chen et al. 2016): every step
            applies the first `workers - backup` gradients to arrive (tickets from the job's
            `workqueue.arrivals` board) and drops the rest; 0 = every gradient is applied.
        dense: where dense parameters live: on the PS, or replicated and all-reduced (hybrid).
        partitioner: key placement across PS: hash-mod or balanced by observed frequency.
        transport: how workers reach the PS: "auto" (the same-node channel to a PS on the
            worker's node, gRPC across nodes), "grpc" (gRPC to every PS), "ray" (the channel on
            the same node, Ray actor calls across nodes), or "inprocess" (threads; tests).
        tls_cert, tls_key: PEM files for TLS on the PS's gRPC servers ("" = plaintext; the
            job token still authenticates every call). Workers trust `tls_cert` as the root.
        max_message_mb, max_keys: the largest request a PS accepts (MiB; keys per table).
        ps_cpus, worker_cpus: Ray CPU request per actor: fractional, so N+M actors fit on a
            2-core laptop (Ray only schedules by these numbers; the OS shares the cores).
        address: join this Ray cluster ("" starts a local Ray).
        placement: on a cluster of several nodes, "spread" the PS and workers over the nodes
            (so that pulls cross the network) or "pack" them onto as few as fit (one Ray
            placement group either way; `psrec.core.placement`). One node: no difference.
        net: network to emulate, e.g. "bandwidth=10Gbit,latency=50us" ("" = none).
        metrics_port: Prometheus endpoint on the driver; 0 picks a free port, -1 turns it off.
        partition_sample_batches: batches scanned to observe key frequencies (balanced only).
        threads: torch threads per actor.
        data: how rows reach workers: each its fixed interleaved batches, row-range tasks
            taken from the central work queue ([workqueue]; async mode), so that fast workers
            take more when others straggle, or (sync) "proportional": each round's N x batch
            rows cut in proportion to the workers' measured speeds by the job's coordinator
            (`workqueue.round_shares`, `[shares]`), gradients weighted by rows.
    """

    workers: int = 2
    num_ps: int = 2
    sync: bool = False  # DeepRec trains asynchronously by default
    staleness: int = 0  # sync means sync: no step may start before the last one is applied
    backup: int = 0  # no backup workers: every push is applied, the equivalence with local training holds
    dense: Literal["ps", "allreduce"] = "ps"
    partitioner: Literal["hash", "balanced"] = "hash"  # DeepRec's default
    transport: Literal["auto", "ray", "grpc", "inprocess"] = "auto"
    tls_cert: str = ""
    tls_key: str = ""
    max_message_mb: int = 256  # WireLimits' default: a 4M-key pull of dim 16
    max_keys: int = 1 << 22
    ps_cpus: float = 0.25
    worker_cpus: float = 0.5
    address: str = ""
    placement: Literal["spread", "pack"] = "spread"  # a cluster's nodes are there to be used: PS apart from workers
    net: str = ""
    metrics_port: int = 0
    partition_sample_batches: int = 20  # ~20K rows: enough to rank the hot keys of a Zipf law
    threads: int = 1  # one intra-op thread per actor: N+M actors already share the cores
    data: Literal["interleaved", "queue", "proportional"] = "interleaved"  # fixed batches, queue tasks or shares

    def __post_init__(self) -> None:
        if self.workers < 1 or self.num_ps < 1:
            raise ValueError(f"ps.workers and ps.num_ps must be >= 1, got {self.workers}, {self.num_ps}")
        if self.ps_cpus <= 0 or self.worker_cpus <= 0:
            raise ValueError("ps.ps_cpus and ps.worker_cpus must be > 0")
        if self.metrics_port < -1 or self.metrics_port > 65535:
            raise ValueError(f"ps.metrics_port must be -1, 0 or a port, got {self.metrics_port}")
        if self.threads < 1 or self.partition_sample_batches < 1:
            raise ValueError("ps.threads and ps.partition_sample_batches must be >= 1")
        if self.staleness < 0 or (self.staleness and not self.sync):
            raise ValueError(f"ps.staleness must be >= 0 and needs ps.sync = true (async is staleness = "
                             f"infinity), got {self.staleness} with sync = {self.sync}")
        if self.backup:
            if not 0 < self.backup < self.workers:
                raise ValueError(f"ps.backup must be in [0, workers), got {self.backup} of {self.workers}")
            if not self.sync or self.staleness or self.dense != "ps" or self.data != "interleaved":
                raise ValueError("ps.backup needs ps.sync = true, ps.staleness = 0, ps.dense = \"ps\" and "
                                 f"ps.data = \"interleaved\", got sync = {self.sync}, staleness = {self.staleness}, "
                                 f"dense = {self.dense!r}, data = {self.data!r}")
        if self.data == "proportional" and (not self.sync or self.staleness or self.dense != "ps"):
            raise ValueError("ps.data = \"proportional\" needs ps.sync = true, ps.staleness = 0 and ps.dense = "
                             f"\"ps\", got sync = {self.sync}, staleness = {self.staleness}, dense = {self.dense!r}")
        if self.placement not in ("spread", "pack"):
            raise ValueError(f"ps.placement must be spread or pack, got {self.placement!r}")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("ps.tls_cert and ps.tls_key must be given together")
        self.limits  # noqa: B018 - validates max_message_mb and max_keys at load time
        if self.net:
            from psrec.net import parse_net

            parse_net(self.net, where="ps.net")  # fail at load time, naming the bad part

    @property
    def limits(self) -> WireLimits:
        return WireLimits(max_message_bytes=self.max_message_mb << 20, max_keys=self.max_keys)
