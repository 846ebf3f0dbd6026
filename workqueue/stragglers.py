"""The straggler model: how much slower than nominal each worker runs at each moment.

Pure Python + numpy (no Ray, no clock): real runs apply it as extra compute time and the
simulator reuses it unchanged. Three sources of slowness, multiplied together:

1. fixed per-worker factors, `"1:4x,3:2x"` (worker 1 four times slower, worker 3 twice);
2. factors drawn once per worker from a distribution: `max(1, LogNormal(0, sigma))`, so
   about half the workers run at full speed and the rest have a heavy-tailed slowdown (the
   shape measured straggler populations tend to have);
3. random slow periods, a model of noisy co-located neighbours: per worker an alternating
   renewal process, normal stretches ~ Exp(mean 1/period_rate_per_s) then slow episodes
   ~ Exp(mean period_mean_s) during which the worker is `period_factor` times slower.

Everything is a deterministic function of (config, worker, t): the same seed gives the
same stragglers in the static and dynamic runs, and in the simulator.
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = ["StragglerConfig", "Stragglers", "parse_factors"]


def parse_factors(spec: str) -> dict[int, float]:
    """`"1:4x,3:2x"` -> `{1: 4.0, 3: 2.0}`. The trailing `x` is optional; factors must be >= 1.

    Example:
        >>> parse_factors("1:4x, 3:2.5")
        {1: 4.0, 3: 2.5}
    """
    out: dict[int, float] = {}
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        w, sep, f = part.partition(":")
        f = f.strip().lower().removesuffix("x")
        try:
            worker, factor = int(w), float(f)
        except ValueError:
            raise ValueError(f"straggler {part!r}: expected WORKER:FACTORx, e.g. 1:4x") from None
        if not sep or worker < 0:
            raise ValueError(f"straggler {part!r}: expected WORKER:FACTORx with WORKER >= 0")
        if not factor >= 1.0 or not math.isfinite(factor):
            raise ValueError(f"straggler {part!r}: the factor must be a finite number >= 1")
        if worker in out:
            raise ValueError(f"straggler {part!r}: worker {worker} given twice")
        out[worker] = factor
    return out


@dataclass(frozen=True)
class StragglerConfig:
    """Which workers are slow, when, and by how much. The default is no stragglers.

    Args:
        factors: fixed factors, `"WORKER:FACTORx,..."`.
        dist: `lognormal` draws a factor per worker, `max(1, exp(sigma * Z))`; `none` skips it.
        dist_sigma: sigma of that lognormal.
        period_rate_per_s: slow episodes start at this rate per worker (per second of
            normal running); 0 turns slow periods off.
        period_mean_s: mean length of a slow episode, seconds.
        period_factor: slowdown during an episode (multiplies the other factors).
        seed: all random draws derive from it.

    Example:
        >>> Stragglers(StragglerConfig(factors="1:4x"), 4).slowdown(1, 0.0)
        4.0
    """

    factors: str = ""
    dist: Literal["none", "lognormal"] = "none"
    dist_sigma: float = 0.5  # median slowed worker ~1.4x, 1 in 40 above ~2.7x
    period_rate_per_s: float = 0.0
    period_mean_s: float = 2.0  # seconds: long against a task (~0.2 s), short against a job (~1 min)
    period_factor: float = 3.0  # a neighbour taking two of three cycles
    seed: int = 0

    def __post_init__(self) -> None:
        parse_factors(self.factors)  # raises on bad syntax
        if self.dist not in ("none", "lognormal"):
            raise ValueError(f"dist must be none or lognormal, got {self.dist!r}")
        if self.dist_sigma < 0:
            raise ValueError(f"dist_sigma must be >= 0, got {self.dist_sigma}")
        if self.period_rate_per_s < 0:
            raise ValueError(f"period_rate_per_s must be >= 0, got {self.period_rate_per_s}")
        if not self.period_mean_s > 0:
            raise ValueError(f"period_mean_s must be > 0, got {self.period_mean_s}")
        if not self.period_factor >= 1:
            raise ValueError(f"period_factor must be >= 1, got {self.period_factor}")


class Stragglers:
    """The straggler model of one job with `num_workers` workers.

    `slowdown(w, t)` is worker w's slowdown (>= 1) at `t` seconds after the job start;
    `work_time(w, t_start, base_seconds)` is the wall time of work that takes
    `base_seconds` at full speed and starts at `t_start`, integrating slow periods.

    Example:
        >>> s = Stragglers(StragglerConfig(factors="0:2x"), 2)
        >>> s.work_time(0, 0.0, 1.5), s.work_time(1, 0.0, 1.5)
        (3.0, 1.5)
    """

    def __init__(self, config: StragglerConfig, num_workers: int) -> None:
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        self.config = config
        self.num_workers = num_workers
        fixed = parse_factors(config.factors)
        bad = [w for w in fixed if w >= num_workers]
        if bad:
            raise ValueError(f"straggler worker(s) {bad} out of range for {num_workers} workers")
        base = np.ones(num_workers)
        for w, f in fixed.items():
            base[w] = f
        if config.dist == "lognormal":
            drawn = np.random.default_rng([config.seed, 2]).lognormal(0.0, config.dist_sigma, num_workers)
            base *= np.maximum(1.0, drawn)
        self.base = base  # (num_workers,) slowdown outside slow periods
        # Slow episodes per worker as sorted, disjoint [start, end) seconds, drawn lazily.
        self._rngs = [np.random.default_rng([config.seed, 1, w]) for w in range(num_workers)]
        self._starts: list[list[float]] = [[] for _ in range(num_workers)]
        self._ends: list[list[float]] = [[] for _ in range(num_workers)]
        self._drawn_to = [0.0] * num_workers  # end of the last episode drawn (or 0)

    def base_factor(self, worker: int) -> float:
        """Slowdown outside slow periods (fixed x drawn)."""
        return float(self.base[worker])

    def slowdown(self, worker: int, t: float) -> float:
        """Worker's slowdown factor (>= 1) at `t` seconds after the job start."""
        return self.base_factor(worker) * (self.config.period_factor if self._in_episode(worker, t) else 1.0)

    def work_time(self, worker: int, t_start: float, base_seconds: float) -> float:
        """Wall seconds for `base_seconds` of full-speed work started at `t_start`.

        Progress runs at 1/slowdown(t); slowdown is piecewise constant (it changes only at
        episode boundaries), so the integral is a walk over those boundaries.
        """
        if base_seconds < 0:
            raise ValueError(f"base_seconds must be >= 0, got {base_seconds}")
        left, t = float(base_seconds), float(t_start)
        while True:
            s = self.slowdown(worker, t)
            b = self._next_boundary(worker, t)
            if left * s <= b - t:
                return t + left * s - t_start
            left -= (b - t) / s
            t = b

    def episodes(self, worker: int, until: float) -> list[tuple[float, float]]:
        """Slow episodes `(start, end)` of `worker` that begin before `until` seconds."""
        self._draw(worker, until)
        i = bisect.bisect_left(self._starts[worker], until)
        return list(zip(self._starts[worker][:i], self._ends[worker][:i]))

    def describe(self) -> dict:
        """JSON-friendly summary for results files."""
        return {"base_factors": [float(x) for x in self.base], "factors": self.config.factors,
                "dist": self.config.dist, "dist_sigma": self.config.dist_sigma,
                "period_rate_per_s": self.config.period_rate_per_s,
                "period_mean_s": self.config.period_mean_s, "period_factor": self.config.period_factor,
                "seed": self.config.seed}

    # --- slow episodes ------------------------------------------------------------------

    def _draw(self, worker: int, until: float) -> None:
        """Draw episodes until one starts at or after `until` (or none are configured)."""
        rate = self.config.period_rate_per_s
        if rate <= 0:
            return
        rng, starts, ends = self._rngs[worker], self._starts[worker], self._ends[worker]
        while not starts or starts[-1] < until:
            s = self._drawn_to[worker] + rng.exponential(1.0 / rate)
            e = s + rng.exponential(self.config.period_mean_s)
            starts.append(s)
            ends.append(e)
            self._drawn_to[worker] = e

    def _in_episode(self, worker: int, t: float) -> bool:
        if self.config.period_rate_per_s <= 0:
            return False
        self._draw(worker, t)
        i = bisect.bisect_right(self._starts[worker], t) - 1
        return i >= 0 and t < self._ends[worker][i]

    def _next_boundary(self, worker: int, t: float) -> float:
        """The first episode start or end strictly after `t` (inf without slow periods)."""
        if self.config.period_rate_per_s <= 0:
            return math.inf
        self._draw(worker, t)
        starts, ends = self._starts[worker], self._ends[worker]
        i = bisect.bisect_right(starts, t) - 1
        if i >= 0 and t < ends[i]:
            return ends[i]
        while i + 1 >= len(starts):  # only if an episode of zero length ends exactly at t
            self._draw(worker, starts[-1] + 1.0)
        return starts[i + 1]
