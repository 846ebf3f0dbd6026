"""The worker-side PS client: an EmbeddingStore whose rows live on parameter servers.

Per step, one pull and one push per shard: the batch's distinct keys (already deduplicated
by the embedding layer) are routed with the partitioner, sent to every shard at once
through the transport, and the rows are put back in request order. Bytes and time are
booked per call (`take_traffic`, tagged "pull" and "push"; a sync shard's hold on a pull is
`take_seconds()["wait"]`); with a network model (`--net`) each call also books the time its
bytes would take on that network, separately from the real time.
"""
from __future__ import annotations

import numpy as np

from psrec.comm.traffic import Traffic
from psrec.embedding.store import BatchedStore
from psrec.net import NetConfig, transfer_time
from psrec.ps.partition import Partitioner
from psrec.ps.transport import Transport

__all__ = ["PSClient"]


class PSClient(BatchedStore):
    """Embedding rows on PS shards.

    Args:
        transport: calls the shards.
        partitioner: key -> shard.
        dims: table -> row width.
        sync: send a push to every shard every step (sync mode counts pushes per step).
        net: emulate this network (None: record real time only).
        dense_slices: (start, end) of the flat dense vector held by each shard, or None when
            dense parameters do not live on the PS.
        staleness: sync mode: the next pull after pushing step k waits only for step
            k - staleness to be applied (`ps.staleness`; 0 = every step waits for the last).
    """

    def __init__(self, transport: Transport, partitioner: Partitioner, dims: dict[str, int],
                 sync: bool = False, net: NetConfig | None = None,
                 dense_slices: list[tuple[int, int]] | None = None, staleness: int = 0) -> None:
        if partitioner.num_shards != transport.num_shards:
            raise ValueError(f"partitioner has {partitioner.num_shards} shards, transport {transport.num_shards}")
        self.transport = transport
        self.partitioner = partitioner
        self.dims = dims
        self.sync = sync
        self.net = net
        self.dense_slices = dense_slices
        self.staleness = staleness
        self._traffic = Traffic()
        self._wait = 0.0  # sync barrier: seconds a shard held a pull until its step was applied
        self.pending_dense_grad: np.ndarray | None = None  # the next push's dense gradient (dense on the PS)
        self.step = 0  # global step of the step in progress (from `begin_step`)
        self.min_step = 0  # sync: the step whose update the next pull must see
        self.dense_values: np.ndarray | None = None  # filled by a pull when dense lives on the PS
        self._want_dense = False
        self._want_step = False
        self.drop_push = False  # backup workers: this step's gradient came in late, the next push is not sent

    pull_phase = "pull"
    push_phase = "push"

    # ---------------------------------------------------------------- BatchedStore
    def begin_step(self) -> None:
        """Ask the next pull to also fetch the dense slices (dense on the PS) and, async, a new
        global step."""
        self._want_dense = self.dense_slices is not None
        self._want_step = not self.sync

    def global_step(self, proposed: int) -> int:
        """Sync: the round the driver numbered; async: the step the first shard handed out."""
        return proposed if self.sync else self.step

    def take_seconds(self) -> dict[str, float]:
        out, self._wait = {"wait": self._wait}, 0.0
        return out

    def take_traffic(self) -> Traffic:
        out, self._traffic = self._traffic, Traffic()
        return out

    def lookup_many(self, keys: dict[str, np.ndarray], train: bool = True) -> dict[str, np.ndarray]:
        n = self.transport.num_shards
        positions = {t: self.partitioner.split(k) for t, k in keys.items()}
        args = []
        for s in range(n):
            req = {t: keys[t][positions[t][s]] for t in keys if len(positions[t][s])}
            want_dense = self._want_dense and self.dense_slices is not None
            if req or want_dense or (s == 0 and self._want_step) or (self.sync and train):
                args.append((req, train, want_dense, self.min_step if train else 0, s == 0 and self._want_step))
            else:
                args.append(None)
        replies = self.transport.call_all("pull", args)
        out = {t: np.empty((len(k), self.dims[t]), np.float32) for t, k in keys.items()}
        sent = recv = msgs = 0
        waited = 0.0
        dense_parts = []
        for s, (a, r) in enumerate(zip(args, replies)):
            if r is None:
                continue
            rows, d, w, step = r
            waited = max(waited, w)
            msgs += 1
            sent += sum(k.nbytes for k in a[0].values())
            recv += sum(v.nbytes for v in rows.values()) + (d.nbytes if d is not None else 0)
            for t, v in rows.items():
                out[t][positions[t][s]] = v
            if d is not None:
                dense_parts.append(d)
            if step is not None:
                self.step = step
        if dense_parts:
            self.dense_values = np.concatenate(dense_parts)
        self._book(waited, sent, recv, msgs, pull=True)
        self._want_dense = self._want_step = False
        return out

    def apply_many(self, grads, step) -> None:
        """Push summed row gradients (and `pending_dense_grad`, when staged) to every shard;
        nothing when `drop_push` is set (a backup worker's late gradient: the shards apply the
        step from the first N without it), though the next pull still waits for the step."""
        n = self.transport.num_shards
        dense_grad, self.pending_dense_grad = self.pending_dense_grad, None
        if self.drop_push:
            self.drop_push = False
            if self.sync:
                self.min_step = step
            return
        splits = {t: self.partitioner.split(k) for t, (k, _, _) in grads.items()}
        args = []
        for s in range(n):
            part = {}
            for t, (k, g, c) in grads.items():
                pos = splits[t][s]
                if len(pos):
                    part[t] = (k[pos], g[pos], c[pos])
            d = None
            if dense_grad is not None and self.dense_slices is not None:
                a, b = self.dense_slices[s]
                d = dense_grad[a:b] if b > a else None
            args.append((part, d, step) if (part or d is not None or self.sync) else None)
        self.transport.call_all("push", args)
        sent = sum(sum(k.nbytes + g.nbytes + c.nbytes for k, g, c in a[0].values())
                   + (a[1].nbytes if a[1] is not None else 0) for a in args if a is not None)
        self._book(0.0, sent, 0, sum(a is not None for a in args), pull=False)
        if self.sync:
            self.min_step = max(0, step - self.staleness)  # the next pull must see this step applied (SSP: s earlier)

    # ---------------------------------------------------------------- accounting
    def _book(self, waited: float, sent: int, recv: int, msgs: int, pull: bool) -> None:
        """Book one call (the step times it; `waited`: a sync shard's hold on it)."""
        self._wait += waited
        emulated = 0.0
        if self.net is not None and msgs:
            # The worker's NIC carries every shard's bytes; the shards answer in parallel, so
            # one round-trip latency is paid per call, not per shard.
            emulated = transfer_time(self.net, sent + recv, messages=1)
        self._traffic.add("pull" if pull else "push", sent, recv, msgs, emulated)
