"""The worker-side PS client: an EmbeddingStore whose rows live on parameter servers.

Per step, one pull and one push per shard: the batch's distinct keys (already deduplicated
by the embedding layer) are routed with the partitioner, sent to every shard at once
through the transport, and the rows are put back in request order. Bytes and time are
booked per call; with a network model (`--net`) each call also books the time its bytes
would take on that network, separately from the real time.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from psrec.embedding.store import BatchedStore
from psrec.net import NetConfig, transfer_time
from psrec.ps.partition import Partitioner
from psrec.ps.transport import Transport

__all__ = ["PSClient", "CommStats"]


@dataclass
class CommStats:
    """Communication booked by one client (seconds are wall-clock unless named `emulated`)."""

    pull_seconds: float = 0.0
    push_seconds: float = 0.0
    wait_seconds: float = 0.0  # sync barrier: time a shard held a pull until its step was applied
    emulated_seconds: float = 0.0  # what the bytes would take on the configured network
    bytes_sent: int = 0
    bytes_received: int = 0
    messages: int = 0

    def reset(self) -> CommStats:
        out = CommStats(**self.__dict__)
        self.__init__()
        return out


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
    """

    def __init__(self, transport: Transport, partitioner: Partitioner, dims: dict[str, int],
                 sync: bool = False, net: NetConfig | None = None,
                 dense_slices: list[tuple[int, int]] | None = None) -> None:
        if partitioner.num_shards != transport.num_shards:
            raise ValueError(f"partitioner has {partitioner.num_shards} shards, transport {transport.num_shards}")
        self.transport = transport
        self.partitioner = partitioner
        self.dims = dims
        self.sync = sync
        self.net = net
        self.dense_slices = dense_slices
        self.comm = CommStats()
        self.step = 0  # global step of the step in progress (from `begin_step`)
        self.min_step = 0  # sync: the step whose update the next pull must see
        self.dense_values: np.ndarray | None = None  # filled by a pull when dense lives on the PS
        self._want_dense = False
        self._want_step = False

    # ---------------------------------------------------------------- BatchedStore
    def begin_step(self, want_dense: bool, next_global_step: bool) -> None:
        """Ask the next pull to also fetch the dense slices and/or a new global step."""
        self._want_dense = want_dense
        self._want_step = next_global_step

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
        t0 = time.perf_counter()
        replies = self.transport.call_all("pull", args)
        elapsed = time.perf_counter() - t0
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
        self._book(elapsed, waited, sent, recv, msgs, pull=True)
        self._want_dense = self._want_step = False
        return out

    def apply_many(self, grads, step, dense_grad: np.ndarray | None = None) -> None:
        n = self.transport.num_shards
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
        t0 = time.perf_counter()
        self.transport.call_all("push", args)
        elapsed = time.perf_counter() - t0
        sent = sum(sum(k.nbytes + g.nbytes + c.nbytes for k, g, c in a[0].values())
                   + (a[1].nbytes if a[1] is not None else 0) for a in args if a is not None)
        self._book(elapsed, 0.0, sent, 0, sum(a is not None for a in args), pull=False)
        if self.sync:
            self.min_step = step  # the next pull must see this step applied

    # ---------------------------------------------------------------- accounting
    def _book(self, elapsed: float, waited: float, sent: int, recv: int, msgs: int, pull: bool) -> None:
        c = self.comm
        comm = max(elapsed - waited, 0.0)
        if pull:
            c.pull_seconds += comm
        else:
            c.push_seconds += comm
        c.wait_seconds += waited
        c.bytes_sent += sent
        c.bytes_received += recv
        c.messages += msgs
        if self.net is not None and msgs:
            # The worker's NIC carries every shard's bytes; the shards answer in parallel, so
            # one round-trip latency is paid per call, not per shard.
            c.emulated_seconds += transfer_time(self.net, sent + recv, messages=1)
