"""A progress bar that shows throughput and running loss, or nothing when disabled."""
from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from tqdm import tqdm

__all__ = ["progress_bar"]


class _Bar:
    def __init__(self, bar: tqdm | None) -> None:
        self._bar = bar
        self._last = 0.0

    def update(self, n: int = 1, **stats: float | None) -> None:
        if self._bar is None:
            return
        self._bar.update(n)
        now = time.monotonic()
        if stats and now - self._last > 0.5:  # formatting every step costs more than it shows
            self._last = now
            self._bar.set_postfix({k: _fmt(v) for k, v in stats.items() if v is not None}, refresh=False)


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.4f}"


@contextmanager
def progress_bar(total: int, enabled: bool = True, desc: str = "") -> Iterator[_Bar]:
    """Yield an object with `update(n, **stats)`; draws on stderr when enabled."""
    # disable=None: tqdm draws only on a terminal, so logs and CI output stay readable.
    bar = tqdm(total=total, desc=desc, unit="step", file=sys.stderr, dynamic_ncols=True,
               leave=False, mininterval=0.5, disable=None) if enabled else None
    try:
        yield _Bar(bar)
    finally:
        if bar is not None:
            bar.close()
