"""Run one call per item on its own thread, the way in-process workers and ranks run."""
from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

__all__ = ["on_threads"]

T = TypeVar("T")


def on_threads(items: Sequence[T], fn: Callable[[T], Any]) -> list[Any]:
    """`[fn(item) for item in items]`, each call on its own (daemon) thread, all at once.

    Waits for every thread, then re-raises the first exception any call raised on the caller's
    thread (a worker's failure must fail the job, not vanish with its thread).

    >>> on_threads([1, 2, 3], lambda x: x * x)
    [1, 4, 9]
    """
    out: list[Any] = [None] * len(items)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            out[i] = fn(items[i])
        except BaseException as e:  # surfaced on the caller's thread after join
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(items))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return out
