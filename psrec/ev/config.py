"""Typed configuration of one embedding variable (EV).

All dataclasses here are frozen and use only the field types `psrec.config_io.from_mapping`
understands, so a table is configured from TOML like:

    [tables.user]
    dim = 16
    steps_to_live = 100000
    [tables.user.optimizer]
    name = "adagrad"
    lr = 0.05
    [tables.user.filter]
    kind = "counter"
    min_freq = 3

Every check lives in `__post_init__` and raises ValueError naming the field.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["InitializerConfig", "OptimizerConfig", "FilterConfig", "EVConfig",
           "OptimizerName", "FilterKind", "InitializerKind"]

InitializerKind = Literal["truncated_normal", "normal", "uniform", "zeros"]
OptimizerName = Literal["sgd", "adagrad", "adam", "adam_async", "ftrl", "gftrl"]
FilterKind = Literal["none", "counter", "bloom"]


def _need(cond: bool, name: str, msg: str) -> None:
    if not cond:
        raise ValueError(f"{name}: {msg}")


@dataclass(frozen=True)
class InitializerConfig:
    """How a new row is filled.

    Args:
        kind: distribution of each coordinate.
        scale: stddev (normal kinds) or half-width (uniform); 0 means 1/sqrt(dim).

    Rows are a pure function of (seed, key, column), so every shard creates the same row.
    """

    kind: InitializerKind = "truncated_normal"  # TF/DeepRec embedding default: no large outliers
    scale: float = 0.0  # 0 = 1/sqrt(dim), TF embedding_column's stddev: dot products stay O(1)

    def __post_init__(self) -> None:
        _need(math.isfinite(self.scale) and self.scale >= 0, "initializer.scale",
              f"must be a finite number >= 0, got {self.scale}")

    def resolved_scale(self, dim: int) -> float:
        """The scale actually used for width `dim`."""
        return self.scale if self.scale > 0 else 1.0 / math.sqrt(dim)


# eps by optimizer when none is given: torch's defaults (torch.optim.Adagrad 1e-10;
# torch.optim.Adam and SparseAdam 1e-8, as TF1's AdamOptimizer; Keras/LazyAdam use 1e-7).
# (Adam used Adagrad's 1e-10 before, unlike any reference.) sgd, ftrl and gftrl ignore eps.
_DEFAULT_EPS = {"adagrad": 1e-10, "adam": 1e-8, "adam_async": 1e-8}


@dataclass(frozen=True)
class OptimizerConfig:
    """The sparse optimizer that updates touched rows.

    Args:
        name: sgd, adagrad, adam (lazy, global-step bias correction as TF LazyAdam and
            torch SparseAdam), adam_async (lazy, per-row step count: DeepRec's AdamAsync),
            ftrl (per coordinate) or gftrl (group lasso per row).
        lr: learning rate (FTRL's alpha).
        initial_accumulator: starting sum of squared gradients (adagrad, ftrl, gftrl).
        eps: added to the denominator (adagrad, adam, adam_async); None = torch's default for
            the optimizer (`_DEFAULT_EPS`), filled in on construction.
        beta1, beta2: Adam's moment decay rates.
        l1, l2: FTRL / G-FTRL regularisation strengths (lambda1, lambda2).
        ftrl_beta: FTRL's beta, smoothing the per-coordinate learning rate.
    """

    name: OptimizerName = "adagrad"  # the PS default in TF/DeepRec: robust lr, per-coordinate steps
    lr: float = 0.05  # a common Adagrad rate for CTR embeddings; tune per optimizer
    initial_accumulator: float = 0.1  # TF's Adagrad/FTRL default: bounds the first step size
    eps: float | None = None  # per optimizer, torch's (1e-10 Adagrad, 1e-8 Adam), so dense references match
    beta1: float = 0.9  # Adam paper default
    beta2: float = 0.999  # Adam paper default
    l1: float = 0.0  # no sparsity unless asked: a nonzero l1 zeroes weights (and G-FTRL rows)
    l2: float = 0.0  # no shrinkage unless asked
    ftrl_beta: float = 1.0  # McMahan et al. 2013 use beta = 1

    def __post_init__(self) -> None:
        if self.eps is None:
            object.__setattr__(self, "eps", _DEFAULT_EPS.get(self.name, _DEFAULT_EPS["adagrad"]))
        for name in ("lr", "initial_accumulator", "eps", "l1", "l2", "ftrl_beta"):
            v = getattr(self, name)
            _need(math.isfinite(v) and v >= 0, f"optimizer.{name}", f"must be a finite number >= 0, got {v}")
        _need(self.lr > 0, "optimizer.lr", f"must be > 0, got {self.lr}")
        for name in ("beta1", "beta2"):
            v = getattr(self, name)
            _need(0.0 <= v < 1.0, f"optimizer.{name}", f"must be in [0, 1), got {v}")
        if self.name in ("adam", "adam_async"):
            _need(self.eps > 0, "optimizer.eps", f"must be > 0 for {self.name}")
        if self.name in ("ftrl", "gftrl"):
            _need(self.initial_accumulator > 0 or self.ftrl_beta > 0, "optimizer.ftrl_beta",
                  "ftrl_beta and initial_accumulator cannot both be 0 (division by zero)")


@dataclass(frozen=True)
class FilterConfig:
    """Feature admission: keys earn a row only after `min_freq` occurrences in updates.

    Args:
        kind: none (every key gets a row at once), counter (exact per-key counters while
            waiting) or bloom (a counting Bloom filter: fixed memory, approximate counts).
        min_freq: occurrences needed for a row (counted with multiplicity, as freq is).
        false_positive_rate: bloom only: chance that a never-seen key reads as present.
        expected_keys: bloom only: distinct keys per shard the filter is sized for.
    """

    kind: FilterKind = "none"  # admission is opt-in: without it training matches a dense table
    min_freq: int = 2  # the smallest threshold that filters anything: one-off ids get no row
    false_positive_rate: float = 0.01  # ~9.6 counters per key, a usual Bloom operating point
    expected_keys: int = 1 << 20  # ~1M distinct ids per shard: ~10 MB of uint8 counters at 1%

    def __post_init__(self) -> None:
        _need(self.min_freq >= 1, "filter.min_freq", f"must be >= 1, got {self.min_freq}")
        _need(self.min_freq < (1 << 32), "filter.min_freq", f"must be < 2**32, got {self.min_freq}")
        _need(0.0 < self.false_positive_rate < 1.0, "filter.false_positive_rate",
              f"must be in (0, 1), got {self.false_positive_rate}")
        _need(self.expected_keys >= 1, "filter.expected_keys", f"must be >= 1, got {self.expected_keys}")


@dataclass(frozen=True)
class EVConfig:
    """One embedding table.

    Args:
        dim: row width D.
        seed: seeds the initializer (and the Bloom filter's hashes); same seed, same rows.
        initializer: how new rows are filled.
        optimizer: the sparse optimizer and its hyperparameters.
        filter: feature admission.
        steps_to_live: evict keys not updated in this many global steps; 0 = never.
        l2_evict_threshold: evict rows with 0.5 * ||v||^2 below this; 0 = never.

    Example:
        >>> EVConfig(dim=8, optimizer=OptimizerConfig(name="sgd", lr=0.1)).optimizer.name
        'sgd'
    """

    dim: int
    seed: int = 0  # fixed by default so runs are reproducible unless asked otherwise
    initializer: InitializerConfig = field(default_factory=InitializerConfig)  # truncated normal
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)  # adagrad
    filter: FilterConfig = field(default_factory=FilterConfig)  # no admission filter
    steps_to_live: int = 0  # TTL eviction is opt-in: a short TTL forgets rare but useful ids
    l2_evict_threshold: float = 0.0  # L2 eviction is opt-in: thresholds depend on the init scale

    def __post_init__(self) -> None:
        _need(isinstance(self.dim, int) and self.dim >= 1, "dim", f"must be an integer >= 1, got {self.dim!r}")
        _need(0 <= self.seed < (1 << 63), "seed", f"must be in [0, 2**63), got {self.seed}")
        _need(self.steps_to_live >= 0, "steps_to_live", f"must be >= 0, got {self.steps_to_live}")
        _need(math.isfinite(self.l2_evict_threshold) and self.l2_evict_threshold >= 0,
              "l2_evict_threshold", f"must be a finite number >= 0, got {self.l2_evict_threshold}")
        for name, cls in (("initializer", InitializerConfig), ("optimizer", OptimizerConfig),
                          ("filter", FilterConfig)):
            _need(isinstance(getattr(self, name), cls), name, f"must be a {cls.__name__}")
