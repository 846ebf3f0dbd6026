"""The one way psrec starts or joins Ray, shared by the PS, collective and work-queue runners."""
from __future__ import annotations

import os

__all__ = ["ensure_ray", "LOCAL_OBJECT_STORE_BYTES"]

# A local Ray's shared-memory object store. Ray's default (30% of RAM) is far more than PS
# payloads need (a pull or push is a few MB), and it costs time: each process first-touches
# every store page it writes, one page fault per 4 KiB, and the allocator walks through the
# whole store before it reuses an address. With 512 MiB the faults stop after ~130K page
# touches per process (well under a second), after which a 4 MiB actor reply measured
# 5.7-7.3 ms instead of ~10 ms (an echo actor on this 2-core machine). Objects beyond it
# fall back to disk, not fail.
LOCAL_OBJECT_STORE_BYTES = 512 << 20


def ensure_ray(address: str = "") -> None:
    """Join `address`, or start a local Ray (no dashboard) unless one is already running.

    Ray is left running for the rest of the process, so jobs that follow (e.g. the modes of
    `psrec compare`) reuse it instead of paying the start-up again.
    """
    import ray

    if ray.is_initialized():
        return
    kw = dict(include_dashboard=False, log_to_driver=False, configure_logging=False,
              runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    if address:
        from psrec.cluster.testbed import join

        node_ip = join(address)  # a `psrec cluster` testbed: this process joins its head node's namespace
        if node_ip:
            kw["_node_ip_address"] = node_ip
        ray.init(address=address, **kw)
    else:
        from psrec.raybind import loopback_only

        # Logical CPUs beyond the physical ones: actors request fractions and the OS shares cores.
        # address="local": a new Ray even when a `ray start` cluster runs on this machine (Ray would join it)
        with loopback_only() as bind:  # a local Ray serves this machine only: no listener on 0.0.0.0
            ray.init(address="local", num_cpus=max(8, os.cpu_count() or 1),
                     object_store_memory=LOCAL_OBJECT_STORE_BYTES, **kw, **bind)
