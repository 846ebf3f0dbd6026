"""Read the next batches in the background while the current step trains.

Two readers with one interface (iterate: `(job, batch, seconds waited)`), both bounded to
`depth` batches ahead, so the step's `data` phase is only the time it waits for a batch
that is not ready yet:

- `ReaderProcess`: a child process rebuilds the source (`DataSource.describe()`) and
  reads there. The CSV/libsvm parse is Python holding the GIL, and a reader *thread*
  makes every short torch call of the step wait for the GIL: measured, it slowed a
  DeepFM step more than reading inline. A process shares no GIL; batches come back
  pickled through a pipe from our own child (trusted bytes), ~0.3 MB each.
- `Prefetcher`: a thread, for reads that release the GIL (pyarrow decoding) or sources
  that cannot be rebuilt in another process.

The reads are the ones the caller would make, in the same order, so what trains is
unchanged (the equivalence and resume oracles hold with or without them).
"""
from __future__ import annotations

import pickle
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

__all__ = ["Prefetcher", "ReaderProcess", "PrefetchTimeout", "ReaderDied"]


class PrefetchTimeout(TimeoutError):
    """The reader thread produced nothing within the deadline."""


class ReaderDied(RuntimeError):
    """The reader process ended without handing over its batches."""


_DONE = object()


class Prefetcher:
    """Items `read(*job)` for each job of `jobs`, computed up to `depth` ahead on one thread.

    Iterating yields `(job, item, wait_s)`: `wait_s` the seconds the consumer waited for it
    (0 when it was ready). An exception in `read` is raised in the consumer at that item.
    `close()` (or leaving a `with` block) stops the thread within one read.

    Args:
        read: called with each job's arguments on the reader thread.
        jobs: the argument tuples, in order (may be lazy).
        depth: items read ahead at most (memory: `depth` batches).
        timeout_s: the longest the consumer waits for one item before `PrefetchTimeout`.

    >>> with Prefetcher(lambda a, b: list(range(a, b)), [(0, 2), (2, 4)], depth=1) as p:
    ...     [item for _, item, _ in p]
    [[0, 1], [2, 3]]
    """

    def __init__(self, read: Callable[..., Any], jobs: Iterable[tuple], depth: int = 2,
                 timeout_s: float = 300.0) -> None:
        if depth < 1:
            raise ValueError(f"prefetch depth must be >= 1, got {depth}")
        self._read, self._jobs, self._timeout = read, iter(jobs), timeout_s
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="psrec-prefetch", daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for job in self._jobs:
                if self._stop.is_set() or not self._put((job, self._read(*job), None)):
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
            self._put((None, None, e))
            return
        self._put(_DONE)

    def __iter__(self) -> Iterator[tuple[tuple, Any, float]]:
        while True:
            t0 = time.perf_counter()
            try:
                got = self._q.get(timeout=self._timeout)
            except queue.Empty:
                raise PrefetchTimeout(f"no batch from the reader thread in {self._timeout:g} s") from None
            wait = time.perf_counter() - t0
            if got is _DONE:
                return
            job, item, err = got
            if err is not None:
                raise err
            yield job, item, wait

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self._timeout)

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()



class ReaderProcess:
    """Batches of `(epoch, start, end)` jobs, read ahead by a child process.

    Args:
        spec: how the child rebuilds the source (`source.describe()`, a `SourceSpec`).
        order: the training rows' per-epoch order (`psrec.data.shuffle.RowOrder`) or None.
        jobs: (epoch, start, end) per batch, in training order.
        depth: batches held ready in this process at most (one more may be in the pipe).
        timeout_s: the longest the consumer waits for one batch (the first includes the
            child's start and its opening of the source, e.g. a CSV's line index).

    The child is a fresh interpreter (`python -c`, not multiprocessing: that re-imports the
    caller's `__main__`, which breaks scripts without a main guard), fed one pickled message
    (spec, order, jobs) and answering with length-prefixed pickled frames on its own pipe.
    After the last batch `malformed` holds the malformed lines the child's source skipped
    (this process's copy never read those rows). Leaving the `with` block stops the child,
    bounded: terminate, then kill.
    """

    def __init__(self, spec, order, jobs: Sequence[tuple[int, int, int]], depth: int = 2,
                 timeout_s: float = 600.0) -> None:
        import os
        import subprocess
        import sys

        self._jobs = [tuple(int(x) for x in j) for j in jobs]
        self.malformed: list = []
        try:
            payload = pickle.dumps((spec, order, self._jobs), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as e:  # noqa: BLE001 - any pickling failure means the same thing
            raise TypeError(f"data.reader = \"process\": the source cannot be sent to a reader process ({e}); "
                            "use data.reader = \"thread\" or \"inline\"") from None
        to_child, self._w = os.pipe()
        self._r, from_child = os.pipe()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", "import sys; from psrec.data.prefetch import _child; "
                 "_child(int(sys.argv[1]), int(sys.argv[2]))", str(to_child), str(from_child)],
                pass_fds=(to_child, from_child), env=env, stdin=subprocess.DEVNULL)
        finally:
            os.close(to_child)
            os.close(from_child)
        try:
            _send_bytes(self._w, payload)
        except OSError:
            pass  # the child died at once: the first batch says so
        self._pf = Prefetcher(self._recv, [(j,) for j in self._jobs] + [(None,)], depth, timeout_s)

    def _recv(self, job):
        kind, item = _recv(self._r, self._proc)
        if kind == "error":
            raise item
        if (kind == "done") != (job is None):
            raise ReaderDied(f"the reader process sent {kind!r} for batch {job}")
        return item

    def __iter__(self) -> Iterator[tuple[tuple[int, int, int], Any, float]]:
        for (job,), item, wait in self._pf:
            if job is None:
                self.malformed = list(item)
                return
            yield job, item, wait

    def close(self, patience_s: float = 5.0) -> None:
        import os
        import subprocess

        for fd in (self._w,):
            try:
                os.close(fd)  # the child's next read of its pipe ends it
            except OSError:
                pass
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=patience_s)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=patience_s)
        self._pf.close()  # its thread sees the pipe's end now
        try:
            os.close(self._r)
        except OSError:
            pass

    def __enter__(self) -> ReaderProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_HEADER = 8  # bytes: a frame's length, little-endian


def _send(fd: int, obj) -> None:
    _send_bytes(fd, pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


def _send_bytes(fd: int, data: bytes) -> None:
    import os

    view = memoryview(len(data).to_bytes(_HEADER, "little") + data)
    while view:
        view = view[os.write(fd, view):]


def _read_exact(fd: int, n: int, proc=None) -> bytes:
    import os

    parts, got = [], 0
    while got < n:
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            code = proc.poll() if proc is not None else None
            raise ReaderDied(f"the reader process ended (exit code {code}) before its batches were read")
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def _recv(fd: int, proc=None):
    """One frame from our own child (trusted bytes: it is this program's process)."""
    n = int.from_bytes(_read_exact(fd, _HEADER, proc), "little")
    return pickle.loads(_read_exact(fd, n, proc))


def _child(rfd: int, wfd: int) -> None:
    """The reader process: rebuild the source, read each (epoch, start, end) in order, send
    ("batch", Batch) frames, then ("done", malformed lines), or ("error", exception)."""
    try:
        spec, order, jobs = _recv(rfd)
        source = spec.build()
        for epoch, start, end in jobs:
            src = order.view(source, epoch) if order is not None else source
            _send(wfd, ("batch", src.read(start, end)))
        _send(wfd, ("done", source.malformed_lines()))
    except BrokenPipeError:
        return  # the trainer stopped reading (closed): nothing to report to
    except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
        try:
            pickle.dumps(e)
        except Exception:  # noqa: BLE001 - an exception that cannot travel: its text does
            e = ReaderDied(f"the reader process failed: {type(e).__name__}: {e}")
        try:
            _send(wfd, ("error", e))
        except OSError:
            pass
