"""Repeat statistics for tables that compare runs: a median, a 95% interval, and whether two
figures are separated by their repeats.

The interval is Student's t interval of the mean (n repeats, n - 1 degrees of freedom): with
3 repeats no distribution-free interval of the median reaches 95% (the min-max range of 3 is
a 75% interval), and run-to-run timing noise on a shared machine is close enough to normal
for the t interval to say "these two are not told apart".
"""
from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["Interval", "interval", "separated", "t_quantile", "welch_separated"]

# Student t, two-sided 95% (the 0.975 quantile), for 1..30 degrees of freedom (standard tables)
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t_quantile(df: int) -> float:
    """The 0.975 quantile of Student's t with `df` degrees of freedom (df >= 1). Beyond the
    table the quantile falls toward the normal's 1.960 as 1/df (within 0.002 of the exact value)."""
    if df < 1:
        raise ValueError(f"t quantile: {df} degrees of freedom (need at least 1)")
    if df <= len(_T975):
        return _T975[df - 1]
    return 1.960 + (_T975[-1] - 1.960) * len(_T975) / df


class Interval(tuple):
    """(median, low, high) of a figure over its repeats; low == high == median for one repeat."""

    __slots__ = ()

    def __new__(cls, median: float, low: float, high: float):
        return super().__new__(cls, (median, low, high))

    median = property(lambda self: self[0])
    low = property(lambda self: self[1])
    high = property(lambda self: self[2])

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


def interval(values: Sequence[float]) -> Interval:
    """Median of `values` and the 95% t interval of their mean (NaNs left out; all NaN: NaN)."""
    xs = sorted(float(v) for v in values if v is not None and math.isfinite(float(v)))
    if not xs:
        return Interval(math.nan, math.nan, math.nan)
    n = len(xs)
    median = xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2
    if n == 1:
        return Interval(median, median, median)
    mean = sum(xs) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    hw = t_quantile(n - 1) * sd / math.sqrt(n)
    return Interval(median, mean - hw, mean + hw)


def separated(a: Interval, b: Interval) -> bool:
    """Whether the repeats tell `a` and `b` apart: their 95% intervals do not overlap. (Non-overlap
    is the conservative test: overlapping intervals may still differ at 95%, so "not separated"
    means "these repeats do not show a difference", not "they are equal".)"""
    return a.high < b.low or b.high < a.low


def welch_separated(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether Welch's t-test tells the means of `a` and `b` (2+ repeats each) apart at 5%,
    two-sided: |mean_a - mean_b| / se > the t quantile at the Welch-Satterthwaite degrees of
    freedom, rounded down (conservative). Two samples with no spread at all are apart when
    their means differ.

    >>> welch_separated([26.4, 31.9, 31.9], [37.1, 39.2, 44.6])   # t = 3.54, 3.85 -> 3 df: 3.182
    True
    >>> welch_separated([37.5, 42.3, 44.4], [37.1, 39.2, 44.6])   # t = 0.36
    False
    """
    if len(a) < 2 or len(b) < 2:
        raise ValueError("welch_separated: 2 or more repeats each")
    n, m = len(a), len(b)
    ma, mb = sum(a) / n, sum(b) / m
    va = sum((x - ma) ** 2 for x in a) / (n - 1) / n
    vb = sum((x - mb) ** 2 for x in b) / (m - 1) / m
    se2 = va + vb
    if se2 == 0:
        return ma != mb
    df = se2 ** 2 / ((va ** 2 / (n - 1) if va else 0.0) + (vb ** 2 / (m - 1) if vb else 0.0))
    return abs(ma - mb) / math.sqrt(se2) > t_quantile(max(1, int(df)))
