"""The sparse-optimizer interface and its registry.

An optimizer updates only the rows a step touched. The embedding variable calls
`apply_rows` with its whole state and the touched rows. By default that gathers those rows'
values and slots into dense, contiguous blocks, calls `update` on the blocks and scatters
them back, so an optimizer is plain dense math on `(U, D)` arrays and never sees row indices
or the hash table. An optimizer with a compiled kernel (SGD, Adagrad) overrides `apply_rows`
instead and updates each row where it lies, in one pass.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from psrec.ev import _kernels
from psrec.ev.config import OptimizerConfig

__all__ = ["SlotSpec", "SparseOptimizer", "register_optimizer", "make_optimizer", "optimizer_names"]

_REGISTRY: dict[str, type[SparseOptimizer]] = {}


@dataclass(frozen=True)
class SlotSpec:
    """One per-row optimizer state array.

    Args:
        name: slot name, also its export file name (`slot.<name>.npy`).
        per_coordinate: True -> shape (R, D); False -> shape (R,).
        dtype: numpy dtype name ("float32", "int64").
        init: value of a fresh row's slot (before `SparseOptimizer.init_slots`).
    """

    name: str
    per_coordinate: bool
    dtype: str
    init: float

    def shape(self, rows: int, dim: int) -> tuple[int, ...]:
        return (rows, dim) if self.per_coordinate else (rows,)


class SparseOptimizer(ABC):
    """Updates touched rows in place.

    Args:
        cfg: the optimizer section of the table's EVConfig.
        dim: row width D.
    """

    name: ClassVar[str] = ""

    def __init__(self, cfg: OptimizerConfig, dim: int) -> None:
        self.cfg = cfg
        self.dim = dim

    def slots(self) -> tuple[SlotSpec, ...]:
        """The per-row state this optimizer keeps (empty for SGD)."""
        return ()

    def init_slots(self, values: np.ndarray, slots: dict[str, np.ndarray]) -> None:
        """Adjust fresh rows' slots (already filled with `SlotSpec.init`) to their initial
        `values` (n, D) float32, in place. Most optimizers need nothing here."""

    def apply_rows(self, values: np.ndarray, slots: dict[str, np.ndarray], meta: np.ndarray,
                   rows: np.ndarray, grads: np.ndarray, counts: np.ndarray, step: int) -> None:
        """One step on the distinct `rows` of the whole state, in place, recording the touch.

        values: (R, D) float32; slots: name -> (R, D) or (R,) arrays; meta: (R, 2) int64
        freq and version, updated as freq += counts, version = step; rows: (U,) int64
        distinct; grads: (U, D) float32 summed per row; counts: (U,) int64. All C-contiguous.

        The freq/version update belongs here rather than in the variable so that a fused
        kernel can do it in the same pass as the optimizer math: on a table far larger than
        the cache every pass over the touched rows costs a round of misses. This default
        gathers blocks, runs `update` and scatters them back.
        """
        _kernels.touch(meta, rows, counts, int(step))
        w = _gather(values, rows)
        blocks = {k: _gather(a, rows) if a.ndim == 2 else a[rows] for k, a in slots.items()}
        self.update(w, grads, blocks, step)
        _kernels.scatter_rows(values, rows, w)
        for k, a in slots.items():
            if a.ndim == 2:
                _kernels.scatter_rows(a, rows, blocks[k])
            else:
                a[rows] = blocks[k]

    @abstractmethod
    def update(self, w: np.ndarray, g: np.ndarray, slots: dict[str, np.ndarray], step: int = 1) -> None:
        """One step on distinct rows, in place.

        w: (U, D) float32 weights; g: (U, D) float32 summed gradients; slots: name ->
        (U, D) or (U,) blocks of those rows' state. All C-contiguous. step: the update's
        global step (Adam's bias correction; the other optimizers ignore it).
        """


def _gather(a: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """a[rows] for (R, D) `a` and (U,) int64 `rows` -> (U, D), a new C-contiguous array."""
    out = np.empty((len(rows), a.shape[1]), dtype=a.dtype)
    _kernels.gather_rows(a, rows, out)
    return out


def register_optimizer(name: str):
    """Class decorator: make a SparseOptimizer available as `OptimizerConfig.name`."""

    def deco(cls: type[SparseOptimizer]) -> type[SparseOptimizer]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"optimizer {name!r} is registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def make_optimizer(cfg: OptimizerConfig, dim: int) -> SparseOptimizer:
    """The optimizer `cfg.name`, configured by `cfg`, for rows of width `dim`."""
    _ensure_loaded()
    try:
        return _REGISTRY[cfg.name](cfg, dim)
    except KeyError:
        raise ValueError(f"optimizer.name: unknown {cfg.name!r}; known: {', '.join(sorted(_REGISTRY))}") from None


def optimizer_names() -> list[str]:
    _ensure_loaded()
    return sorted(_REGISTRY)


def _ensure_loaded() -> None:
    # Importing the package imports every optimizer module, each of which registers itself.
    import psrec.ev.optim  # noqa: F401
