"""Data-parallel dense parameters: gradients fused into buckets and averaged by all-reduce.

The PyTorch DDP scheme (S. Li et al., "PyTorch Distributed: Experiences on Accelerating Data
Parallel Training", VLDB 2020), with gradients as bucket views:

- parameters are grouped into buckets of about `bucket_bytes`, in reverse registration
  order (backward produces the last layer's gradients first);
- every parameter's `.grad` is a view of its bucket's flat buffer (re-attached and zeroed by
  a forward pre-hook, since the training step sets gradients to None), so backward
  accumulates straight into the buckets: nothing is copied before or after the all-reduce;
- gloo has no AVG, so the gradient flowing out of the model's output is scaled by 1/N (a
  hook on the forward output): one SUM all-reduce per bucket then leaves the mean, and the
  embedding rows' gradients, which flow through the same output, arrive pre-scaled too (the
  sharded store then sums them; `ShardedStore(average=False)`);
- with `overlap`, a post-accumulate-grad hook counts each parameter done, and a complete
  bucket's all-reduce is launched at once, asynchronously, so that it runs while backward
  computes the rest. Buckets are launched strictly in order, so every rank issues the same
  collectives in the same order whatever its timing.

Accounting per step (seconds): `total` is the time some bucket's all-reduce was in flight
(the union of launch -> completion intervals); `exposed` is what the training thread spent
blocked in `finish`; `hidden = total - exposed` ran behind backward. Without overlap
everything is exposed.

`carry(k)` lets k numbers ride on the last bucket (a rank's speed for the speed-proportional
shares): summed over the ranks by the all-reduce the step does anyway, so a per-step
control message costs no rendezvous of its own.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from psrec.comm.collectives import Collectives, Work
from psrec.comm.traffic import Traffic
from psrec.core.step import DenseSeconds, DenseUpdate
from psrec.net import NetConfig

__all__ = ["DenseSync", "SyncTimes", "BucketedDense", "plan_buckets"]


def plan_buckets(numels: list[int], bucket_bytes: int) -> list[list[int]]:
    """Indices of float32 parameters (sizes `numels`, registration order) per bucket: reverse
    order, a bucket closed as soon as it holds >= `bucket_bytes`.

    >>> plan_buckets([35, 7, 21, 3, 3, 1], 16)   # a 5-7-3-1 MLP's weights and biases
    [[5, 4], [3, 2], [1], [0]]
    """
    buckets: list[list[int]] = []
    group: list[int] = []
    size = 0
    for i in reversed(range(len(numels))):
        group.append(i)
        size += numels[i] * 4
        if size >= bucket_bytes:
            buckets.append(group)
            group, size = [], 0
    if group:
        buckets.append(group)
    return buckets


@dataclass(frozen=True)
class SyncTimes:
    """One step's dense all-reduce, seconds."""

    total: float  # some bucket in flight
    exposed: float  # the training thread blocked on it
    buckets: int

    @property
    def hidden(self) -> float:
        return max(0.0, self.total - self.exposed)


class _Bucket:
    def __init__(self, params: list[nn.Parameter], extra: int = 0) -> None:
        self.params = params
        # (numel + extra,): the gradients, then `extra` slots that ride along (DenseSync.carry)
        self.buffer = torch.zeros(sum(p.numel() for p in params) + extra, dtype=torch.float32)
        self.views = []
        pos = 0
        for p in params:
            self.views.append(self.buffer[pos:pos + p.numel()].view_as(p))  # p's gradient lives here
            pos += p.numel()
        self.ready = 0
        self.work: Work | None = None
        self.started = 0.0


class DenseSync:
    """Averages a model replica's dense gradients over the ranks of `comm`, bucket by bucket.

    Args:
        model: this rank's replica (float32 parameters); its forward output is what the loss
            is computed from (the 1/N gradient scale is applied there).
        comm: this rank's collectives.
        bucket_bytes: target bucket size in bytes (a parameter larger than it gets its own bucket).
        overlap: launch buckets from backward hooks (else all at once in `finish`).

    Per step: forward, backward (gradients land in the buckets), then `finish()`; afterwards
    every parameter's `.grad` holds the mean gradient over the ranks.

    Example (one rank: the mean is the gradient itself):
        >>> from psrec.comm.collectives import ThreadGroup
        >>> m = nn.Linear(3, 2)
        >>> sync = DenseSync(m, ThreadGroup(1).member(0), bucket_bytes=8, overlap=True)
        >>> m(torch.ones(1, 3)).sum().backward(); times = sync.finish()
        >>> m.bias.grad.tolist(), times.buckets
        ([1.0, 1.0], 2)
    """

    def __init__(self, model: nn.Module, comm: Collectives, bucket_bytes: int = 4 << 20,
                 overlap: bool = True) -> None:
        self.comm = comm
        self.overlap = overlap
        params = [p for p in model.parameters() if p.requires_grad]
        for p in params:
            if p.dtype != torch.float32:
                raise TypeError(f"dense sync handles float32 parameters, got {p.dtype}")
        self.buckets = [_Bucket([params[i] for i in idx])
                        for idx in plan_buckets([p.numel() for p in params], bucket_bytes)]
        self._bucket_of = {id(p): i for i, b in enumerate(self.buckets) for p in b.params}
        self.scale = 1.0 / comm.world_size  # applied to the output's gradient
        self._next = 0  # next bucket to launch
        self.side_in = self.side_out = torch.zeros(0)  # (k,) carried on the last bucket: this rank's, the sum
        self._hooks = [model.register_forward_pre_hook(self._on_forward),
                       model.register_forward_hook(self._on_output)]
        if overlap:
            self._hooks += [p.register_post_accumulate_grad_hook(self._on_grad) for p in params]
        self.attach_grads()

    @property
    def numel(self) -> int:
        """Gradient elements (the carried slots not counted)."""
        return sum(b.buffer.numel() for b in self.buckets) - self.side_in.numel()

    def carry(self, k: int) -> None:
        """From now on, every step's all-reduce also sums `side_in` (k float32 numbers, set by
        the caller before the step's backward ends) over the ranks into `side_out`. They ride
        at the end of the last bucket, the one launched last, so they add k x 4 bytes and no
        message. Every rank must call it with the same k before its first step."""
        last = self.buckets[-1]
        self.buckets[-1] = _Bucket(last.params, extra=k)
        self.side_in, self.side_out = torch.zeros(k), torch.zeros(k)
        self.attach_grads()

    def _put_side(self, b: _Bucket) -> None:
        k = self.side_in.numel()
        if k and b is self.buckets[-1]:
            b.buffer[-k:] = self.side_in

    def _take_side(self) -> None:
        k = self.side_in.numel()
        if k:
            self.side_out = self.buckets[-1].buffer[-k:].clone()

    def attach_grads(self) -> None:
        """Zero the buckets and point every `.grad` at its bucket view; forget the last
        step's launches. The forward pre-hook does this before every training forward."""
        for b in self.buckets:
            b.buffer.zero_()
            for p, v in zip(b.params, b.views):
                p.grad = v
            b.ready, b.work = 0, None
        self._next = 0

    def _on_forward(self, module, args) -> None:
        if torch.is_grad_enabled():
            self.attach_grads()

    def _on_output(self, module, args, output):
        if self.scale != 1.0 and isinstance(output, torch.Tensor) and output.requires_grad:
            output.register_hook(self._scale_grad)
        return None  # the output itself is unchanged

    def _scale_grad(self, g: torch.Tensor) -> torch.Tensor:
        return g * self.scale

    def _on_grad(self, p: nn.Parameter) -> None:
        self.buckets[self._bucket_of[id(p)]].ready += 1
        while self._next < len(self.buckets) and self.buckets[self._next].ready == len(self.buckets[self._next].params):
            self._launch(self._next)
            self._next += 1

    def _launch(self, i: int) -> None:
        b = self.buckets[i]
        b.started = time.perf_counter()
        self._put_side(b)
        # completion times only matter with overlap (without it, all of the time is exposed)
        b.work = self.comm.all_reduce(b.buffer, tag="dense", async_op=True, track_done=self.overlap)

    def finish(self) -> SyncTimes:
        """Launch what backward did not, and wait for every bucket: each `.grad` (a bucket
        view) then holds the mean over the ranks."""
        t0 = time.perf_counter()
        for b in self.buckets:
            for p, v in zip(b.params, b.views):
                if p.grad is None:  # unused, or gradients reset since the forward: contributes zero
                    p.grad = v.zero_()
                elif p.grad.data_ptr() != v.data_ptr():  # set by someone else: take it in
                    v.copy_(p.grad)
                    p.grad = v
        if len(self.buckets) == 1 and self._next == 0:
            # One bucket, not yet launched: a blocking call costs less than launch + wait.
            self._put_side(self.buckets[0])
            self.comm.all_reduce(self.buckets[0].buffer, tag="dense")
            self._next = 1
            self._take_side()
            exposed = time.perf_counter() - t0
            return SyncTimes(exposed, exposed, 1)
        while self._next < len(self.buckets):
            self._launch(self._next)
            self._next += 1
        intervals = []
        for b in self.buckets:
            b.work.wait()
            intervals.append((b.started, b.work.done_at or time.perf_counter()))
        self._take_side()
        exposed = time.perf_counter() - t0
        total = _union(intervals) if self.overlap else exposed  # without overlap all of it is exposed
        return SyncTimes(total, exposed, len(self.buckets))

    def close(self) -> None:
        """Remove the hooks (the replica can then train without a group)."""
        for h in self._hooks:
            h.remove()
        self._hooks = []


def _union(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of [start, end) intervals (seconds)."""
    total, end = 0.0, float("-inf")
    for s, e in sorted(intervals):
        if e <= end:
            continue
        total += e - max(s, end)
        end = e
    return total


class BucketedDense(DenseUpdate):
    """The training step's dense hook on a `DenseSync`: the loss gradient is scaled by this
    rank's share of the step's rows (1/N for equal shares), backward fills the buckets and
    launches them, `exchange` waits for the rest, every replica steps its optimizer.

    Args:
        sync: the rank's DenseSync over its group.
        optimizer: the replica's dense optimizer.
        net: the emulated network for the group's traffic (None: real time only).
    """

    def __init__(self, sync: DenseSync, optimizer: torch.optim.Optimizer, net: NetConfig | None = None) -> None:
        super().__init__(optimizer)
        self.sync, self.net = sync, net

    def begin(self, weight: float | None) -> None:
        # Ranks training unequal rows weight their mean loss by n_r / R, so that the summed
        # gradients are those of the mean loss over all R rows (local training on the union).
        self.sync.scale = 1.0 / self.sync.comm.world_size if weight is None else weight

    def empty_backward(self) -> None:
        self.sync.attach_grads()  # no forward to do it: zero buckets, .grad -> bucket views

    def exchange(self) -> DenseSeconds:
        t = self.sync.finish()
        return DenseSeconds(t.total, t.exposed)

    def take_traffic(self) -> Traffic:
        # one log per rank, shared with the sharded store: it takes the step's records
        return Traffic()
