"""Wall-clock time per phase of a training step (data, lookup, compute, apply, ...)."""
from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["PhaseTimer"]


class PhaseTimer:
    """Accumulates seconds per named phase.

    Example:
        >>> t = PhaseTimer()
        >>> with t.phase("data"):
        ...     pass
        >>> sorted(t.totals)
        ['data']
    """

    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)  # seconds

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.totals[name] += time.perf_counter() - t0

    def add(self, name: str, seconds: float) -> None:
        self.totals[name] += seconds

    def as_dict(self) -> dict[str, float]:
        return dict(self.totals)
