"""Sparse optimizers for embedding variables, one file each, found by name."""
from psrec.ev.optim import adagrad, adam, adam_async, ftrl, gftrl, sgd  # noqa: F401  (register themselves)
from psrec.ev.optim.base import SlotSpec, SparseOptimizer, make_optimizer, optimizer_names, register_optimizer

__all__ = ["SlotSpec", "SparseOptimizer", "make_optimizer", "optimizer_names", "register_optimizer"]
