"""Shared-memory arenas of the same-node PS channel (`psrec.ps.channel`).

Why: a PS pull or push moves a few MB (64K keys x dim 16 = 4 MiB of rows). Through Ray's
object store each such object costs ~3.5 ms of fixed bookkeeping plus copies: 14-15 ms on top
of a 64K-key pull+push on a 2-core laptop, more than the shard's own ~10 ms
(benchmarks/ps_bench.py). When the caller and the PS actor share a node, the arrays can
instead go through memory both processes keep mapped: one copy in, one copy out.

Ownership: the PS creates every arena (an anonymous `memfd`, never a file a client names)
and hands the client its descriptor over the Unix socket. Each connection gets two: requests
(the client writes, the PS reads) and replies (the PS writes, the client reads). The memfd is
sealed against shrinking, so no process holding it can truncate it under the PS's mapping
(which would kill the PS with SIGBUS on its next read); it has no name, so nothing is left in
/dev/shm when either process dies.
"""
from __future__ import annotations

import fcntl
import mmap
import os

import numpy as np

__all__ = ["Arena", "map_fd", "shm_available", "aligned", "ALIGN"]

ALIGN = 64  # cache-line aligned arrays
_MIN_CAPACITY = 1 << 20
_SEALS = getattr(fcntl, "F_SEAL_SHRINK", 2) | getattr(fcntl, "F_SEAL_GROW", 4) | getattr(fcntl, "F_SEAL_SEAL", 1)


def shm_available() -> bool:
    """Sealed memfds are a Linux feature."""
    return hasattr(os, "memfd_create") and hasattr(fcntl, "F_ADD_SEALS")


def aligned(n: int) -> int:
    """`n` bytes rounded up to the arena's alignment."""
    return (n + ALIGN - 1) // ALIGN * ALIGN


def map_fd(fd: int, size: int, writable: bool) -> mmap.mmap:
    """Map `size` bytes of a received arena descriptor, and close the descriptor (the mapping
    keeps the memory). The size must be the arena's: a shorter memfd is refused."""
    try:
        if os.fstat(fd).st_size < size:
            raise ValueError(f"arena descriptor holds {os.fstat(fd).st_size} bytes, announced {size}")
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
        return mmap.mmap(fd, size, mmap.MAP_SHARED, prot)
    finally:
        os.close(fd)


class Arena:
    """A growable, sealed memfd that this process (the PS) creates and maps read-write.

    Args:
        label: a readable name (shows in /proc/PID/maps).
        max_bytes: the largest capacity `ensure` may grow to.
    """

    def __init__(self, label: str, max_bytes: int) -> None:
        self.label = label
        self.max_bytes = max_bytes
        self.fd: int | None = None
        self.buf: mmap.mmap | None = None
        self.capacity = 0

    def ensure(self, nbytes: int) -> bool:
        """Grow to at least `nbytes` (doubling, >= 1 MiB, <= max_bytes): a new memfd; the old
        mapping goes. Returns whether it grew (the peer must map the new `fd`)."""
        if nbytes <= self.capacity:
            return False
        if nbytes > self.max_bytes:
            raise MemoryError(f"arena {self.label}: {nbytes} bytes wanted, limit {self.max_bytes}")
        capacity = min(self.max_bytes, max(_MIN_CAPACITY, 1 << (nbytes - 1).bit_length()))
        fd = os.memfd_create(f"psrec-{self.label}", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.ftruncate(fd, capacity)
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
            buf = mmap.mmap(fd, capacity)
        except BaseException:
            os.close(fd)
            raise
        self.close()
        self.fd, self.buf, self.capacity = fd, buf, capacity
        return True

    def view(self, offset: int, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
        """The array at `offset` (the caller checked that it lies inside the arena)."""
        count = int(np.prod(shape, dtype=np.int64))
        return np.frombuffer(self.buf, dtype=dtype, count=count, offset=offset).reshape(shape)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
        if self.buf is not None:
            try:
                self.buf.close()
            except BufferError:  # views still alive: the mapping goes when the last one does
                pass
        self.fd, self.buf, self.capacity = None, None, 0

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: os may be gone
            pass
