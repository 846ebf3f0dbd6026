"""Validating the simulator against real runs: leave-one-out calibration, errors, mode ranking.

Pure functions over already measured runs (the fit schema of `psrec.sim.calibration`, as
`psrec.sim.results_map.map_results` makes it) and already built `SimSpec`s: running the
configurations is the command's job (`psrec validate-sim`), so that this module stays free of
runtime imports and can be tested on synthetic numbers.

For each configuration i:

    calibration_i = fit_calibration(every run except i)          (leave-one-out)
    predicted_i   = costs[mode_i](spec_i with calibration_i)
    step error    = predicted step / measured step - 1
    comm error    = predicted comm fraction - measured comm fraction   (percentage points)

Ranking of modes: configurations that share workers, batch size and network but differ in
mode form a group; within each group every pair of modes that the measurement tells apart
must be ordered the same way by the prediction (`ranking_preserved`). A pair that the
measurement does not tell apart is a tie: either predicted order is accepted and the report
shows the pair as `~`. When to call a pair tied (`pair_tied`):

- each configuration measured `MIN_SAMPLES` times or more (the segments of its runs,
  `RunSpec.segments`, over every run, `psrec validate-sim --repeats`): the measurement's own
  spread decides. The pair is tied unless Welch's t-test of their samples separates them at
  5%, two-sided (`psrec.report.intervals.welch_separated`; B. L. Welch, Biometrika 34, 1947).
  Segments of one run share whatever slowed or sped up that run as a whole (its actors'
  placement, the machine's load over those seconds), which only other runs would show: so
  unless both come from `MIN_REPEATS` runs or more, the pair must also be more than `TIE`
  apart. (An exact rank-sum test over 3 repeats was used before: its smallest p is
  2 / C(6, 3) = 0.1, so any pair whose repeats happened not to overlap counted as ordered.)
- otherwise: their measured steps within `TIE` of each other (relative): one configuration
  trained twice on a quiet 2-core machine differs by several percent, so a closer pair is
  not resolved.

The prediction gets the same band: two modes predicted within `TIE` of each other are a
predicted tie, a claim that neither is faster, which no measured order contradicts. A pair
counts as flipped only when the measurement orders it and the prediction orders it the
other way by more than `TIE`. (Without the band a prediction 0.5% apart was read as a
ranking: the default validation flipped on such pairs, e.g. collective at 20.2 ms against
ps-async at 20.3 ms, while the two measured 24.0 and 21.7 ms.) `ranking_strict` in the
summary still counts every reversed pair, for comparison.

Example:
    >>> errs = [0.05, -0.12, 0.02]
    >>> round(median_abs(errs), 3), round(max(abs(e) for e in errs), 3)
    (0.05, 0.12)
"""
from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from psrec.report.intervals import welch_separated
from psrec.sim.calibration import Calibration, fit_calibration
from psrec.sim.config import SimSpec
from psrec.sim.costs import MODES, StepCost

__all__ = ["RunSpec", "DEFAULT_RUNS", "QUICK_RUNS", "Prediction", "Summary", "leave_one_out", "predict",
           "summarize", "ranking_groups", "ranking_holds", "median_abs", "summary_line", "TIE",
           "MIN_SAMPLES", "MIN_REPEATS", "pair_tied", "tie_rule"]

RunMode = Literal["ps-async", "ps-sync", "collective"]

TIE = 0.05  # single runs: measured step times closer than this (relative) are not ranked
MIN_SAMPLES = 3  # samples each before their spread decides (2 leave Welch's test 1 df): else TIE
MIN_REPEATS = 3  # runs each before the samples' spread alone decides (module doc)


@dataclass(frozen=True)
class RunSpec:
    """One real configuration that `psrec validate-sim` trains and then predicts.

    Args:
        name: short label (the run's directory name).
        mode: ps-async, ps-sync or collective.
        workers: training workers (collective: ranks).
        ps: parameter servers (PS modes; ignored by collective).
        batch_size: rows per worker per step.
        net: emulated network (`--net` form, "" = none).
        steps: steps per worker, the warm-up included.
        segments: equal runs of consecutive steps after the warm-up whose mean steps are the
            run's samples: their spread is its measurement noise (`psrec.sim.results_map.
            segment_steps`).

    Example:
        >>> RunSpec("a", "ps-async", workers=2, ps=2).rows
        63488
    """

    name: str
    mode: RunMode
    workers: int
    ps: int = 1
    batch_size: int = 512
    net: str = ""
    # 2 warm-up steps, then 3 segments of 20: ~3-6 s of training per configuration on 2
    # shared cores (starting its actors costs more). The segments show a run's noise within
    # itself; what slows one run as a whole (a busy neighbour, how its actors share the cores)
    # only other runs show, which is why `psrec validate-sim` trains each one twice or more.
    # The mapping averages the steps after the warm-up, without those that another job's load
    # stretched past twice the median (`psrec.sim.results_map`).
    steps: int = 62
    segments: int = 3

    def __post_init__(self) -> None:
        if self.mode not in ("ps-async", "ps-sync", "collective"):
            raise ValueError(f"run {self.name!r}: mode must be ps-async, ps-sync or collective, got {self.mode!r}")
        if self.workers < 1 or self.ps < 1 or self.batch_size < 1 or self.steps < 2 or self.segments < 1:
            raise ValueError(f"run {self.name!r}: workers, ps, batch_size, segments must be >= 1 and steps >= 2")

    @property
    def rows(self) -> int:
        """Training rows: whole rounds of workers x batch."""
        return self.steps * self.workers * self.batch_size

    @property
    def group(self) -> tuple[int, int, str]:
        """Configurations with the same (workers, batch, net) are ranked against each other."""
        return (self.workers, self.batch_size, self.net)


_SLOW_NET = "bandwidth=1Gbit,latency=100us"  # a 1 GbE-class link: its bytes cost ~as much as the software
# Fourteen configurations in three ranking groups at 2 workers (batch 512 bare, batch 512 on
# the slow network, batch 1024 bare) and one at 3 workers (batch 1024: every mode, CPU
# oversubscribed on 2 cores), then one input varied at a time: workers (2 -> 4 async at
# batch 512, 2 -> 3 collective at 512) and PS count (ps2 at 512, ps1 at 1024). Whichever run
# is left out, its mode keeps runs at both batch sizes (the compute line c0 + c B of each
# compute constant stays determined, not pinned through the origin), the PS modes and the
# collective keep runs at two numbers of workers (the collective's calls and peer messages,
# `coll_call` and `coll_alpha`, differ only across rank counts), and the sync apply keeps a
# run whose merged-row count is of the same order.
DEFAULT_RUNS: tuple[RunSpec, ...] = (
    RunSpec("async-w2-ps2-b512", "ps-async", 2, 2, 512),
    RunSpec("sync-w2-ps2-b512", "ps-sync", 2, 2, 512),
    RunSpec("coll-w2-b512", "collective", 2, 1, 512),
    RunSpec("async-w2-ps2-b512-1g", "ps-async", 2, 2, 512, _SLOW_NET),
    RunSpec("coll-w2-b512-1g", "collective", 2, 1, 512, _SLOW_NET),
    RunSpec("async-w2-ps1-b1024", "ps-async", 2, 1, 1024),
    RunSpec("sync-w2-ps1-b1024", "ps-sync", 2, 1, 1024),
    RunSpec("coll-w2-b1024", "collective", 2, 1, 1024),
    RunSpec("async-w4-ps2-b512", "ps-async", 4, 2, 512),
    RunSpec("sync-w3-ps1-b1024", "ps-sync", 3, 1, 1024),
    RunSpec("coll-w3-b1024", "collective", 3, 1, 1024),
    RunSpec("sync-w2-ps2-b512-1g", "ps-sync", 2, 2, 512, _SLOW_NET),
    RunSpec("coll-w3-b512", "collective", 3, 1, 512),
    RunSpec("async-w3-ps1-b1024", "ps-async", 3, 1, 1024),
)
# The end-to-end test's tiny set: one run per mode at the same shape (one ranking group).
QUICK_RUNS: tuple[RunSpec, ...] = (
    RunSpec("async-w2", "ps-async", 2, 1, 64, steps=4, segments=1),
    RunSpec("sync-w2", "ps-sync", 2, 1, 64, steps=4, segments=1),
    RunSpec("coll-w2", "collective", 2, 1, 64, steps=4, segments=1),
)


@dataclass(frozen=True)
class Prediction:
    """Measured and predicted figures of one configuration.

    Args:
        name, mode: the configuration.
        measured_step, predicted_step: seconds per worker step.
        measured_comm, predicted_comm: communication fraction of the step (0..1).
        cost: the simulator's breakdown.
        calibration: the leave-one-out calibration used.
        measured_samples: the measured step (seconds) of every segment of every run of the
            configuration (`RunSpec.segments`; `measured_step` is the picked run's); empty
            when there are none.
        runs: how many runs the samples come from.
    """

    name: str
    mode: str
    measured_step: float
    predicted_step: float
    measured_comm: float
    predicted_comm: float
    cost: StepCost | None = None
    calibration: Calibration | None = None
    measured_samples: tuple[float, ...] = ()
    runs: int = 1

    @property
    def step_err(self) -> float:
        """Relative error of the step time (+0.1 = predicted 10% slower than measured)."""
        return self.predicted_step / self.measured_step - 1 if self.measured_step > 0 else math.nan

    @property
    def comm_err_pts(self) -> float:
        """Predicted minus measured communication fraction, percentage points."""
        return 100 * (self.predicted_comm - self.measured_comm)

    def as_row(self) -> dict[str, Any]:
        return {"config": self.name, "mode": self.mode, "measured_ms": 1e3 * self.measured_step,
                "predicted_ms": 1e3 * self.predicted_step, "step_err_pct": 100 * self.step_err,
                "comm_measured_pct": 100 * self.measured_comm, "comm_predicted_pct": 100 * self.predicted_comm,
                "comm_err_pts": self.comm_err_pts}


def predict(spec: SimSpec, mode: str, calibration: Calibration) -> StepCost:
    """The simulator's StepCost of `mode` for `spec` under `calibration`."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; known: {', '.join(MODES)}")
    return MODES[mode](dataclasses.replace(spec, calibration=calibration))


def leave_one_out(runs: Sequence[Mapping[str, Any]], specs: Sequence[SimSpec],
                  fit: Callable[[Sequence[Mapping[str, Any]]], Calibration] = fit_calibration,
                  names: Sequence[str] | None = None) -> list[Prediction]:
    """Predict each run from a calibration fitted on all the others.

    Args:
        runs: measured runs in the fit schema, each with `mode` and `measured` =
            {"step": seconds per worker step, "comm_fraction": 0..1}; optionally
            `measured_samples`, every segment's step, and `runs`, how many runs they come
            from (for the ranking's ties).
        specs: the simulator's description of each run (same order; its calibration is replaced).
        fit: the fitting function (default `fit_calibration`).
        names: labels (default: each run's `name`, else its index).
    """
    if len(runs) != len(specs):
        raise ValueError(f"{len(runs)} runs but {len(specs)} specs")
    if len(runs) < 2:
        raise ValueError("leave-one-out needs at least 2 runs")
    out = []
    for i, (run, spec) in enumerate(zip(runs, specs)):
        cal = fit([r for j, r in enumerate(runs) if j != i])
        cost = predict(spec, str(run["mode"]), cal)
        m = run["measured"]
        name = names[i] if names is not None else str(run.get("name", i))
        samples = tuple(float(x) for x in run.get("measured_samples") or ())
        out.append(Prediction(name, str(run["mode"]), float(m["step"]), cost.total, float(m["comm_fraction"]),
                              cost.comm_fraction, cost, cal, samples, int(run.get("runs") or 1)))
    return out


def median_abs(values: Sequence[float]) -> float:
    return float(statistics.median(abs(v) for v in values)) if values else math.nan


def ranking_groups(preds: Sequence[Prediction], groups: Sequence[Any]) -> list[tuple[Any, list[str], list[str]]]:
    """(group, modes by measured step, modes by predicted step) for each group with >= 2 modes."""
    by: dict[Any, list[Prediction]] = {}
    for p, g in zip(preds, groups):
        by.setdefault(g, []).append(p)
    out = []
    for g, ps in by.items():
        if len({p.mode for p in ps}) < 2:
            continue
        out.append((g, [p.mode for p in sorted(ps, key=lambda p: p.measured_step)],
                    [p.mode for p in sorted(ps, key=lambda p: p.predicted_step)]))
    return out


def pair_tied(fast: Prediction, slow: Prediction, tie: float = TIE) -> bool:
    """Whether the measurement leaves `fast` and `slow` unordered (module doc): with
    `MIN_SAMPLES` samples each, unless Welch's test separates them at 5% and, where either
    comes from fewer than `MIN_REPEATS` runs, their steps are also more than `tie` apart
    (segments of one run share that run's offset, which only other runs show); else steps
    within `tie` (relative).

    >>> a = Prediction("a", "ps-async", 1.00, 1.0, 0.5, 0.5, measured_samples=(0.99, 1.00, 1.08), runs=3)
    >>> s = Prediction("s", "ps-sync", 1.07, 1.0, 0.5, 0.5, measured_samples=(1.02, 1.07, 1.09), runs=3)
    >>> pair_tied(a, s)          # 7% apart, but the samples' ranges overlap
    True
    >>> pair_tied(dataclasses.replace(a, measured_samples=()), s)   # no samples: 7% > TIE
    False
    >>> f = Prediction("f", "collective", 1.00, 1.0, 0.5, 0.5, measured_samples=(1.00, 1.01, 0.99))
    >>> pair_tied(f, dataclasses.replace(f, measured_step=1.04, measured_samples=(1.04, 1.05, 1.03)))
    True
    >>> pair_tied(f, dataclasses.replace(f, measured_step=1.08, measured_samples=(1.08, 1.09, 1.07)))
    False
    """
    gap = slow.measured_step - fast.measured_step
    if len(fast.measured_samples) >= MIN_SAMPLES and len(slow.measured_samples) >= MIN_SAMPLES:
        if not welch_separated(fast.measured_samples, slow.measured_samples):
            return True
        return min(fast.runs, slow.runs) < MIN_REPEATS and gap < tie * fast.measured_step
    return gap < tie * fast.measured_step


def tie_rule(preds: Sequence[Prediction], tie: float = TIE) -> str:
    """How ties were called for `preds`, in words, for the report."""
    sampled = [len(p.measured_samples) >= MIN_SAMPLES for p in preds]
    if all(sampled) and all(p.runs >= MIN_REPEATS for p in preds):
        return "samples not separated, Welch p > 0.05"
    if all(sampled):
        return f"samples not separated (Welch p > 0.05) or within {tie:.0%}"
    if any(sampled):
        return f"Welch p > 0.05 where both have {MIN_SAMPLES}+ samples, else within {tie:.0%}"
    return f"within {tie:.0%}"


def ranking_holds(preds: Sequence[Prediction], tie: float = TIE,
                  strict: bool = False) -> tuple[bool, list[tuple[str, str]]]:
    """Whether the predictions order every pair of `preds` (one group) as measured, and the
    tied pairs (`pair_tied`: the measurement does not order them) that the check skips. A
    measured order is contradicted only by a prediction more than `tie` the other way
    (module doc); `strict`: by any reversed prediction.

    >>> a, b, c = (Prediction(m, m, t, p, 0.5, 0.5) for m, t, p in
    ...            (("ps-async", 1.00, 1.2), ("ps-sync", 1.02, 1.1), ("collective", 0.80, 0.9)))
    >>> ranking_holds([a, b, c])
    (True, [('ps-async', 'ps-sync')])
    >>> ranking_holds([a, b, c], tie=0.0)[0]
    False
    >>> near = Prediction("collective", "collective", 1.10, 1.18, 0.5, 0.5)   # measured 10% slower, predicted 2% faster
    >>> ranking_holds([a, near])[0], ranking_holds([a, near], strict=True)[0]
    (True, False)
    """
    ok, ties = True, []
    ordered = sorted(preds, key=lambda p: p.measured_step)
    for i, fast in enumerate(ordered):
        for slow in ordered[i + 1:]:
            if pair_tied(fast, slow, tie):
                ties.append((fast.mode, slow.mode))
            elif slow.predicted_step <= fast.predicted_step * (1.0 if strict else 1.0 - tie):
                ok = False
    return ok, ties


@dataclass(frozen=True)
class Summary:
    """The validation's headline figures (errors as fractions; comm error in points)."""

    median_step_err: float
    max_step_err: float
    max_commfrac_err_pts: float
    ranking_preserved: bool
    configs: int
    ranking_strict: bool | None = None  # every reversed pair counted (`ranking_holds(strict=True)`)


def summarize(preds: Sequence[Prediction], groups: Sequence[Any]) -> Summary:
    """Median and max |step error|, max |comm error| and whether every group's ranking holds.

    >>> ps = [Prediction("a", "ps-async", 1.0, 1.1, 0.5, 0.52), Prediction("b", "collective", 2.0, 1.9, 0.3, 0.25)]
    >>> s = summarize(ps, [1, 1])
    >>> round(s.median_step_err, 3), round(s.max_step_err, 3), round(s.max_commfrac_err_pts, 1), s.ranking_preserved
    (0.075, 0.1, 5.0, True)
    """
    by: dict[Any, list[Prediction]] = {}
    for p, g in zip(preds, groups):
        by.setdefault(g, []).append(p)
    return Summary(
        median_step_err=median_abs([p.step_err for p in preds]),
        max_step_err=max((abs(p.step_err) for p in preds), default=math.nan),
        max_commfrac_err_pts=max((abs(p.comm_err_pts) for p in preds), default=math.nan),
        ranking_preserved=all(ranking_holds(ps)[0] for ps in by.values()),
        configs=len(preds),
        ranking_strict=all(ranking_holds(ps, strict=True)[0] for ps in by.values()),
    )


def summary_line(s: Summary) -> str:
    """The line `psrec validate-sim` ends with.

    >>> summary_line(Summary(0.05, 0.12, 3.0, True, 9, ranking_strict=False))
    'median_step_err=0.050 max_step_err=0.120 max_commfrac_err_pts=3.0 ranking_preserved=1 configs=9 ranking_strict=0'
    """
    strict = "" if s.ranking_strict is None else f" ranking_strict={int(s.ranking_strict)}"
    return (f"median_step_err={s.median_step_err:.3f} max_step_err={s.max_step_err:.3f} "
            f"max_commfrac_err_pts={s.max_commfrac_err_pts:.1f} ranking_preserved={int(s.ranking_preserved)} "
            f"configs={s.configs}{strict}")
