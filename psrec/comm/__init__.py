"""The collective-communication seam shared by every mode that all-reduces or all-to-alls.

    collectives   `Collectives` (all-to-all, all-reduce) with a per-rank `CommLog` of bytes
                  and messages; `TorchCollectives` over torch.distributed (gloo / NCCL) and
                  `ThreadGroup`, an in-process group of ranks on threads

It sits below both the PS (hybrid mode's dense all-reduce) and the collective path, so each
books its traffic the same way and neither imports the other.
"""
from psrec.comm.collectives import (
    Collectives,
    CommLog,
    CommRecord,
    ThreadGroup,
    TorchCollectives,
    Work,
    init_torch_group,
    pick_backend,
    ring_allreduce_traffic,
    ring_chunks,
)

__all__ = ["CommLog", "CommRecord", "Collectives", "ThreadGroup", "TorchCollectives", "Work",
           "init_torch_group", "pick_backend", "ring_allreduce_traffic", "ring_chunks"]
