"""Collective training: embeddings sharded over the workers and exchanged by all-to-all,
dense parameters replicated and all-reduced (the TorchRec / HugeCTR / DLRM architecture).

    config         CollectiveConfig: workers, row- or table-wise sharding, buckets, overlap
    group          the transport seam: torch.distributed (gloo / NCCL) and an in-process group
    sharding       which rank owns which rows
    sharded_store  an EmbeddingStore over the ranks' EV shards (all-to-all lookups and updates)
    dense_sync     bucketed gradient all-reduce, optionally overlapped with backward
    worker         one rank's training step with its time and traffic accounted for
    runner         plan, start (Ray actors or threads), train, evaluate, report

Depends on psrec's EV core, embedding layer, models, data and metrics; never on the PS
server. Importing this package does not import Ray (only the Ray job does).
"""
from collective.config import CollectiveConfig, collective_config_for

__all__ = ["CollectiveConfig", "collective_config_for", "plan_collective", "run_collective"]


def __getattr__(name: str):
    # The runner imports psrec.config, which imports `collective.config` for its
    # [collective] section: loading the runner lazily keeps that import free of a cycle.
    if name in ("plan_collective", "run_collective"):
        from collective import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'collective' has no attribute {name!r}")
