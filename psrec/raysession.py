"""The one way psrec starts or joins Ray, shared by the PS, collective and work-queue runners."""
from __future__ import annotations

import os

__all__ = ["ensure_ray"]


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
        ray.init(address=address, **kw)
    else:
        # Logical CPUs beyond the physical ones: actors request fractions and the OS shares cores.
        ray.init(num_cpus=max(8, os.cpu_count() or 1), **kw)
