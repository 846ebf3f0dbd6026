"""Collective training: embeddings sharded over the workers and exchanged by all-to-all,
dense parameters replicated and all-reduced (the TorchRec / HugeCTR / DLRM architecture).

    config         CollectiveConfig: workers, row- or table-wise sharding, buckets, overlap
    sharding       which rank owns which rows
    sharded_store  an EmbeddingStore over the ranks' EV shards (all-to-all lookups and updates)
    dense_sync     bucketed gradient all-reduce, optionally overlapped with backward, and the
                   training step's dense hook over it (`BucketedDense`)
    lockstep       a rank's wait for the slowest backward, told apart from the all-reduce
    worker         one rank: the one training step (`psrec.core.step`) in lockstep, interleaved
                   rows or work-queue tasks, and its share of a distributed evaluation
    plan           the job resolved on the driver (picklable, handed to every rank)
    jobs           the ranks on threads or in Ray actors, behind `psrec.core.job.Job`
    runner         `run_collective`: the one run skeleton over those ranks

The collectives themselves (torch.distributed, an in-process group) are the `psrec.comm`
seam, shared with hybrid PS training. Depends on psrec's core, EV, embedding layer, models,
data and metrics; never on the PS server. Importing this package does not import Ray (only
the Ray job does).
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
