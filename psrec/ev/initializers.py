"""Initial rows as a pure function of (seed, key, column).

A sequential RNG would give a key a different row depending on which shard created it and
in what order. Instead each coordinate is drawn from a counter-based hash:

    u = (splitmix64(splitmix64(key ^ seed') + (column + 1) * C) >> 11 + 0.5) / 2**53   in (0, 1)

and mapped through the inverse normal CDF (normal, truncated normal at +-2 stddev) or an
affine map (uniform). Coordinates are computed in float64 and rounded to float32, so the
last-ulp differences between platforms' transcendental functions do not show in the row.
Because a column's value does not depend on the width, a table widened by warm start keeps
the first columns of the row it would have had before.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from psrec.ev._mix import as_u64, mix_seed, splitmix64
from psrec.ev.config import InitializerConfig

__all__ = ["initial_rows", "uniform01"]

_COL = np.uint64(0xD1B54A32D192ED69)  # odd constant (from SplitMix's family) spacing columns
_SEED_SALT = 0x1_0000  # separates the initializer's stream from other seeded hashes
_TRUNC = 2.0  # truncated normal keeps |x| <= 2 stddev, as tf.truncated_normal does
_PHI_LO = 0.5 * math.erfc(_TRUNC / math.sqrt(2.0))  # Phi(-2)
_PHI_HI = 1.0 - _PHI_LO


def uniform01(seed: int, keys: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """Uniform draws in the open interval (0, 1): (N,) int64 keys x (C,) columns -> (N, C) float64."""
    base = splitmix64(as_u64(np.ascontiguousarray(keys, dtype=np.int64)) ^ mix_seed(seed, _SEED_SALT))
    with np.errstate(over="ignore"):
        col = (columns.astype(np.uint64) + np.uint64(1)) * _COL
        bits = splitmix64(base[:, None] + col[None, :])
    return ((bits >> np.uint64(11)).astype(np.float64) + 0.5) * (1.0 / (1 << 53))


def initial_rows(cfg: InitializerConfig, seed: int, keys: np.ndarray, dim: int,
                 columns: np.ndarray | None = None) -> np.ndarray:
    """Initial values of `keys` (N,) int64 for a table of width `dim` -> (N, C) float32.

    columns: which coordinates to produce (default all `dim`); the scale still follows `dim`.
    """
    cols = np.arange(dim) if columns is None else np.asarray(columns)
    n = len(keys)
    if cfg.kind == "zeros" or n == 0 or len(cols) == 0:
        return np.zeros((n, len(cols)), dtype=np.float32)
    scale = cfg.resolved_scale(dim)
    u = uniform01(seed, keys, cols)
    if cfg.kind == "uniform":
        x = (2.0 * u - 1.0) * scale
    else:
        if cfg.kind == "truncated_normal":
            u = _PHI_LO + u * (_PHI_HI - _PHI_LO)
        x = torch.special.ndtri(torch.from_numpy(u)).numpy() * scale
    return x.astype(np.float32)
