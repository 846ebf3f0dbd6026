"""The collective transport seam: all-to-all and all-reduce among the ranks of a group.

    Collectives          the small interface the sharded store and the dense sync use
    TorchCollectives     torch.distributed: gloo on CPU, NCCL when CUDA is available
    ThreadGroup          an in-process group of N ranks on threads, passing real messages
                         through mailboxes (tests, debugging); it counts every message

Every call is booked in the rank's `CommLog`: payload bytes sent and received by this rank
(its own block of an all-to-all never leaves it, so it is not counted) and messages sent, by
the algorithm's schedule:

    all-to-all (pairwise exchange)   N-1 messages per rank; bytes = the blocks for other ranks
    all-reduce (ring)                2(N-1) messages per rank; bytes = 2S - |c_(r+1)| - |c_(r+2)|
                                     (= 2(N-1)/N S for equal chunks c of S bytes)

(R. Thakur, R. Rabenseifner, W. Gropp, "Optimization of Collective Communication Operations
in MPICH", IJHPCA 19(1), 2005.) `ThreadGroup` runs exactly these schedules, so its counted
traffic checks the formula; for torch.distributed the formula is what gets booked (gloo's
internal schedule is not observable from torch; the ring is the bandwidth-optimal schedule
that nccl-tests' bus bandwidth assumes).
"""
from __future__ import annotations

import queue
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np
import torch

__all__ = ["CommRecord", "CommLog", "Work", "Collectives", "TorchCollectives", "ThreadGroup",
           "ring_chunks", "ring_allreduce_traffic", "pick_backend", "init_torch_group", "open_rendezvous"]


@dataclass
class CommRecord:
    """One collective call on one rank.

    Args:
        op: "alltoall" or "allreduce".
        tag: what it carried ("sizes", "keys", "rows", "grads", "dense", ...).
        bytes_sent, bytes_received: payload bytes this rank put on / took off the network.
        messages: messages this rank sent (each pays one latency on the emulated network).
        seconds: wall-clock seconds the call blocked (0 for an asynchronous launch).
        started: `time.perf_counter()` when the call was issued (None: not timed).
        finished: `time.perf_counter()` when this rank had the result: the call's return, or
            for an asynchronous launch the return of its `Work.wait()` (None until then).
            `psrec.comm.nic` emulates a link from these two instants.
    """

    op: str
    tag: str
    bytes_sent: int
    bytes_received: int
    messages: int
    seconds: float = 0.0
    started: float | None = None
    finished: float | None = None


@dataclass
class CommLog:
    """The records of one rank since the last `take()`."""

    records: list[CommRecord] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, rec: CommRecord) -> None:
        with self._lock:
            self.records.append(rec)

    def take(self) -> list[CommRecord]:
        """The records so far, and a fresh log."""
        with self._lock:
            out, self.records = self.records, []
        return out


class Work:
    """Handle of an asynchronous collective: `wait()` blocks until its result is in place.

    `done_at` is the `time.perf_counter()` at which the collective completed, when known
    (set by the transport's completion callback; None until then).
    """

    def __init__(self, wait=None, done_at: float | None = None, record: CommRecord | None = None) -> None:
        self._wait = wait
        self.done_at = done_at
        self._record = record

    def wait(self) -> None:
        if self._wait is not None:
            w, self._wait = self._wait, None
            w()
        if self._record is not None and self._record.finished is None:
            self._record.finished = time.perf_counter()  # when this rank had the result


def ring_chunks(numel: int, n: int) -> list[int]:
    """Element counts of the n chunks a ring all-reduce splits `numel` elements into
    (as `np.array_split`: the first numel % n chunks get one more)."""
    base, extra = divmod(numel, n)
    return [base + (1 if i < extra else 0) for i in range(n)]


def ring_allreduce_traffic(numel: int, itemsize: int, n: int, rank: int) -> tuple[int, int, int]:
    """(bytes sent, bytes received, messages sent) by `rank` in a ring all-reduce of
    `numel` elements on n ranks: reduce-scatter then all-gather, N-1 steps each.

    >>> ring_allreduce_traffic(1000, 4, 4, 0)      # 2 * 3/4 * 4000 bytes, 2 * 3 messages
    (6000, 6000, 6)
    """
    if n == 1:
        return 0, 0, 0
    c = [x * itemsize for x in ring_chunks(numel, n)]
    total = sum(c)
    sent = 2 * total - c[(rank + 1) % n] - c[(rank + 2) % n]
    received = 2 * total - c[rank] - c[(rank + 1) % n]
    return sent, received, 2 * (n - 1)


class Collectives(ABC):
    """All-to-all and all-reduce among `world_size` ranks; this object is rank `rank`.

    Every rank must issue the same collectives in the same order (as with any MPI-style
    group); tensors are CPU tensors (an implementation on an accelerator moves them).
    """

    rank: int
    world_size: int
    log: CommLog

    @abstractmethod
    def all_to_all_single(self, send: torch.Tensor, send_splits: Sequence[int],
                          recv_splits: Sequence[int], tag: str, out: torch.Tensor | None = None) -> torch.Tensor:
        """1-D `send` holds the blocks for ranks 0..N-1 back to back (`send_splits[d]`
        elements for rank d); returns the 1-D concatenation of the blocks received from
        ranks 0..N-1 (`recv_splits[s]` elements from rank s), written into `out` when given
        (1-D, exactly sum(recv_splits) elements of send's dtype)."""

    @abstractmethod
    def all_reduce(self, t: torch.Tensor, tag: str = "dense", async_op: bool = False,
                   track_done: bool = False) -> Work:
        """Sum `t` (1-D, contiguous) over the ranks, in place. With `async_op` the sum is in
        place only after the returned Work's `wait()`; with `track_done` the Work's `done_at`
        records when it completed (a completion callback: it costs ~0.2 ms, so only callers
        that need the time ask for it)."""

    def side(self) -> Collectives:
        """A second group of the same ranks, with its own log, whose collectives may run on
        another thread at the same time as this group's (a pipelined step's key exchange
        beside the dense all-reduce): each group keeps its own order. Collective: every rank
        calls it, at the same point."""
        raise NotImplementedError(f"{type(self).__name__} has no side group")

    def _book_alltoall(self, send: torch.Tensor, send_splits, recv_splits, tag: str, started: float) -> None:
        size = send.element_size()
        r = self.rank
        now = time.perf_counter()
        self.log.add(CommRecord("alltoall", tag, (sum(send_splits) - send_splits[r]) * size,
                                (sum(recv_splits) - recv_splits[r]) * size, self.world_size - 1,
                                now - started, started, now))

    def _book_allreduce(self, t: torch.Tensor, tag: str, started: float, async_op: bool) -> CommRecord:
        """The record of a blocking call (finished now), or of an asynchronous launch (its
        `Work.wait()` sets `finished`)."""
        sent, recv, msgs = ring_allreduce_traffic(t.numel(), t.element_size(), self.world_size, self.rank)
        now = time.perf_counter()
        rec = CommRecord("allreduce", tag, sent, recv, msgs, 0.0 if async_op else now - started, started,
                         None if async_op else now)
        self.log.add(rec)
        return rec


# ------------------------------------------------------------------------ torch.distributed
def pick_backend(backend: str = "auto") -> str:
    """"auto" -> "nccl" when CUDA is available, else "gloo"."""
    if backend == "auto":
        return "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl" and not torch.cuda.is_available():
        raise RuntimeError("collective.backend = 'nccl' needs CUDA, and torch sees no GPU")
    return backend


def open_rendezvous(host: str, world_size: int, timeout_s: float = 300.0):
    """Rank 0's rendezvous store, listening on a port the OS picks as it binds (port 0):
    `(store, port)`. The port is held from the moment it is chosen, so nothing can take it
    before the group forms, as it can a port found free and bound later (seen on a loaded CI
    machine as EADDRINUSE at the rendezvous). `host`: the address the other ranks reach."""
    import torch.distributed as dist

    store = dist.TCPStore(host, 0, world_size, is_master=True, timeout=timedelta(seconds=timeout_s),
                          wait_for_workers=False)
    return store, int(store.port)


def init_torch_group(master: tuple[str, int], rank: int, world_size: int, backend: str = "auto",
                     timeout_s: float = 300.0, store=None) -> TorchCollectives:
    """Join the default process group whose rendezvous listens at `master` (host, port): rank
    0 passes the `store` of its `open_rendezvous`, the others connect to it. Without a store,
    rank 0 listens at `master` itself (a port the caller chose)."""
    import torch.distributed as dist

    backend = pick_backend(backend)
    if backend == "nccl":
        torch.cuda.set_device(rank % torch.cuda.device_count())
    timeout = timedelta(seconds=timeout_s)
    if store is None and rank != 0:
        store = dist.TCPStore(master[0], master[1], world_size, is_master=False, timeout=timeout)
    if store is None:
        dist.init_process_group(backend, init_method=f"tcp://{master[0]}:{master[1]}", rank=rank,
                                world_size=world_size, timeout=timeout)
    else:
        dist.init_process_group(backend, store=store, rank=rank, world_size=world_size, timeout=timeout)
    return TorchCollectives()


class TorchCollectives(Collectives):
    """`torch.distributed` on an initialised process group.

    With NCCL the payloads are copied to this rank's GPU and back (the model and the
    embedding shards stay on the CPU in this project); with gloo they are used in place.
    """

    def __init__(self, group=None) -> None:
        import torch.distributed as dist

        self._dist = dist
        self.group = group
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)
        self.backend = dist.get_backend(group)
        self.device = torch.device("cuda", torch.cuda.current_device()) if self.backend == "nccl" else None
        self.log = CommLog()

    def side(self) -> TorchCollectives:
        ranks = list(range(self.world_size)) if self.group is None else self._dist.get_process_group_ranks(self.group)
        return TorchCollectives(self._dist.new_group(ranks, backend=self.backend))

    def all_to_all_single(self, send, send_splits, recv_splits, tag, out=None):
        send_splits, recv_splits = [int(x) for x in send_splits], [int(x) for x in recv_splits]
        t0 = time.perf_counter()
        dev = self.device
        src = send.contiguous() if dev is None else send.to(dev)
        dst = out if out is not None and dev is None else torch.empty(sum(recv_splits), dtype=send.dtype,
                                                                        device=src.device)
        self._dist.all_to_all_single(dst, src, recv_splits, send_splits, group=self.group)
        if dev is not None:
            dst = dst.cpu() if out is None else out.copy_(dst)
        self._book_alltoall(send, send_splits, recv_splits, tag, t0)
        return dst

    def all_reduce(self, t, tag="dense", async_op=False, track_done=False):
        t0 = time.perf_counter()
        dev = self.device
        buf = t if dev is None else t.to(dev, non_blocking=True)
        work = self._dist.all_reduce(buf, op=self._dist.ReduceOp.SUM, group=self.group, async_op=async_op)

        def finish() -> None:
            if work is not None:
                work.wait()
            if dev is not None:
                t.copy_(buf.cpu())

        if not async_op:
            finish()
            self._book_allreduce(t, tag, t0, False)
            return Work(done_at=time.perf_counter())
        handle = Work(finish, record=self._book_allreduce(t, tag, t0, True))
        if track_done:
            def mark(_fut) -> None:  # runs on the backend's thread when the all-reduce completes
                handle.done_at = time.perf_counter()

            work.get_future().then(mark)
        return handle


# ------------------------------------------------------------------------------ in process
class ThreadGroup:
    """An in-process group of `world_size` ranks, one thread each, that pass real messages.

    Each ordered pair of ranks has a FIFO mailbox; since every rank issues the same
    collectives in the same order, the k-th message from s to d belongs to the same
    collective on both sides. Every `put` is counted per sending rank (`sent_messages`,
    `sent_bytes`), independently of what the ranks book in their logs.

    Example:
        >>> import threading
        >>> g = ThreadGroup(2)
        >>> out = [None, None]
        >>> def run(r):
        ...     t = torch.full((4,), float(r + 1))
        ...     g.member(r).all_reduce(t)
        ...     out[r] = t.tolist()
        >>> ts = [threading.Thread(target=run, args=(r,)) for r in range(2)]
        >>> _ = [t.start() for t in ts]; _ = [t.join() for t in ts]
        >>> out[0], g.sent_messages
        ([3.0, 3.0, 3.0, 3.0], [2, 2])
    """

    def __init__(self, world_size: int, timeout_s: float = 60.0) -> None:
        if world_size < 1:
            raise ValueError(f"world_size must be >= 1, got {world_size}")
        self.world_size = world_size
        self.timeout_s = timeout_s  # a peer that never arrives fails the test instead of hanging it
        self._boxes = {(s, d): queue.Queue() for s in range(world_size) for d in range(world_size) if s != d}
        self.sent_messages = [0] * world_size
        self.sent_bytes = [0] * world_size
        self._members = [_ThreadCollectives(self, r) for r in range(world_size)]
        self._side: ThreadGroup | None = None
        self._side_lock = threading.Lock()

    def member(self, rank: int) -> Collectives:
        return self._members[rank]

    def side(self) -> ThreadGroup:
        """The group's side group (made once, shared by every member: `Collectives.side`)."""
        with self._side_lock:
            if self._side is None:
                self._side = ThreadGroup(self.world_size, self.timeout_s)
            return self._side

    def _send(self, src: int, dst: int, payload: torch.Tensor) -> None:
        self.sent_messages[src] += 1  # only rank src's thread touches its counters
        self.sent_bytes[src] += payload.numel() * payload.element_size()
        self._boxes[(src, dst)].put(payload.clone())

    def _recv(self, src: int, dst: int) -> torch.Tensor:
        try:
            return self._boxes[(src, dst)].get(timeout=self.timeout_s)
        except queue.Empty:
            raise TimeoutError(f"rank {dst}: no message from rank {src} within {self.timeout_s}s "
                               "(did every rank issue the same collectives?)") from None


class _ThreadCollectives(Collectives):
    """Rank `rank` of a ThreadGroup: pairwise-exchange all-to-all and ring all-reduce."""

    def __init__(self, group: ThreadGroup, rank: int) -> None:
        self.g = group
        self.rank = rank
        self.world_size = group.world_size
        self.log = CommLog()

    def side(self) -> Collectives:
        return self.g.side().member(self.rank)

    def all_to_all_single(self, send, send_splits, recv_splits, tag, out=None):
        t0 = time.perf_counter()
        n, r = self.world_size, self.rank
        send_off = np.concatenate([[0], np.cumsum(send_splits)]).astype(int)
        recv_off = np.concatenate([[0], np.cumsum(recv_splits)]).astype(int)
        if out is None:
            out = torch.empty(int(recv_off[-1]), dtype=send.dtype)
        out[recv_off[r]:recv_off[r + 1]] = send[send_off[r]:send_off[r + 1]]
        for k in range(1, n):  # pairwise exchange: in round k send to r+k, receive from r-k
            d, s = (r + k) % n, (r - k) % n
            self.g._send(r, d, send[send_off[d]:send_off[d + 1]])
            got = self.g._recv(s, r)
            if got.numel() != recv_splits[s]:
                raise ValueError(f"rank {r}: expected {recv_splits[s]} elements from rank {s}, got {got.numel()}")
            out[recv_off[s]:recv_off[s + 1]] = got
        self._book_alltoall(send, send_splits, recv_splits, tag, t0)
        return out

    def all_reduce(self, t, tag="dense", async_op=False, track_done=False):
        # Run now even when asked to be asynchronous: the in-process group has no progress
        # thread, and every rank reaches the same call in the same order anyway.
        t0 = time.perf_counter()
        n, r = self.world_size, self.rank
        if n > 1:
            off = np.concatenate([[0], np.cumsum(ring_chunks(t.numel(), n))]).astype(int)
            chunk = [t[off[i]:off[i + 1]] for i in range(n)]
            right, left = (r + 1) % n, (r - 1) % n
            for k in range(n - 1):  # reduce-scatter: afterwards rank r holds chunk r+1 summed
                self.g._send(r, right, chunk[(r - k) % n])
                chunk[(r - k - 1) % n].add_(self.g._recv(left, r))
            for k in range(n - 1):  # all-gather
                self.g._send(r, right, chunk[(r + 1 - k) % n])
                chunk[(r - k) % n].copy_(self.g._recv(left, r))
        rec = self._book_allreduce(t, tag, t0, async_op)
        return Work(done_at=time.perf_counter(), record=rec if async_op else None)
