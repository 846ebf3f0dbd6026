"""Same-node bulk payloads for the Ray transport: large numpy arrays travel through
shared-memory files, and the call (a message on `psrec.ps.channel`) carries only their
descriptors.

Why: a PS pull or push moves a few MB (64K keys x dim 16 = 4 MiB of rows). Through Ray's
object store each such object costs ~3.5 ms of fixed bookkeeping plus copies: 14-15 ms on top of a
64K-key pull+push on a 2-core laptop, more than the shard's own ~10 ms (benchmarks/ps_bench.py).
When the caller and the PS actor share a node, the arrays can instead go through a file in
/dev/shm that both processes keep mapped: one copy in, one copy out, and the call is a
small message.

Protocol (one caller, one PS, at most one call in flight between them, which is how
`RayTransport.call_all` works):
- The caller owns two `Arena`s per PS: requests (it writes, the PS reads) and replies (the PS
  writes, the caller reads). It creates their files, and unlinks each file as soon as the PS
  has mapped it (after the first call that used it), so nothing is left in /dev/shm when
  either process is killed.
- `pack` replaces every array of at least `MIN_BYTES` in a nested dict/tuple/list by a `Slot`
  (offset, dtype, shape) into the arena; `unpack` turns the slots back into arrays: copies
  where the receiver keeps them past the call (a sync-mode PS holds pushed gradients until
  the step's last worker pushes), read-only views where it is done with them before its
  next call (a PS applying an async push; the client scattering pulled rows into the batch).
- A reply that does not fit in the reply arena goes back inline in the message, with the
  size it needed; the caller grows the arena for next time.

Arrays travel as raw bytes with their dtype and shape, so what arrives is what was sent.
"""
from __future__ import annotations

import mmap
import os
import threading
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Arena", "MapCache", "Slot", "pack", "unpack", "payload_bytes", "shm_available", "MIN_BYTES"]

SHM_DIR = "/dev/shm"
MIN_BYTES = 64 << 10  # smaller arrays are cheaper inline in the Ray message
_ALIGN = 64  # cache-line aligned slots


@dataclass(frozen=True)
class Slot:
    """Where one array lies in an arena: byte offset, dtype string, shape."""

    offset: int
    dtype: str
    shape: tuple[int, ...]


def shm_available() -> bool:
    """Shared-memory files need a writable /dev/shm (Linux)."""
    return os.path.isdir(SHM_DIR) and os.access(SHM_DIR, os.W_OK)


def _aligned(n: int) -> int:
    return (n + _ALIGN - 1) // _ALIGN * _ALIGN


def _walk(obj: Any, fn) -> Any:
    """`obj` with `fn` applied to every array and Slot inside dicts, tuples and lists."""
    if isinstance(obj, (np.ndarray, Slot)):
        return fn(obj)
    if isinstance(obj, dict):
        return {k: _walk(v, fn) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return tuple(_walk(v, fn) for v in obj)
    if isinstance(obj, list):
        return [_walk(v, fn) for v in obj]
    return obj


def payload_bytes(obj: Any) -> int:
    """Arena bytes that `pack` needs for `obj` (its arrays of at least MIN_BYTES, aligned)."""
    total = [0]

    def count(a):
        if isinstance(a, np.ndarray) and a.nbytes >= MIN_BYTES and a.dtype != object:
            total[0] += _aligned(a.nbytes)
        return a

    _walk(obj, count)
    return total[0]


def pack(obj: Any, buf: mmap.mmap) -> Any:
    """Copy `obj`'s large arrays into `buf` (which must hold `payload_bytes(obj)`) and return
    `obj` with Slots in their place."""
    offset = [0]

    def put(a):
        if not (isinstance(a, np.ndarray) and a.nbytes >= MIN_BYTES and a.dtype != object):
            return a
        at = offset[0]
        np.copyto(np.frombuffer(buf, dtype=a.dtype, count=a.size, offset=at).reshape(a.shape), a)
        offset[0] = at + _aligned(a.nbytes)
        return Slot(at, a.dtype.str, tuple(a.shape))

    return _walk(obj, put)


def unpack(obj: Any, buf: mmap.mmap | None, copy: bool = True) -> Any:
    """`obj` with every Slot replaced by its array from `buf`: a private copy, or with
    `copy=False` a read-only view that is valid only until the peer's next write (for a
    receiver that is done with the arrays before its next call; a fresh 4 MiB copy costs
    ~1000 first-touch page faults, several ms on a VM)."""

    def get(s):
        if not isinstance(s, Slot):
            return s
        dtype = np.dtype(s.dtype)
        count = int(np.prod(s.shape, dtype=np.int64))
        view = np.frombuffer(buf, dtype=dtype, count=count, offset=s.offset).reshape(s.shape)
        if copy:
            return view.copy()
        view.flags.writeable = False
        return view

    return _walk(obj, get)


def _map_file(path: str, size: int) -> mmap.mmap:
    fd = os.open(path, os.O_RDWR)
    try:
        return mmap.mmap(fd, size)
    finally:
        os.close(fd)  # the mapping keeps the memory; the file may be unlinked from now on


class Arena:
    """A growable shared-memory file that this process creates and maps.

    `name` is the handle the peer maps it by: (path, capacity in bytes).
    """

    def __init__(self, label: str) -> None:
        self.label = label
        self.path: str | None = None
        self.buf: mmap.mmap | None = None
        self.capacity = 0
        self._linked = False  # the file still exists: the peer has not mapped it yet

    @property
    def name(self) -> tuple[str, int] | None:
        return None if self.path is None else (self.path, self.capacity)

    def ensure(self, nbytes: int) -> None:
        """Grow to at least `nbytes` (doubling, >= 1 MiB): a new file; the old mapping goes."""
        if nbytes <= self.capacity:
            return
        capacity = max(1 << 20, 1 << (nbytes - 1).bit_length())
        path = os.path.join(SHM_DIR, f"psrec-{os.getpid()}-{self.label}-{uuid.uuid4().hex[:12]}")
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        try:
            os.ftruncate(fd, capacity)
            buf = mmap.mmap(fd, capacity)
        finally:
            os.close(fd)
        self.close()
        self.path, self.buf, self.capacity, self._linked = path, buf, capacity, True

    def peer_mapped(self) -> None:
        """The peer has mapped the current file: remove its name (the memory stays mapped)."""
        if self._linked:
            _unlink(self.path)
            self._linked = False

    def close(self) -> None:
        if self._linked:
            _unlink(self.path)
        if self.buf is not None:
            try:
                self.buf.close()
            except BufferError:  # views still alive: the mapping goes when the last one does
                pass
        self.path, self.buf, self.capacity, self._linked = None, None, 0, False

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: os may be gone
            pass


def _unlink(path: str | None) -> None:
    try:
        if path:
            os.unlink(path)
    except FileNotFoundError:
        pass


class MapCache:
    """The peer's side: one mapping per channel (caller id + direction), replaced when the
    caller's arena grows into a new file. Thread-safe (a PS actor serves calls on threads)."""

    def __init__(self) -> None:
        self._maps: dict[str, tuple[str, mmap.mmap]] = {}
        self._lock = threading.Lock()

    def get(self, channel: str, name: tuple[str, int]) -> mmap.mmap:
        path, size = name
        with self._lock:
            have = self._maps.get(channel)
            if have is not None and have[0] == path:
                return have[1]
            buf = _map_file(path, size)
            self._maps[channel] = (path, buf)
        if have is not None:
            try:
                have[1].close()
            except BufferError:  # a view is still alive somewhere; let GC unmap it
                pass
        return buf

    def __len__(self) -> int:
        return len(self._maps)
