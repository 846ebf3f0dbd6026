"""What one simulated training step costs, part by part: the breakdown dataclasses that every
cost function in `psrec.sim.costs` returns, and the compute part.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["BACKWARD_SHARE", "ComputeCost", "compute_cost", "StepCost"]

BACKWARD_SHARE = 2 / 3  # backward FLOPs = 2x forward (Kaplan et al. 2020)


@dataclass(frozen=True)
class ComputeCost:
    """Forward and backward seconds of one worker's batch.

    >>> compute_cost(batch=100, seconds_per_sample=3e-4).total     # 100 * 0.3 ms
    0.03
    """

    forward: float
    backward: float

    @property
    def total(self) -> float:
        return self.forward + self.backward


def compute_cost(batch: int, seconds_per_sample: float, speed: float = 1.0, per_step: float = 0.0) -> ComputeCost:
    """Compute of one step: (per_step + batch * seconds_per_sample) / speed, 1/3 forward and
    2/3 backward.

    `seconds_per_sample` is the fitted constant of the model (`Calibration.compute_per_sample`);
    compute is linear in the batch, which is what the fit assumes (CPU GEMMs at CTR batch
    sizes are throughput-bound).
    """
    if batch < 0 or seconds_per_sample < 0 or per_step < 0 or not speed > 0:
        raise ValueError("batch, seconds_per_sample and per_step must be >= 0 and speed > 0")
    total = (per_step + batch * seconds_per_sample) / speed
    return ComputeCost(forward=total * (1 - BACKWARD_SHARE), backward=total * BACKWARD_SHARE)


@dataclass(frozen=True)
class StepCost:
    """Where one training step's time goes, per worker (seconds on the critical path).

    Args:
        mode: ps-async, ps-sync, hybrid or collective.
        compute, pull, push, allreduce, alltoall, wait, apply: exposed seconds of each part
            (`wait` = waiting for the slowest worker; `apply` = waiting for the optimizer).
        hidden: communication seconds overlapped with compute (not in `total`).
        workers, batch_size: for the throughput.
        memory_per_node: bytes of embedding state per PS (PS modes, hybrid) or per worker
            (collective).
        bottleneck: the largest part, and for pull/push which NIC limits it.

    Example:
        >>> s = StepCost("ps-sync", compute=0.3, pull=0.4, push=0.2, wait=0.1, workers=2, batch_size=10)
        >>> round(s.total, 9), round(s.comm_fraction, 9), round(s.throughput, 6)
        (1.0, 0.6, 20.0)
    """

    mode: str
    compute: float = 0.0
    pull: float = 0.0
    push: float = 0.0
    allreduce: float = 0.0
    alltoall: float = 0.0
    wait: float = 0.0
    apply: float = 0.0
    hidden: float = 0.0
    workers: int = 1
    batch_size: int = 1
    memory_per_node: float = 0.0
    bottleneck: str = ""

    @property
    def total(self) -> float:
        return self.compute + self.pull + self.push + self.allreduce + self.alltoall + self.wait + self.apply

    @property
    def comm(self) -> float:
        """Exposed communication: pull + push + allreduce + alltoall."""
        return self.pull + self.push + self.allreduce + self.alltoall

    @property
    def comm_fraction(self) -> float:
        return self.comm / self.total if self.total > 0 else 0.0

    @property
    def throughput(self) -> float:
        """Samples per second of the whole job."""
        return self.workers * self.batch_size / self.total if self.total > 0 else math.inf

    def as_row(self) -> dict[str, float | str]:
        """A table row: milliseconds, percent, samples/s, GB."""
        ms = 1e3
        return {"mode": self.mode, "step_ms": self.total * ms, "compute_ms": self.compute * ms,
                "pull_ms": self.pull * ms, "push_ms": self.push * ms, "allreduce_ms": self.allreduce * ms,
                "alltoall_ms": self.alltoall * ms, "apply_ms": self.apply * ms, "wait_ms": self.wait * ms,
                "hidden_ms": self.hidden * ms, "comm_pct": 100 * self.comm_fraction,
                "samples_per_s": self.throughput, "mem_GB_per_node": self.memory_per_node / 1e9,
                "bottleneck": self.bottleneck}
