"""Synthetic data generation speed on one core (target: >= 1M rows/s for 26 fields).

Baseline, measured in the same run: numpy's own sequential PCG64 generator filling arrays of
the same shapes (int64 keys, float32 dense, labels) — what a generator that is *not*
counter-based, and so cannot serve an arbitrary row range on its own, would cost at least.

Last line: `rows_per_s=R vs_numpy_rng=R` (R = our rows/s over the baseline's).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from psrec.data.synthetic import SyntheticConfig, SyntheticSource  # noqa: E402


def _time(fn, repeats: int) -> float:
    fn()  # warm-up (builds the per-field tables once)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=262_144)
    ap.add_argument("--fields", type=int, default=26)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    src = SyntheticSource(SyntheticConfig(num_fields=args.fields))
    n = args.rows
    offset = [0]

    def ours():
        offset[0] += n  # fresh rows each repeat: no caching of rows is possible
        src.read(offset[0], offset[0] + n)

    rng = np.random.default_rng(0)

    def baseline():
        rng.integers(0, 2**62, size=(n, args.fields), dtype=np.int64)
        rng.random((n, src.schema.num_dense), dtype=np.float32)
        (rng.random(n) < 0.25).astype(np.float32)

    t_ours = _time(ours, args.repeats)
    t_base = _time(baseline, args.repeats)
    print(f"synthetic: {n / t_ours:,.0f} rows/s ({args.fields} fields, {n} rows per read, median of {args.repeats})")
    print(f"numpy rng: {n / t_base:,.0f} rows/s (same shapes)")
    print(f"rows_per_s={n / t_ours:.0f} vs_numpy_rng={t_base / t_ours:.3f}")


if __name__ == "__main__":
    main()
