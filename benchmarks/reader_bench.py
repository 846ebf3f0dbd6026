"""Rows per second of the spec-driven reader per format, on one core, and the data phase's share
of a local DeepFM step reading the CSV.

The file: `--rows` rows (default 1M) of 40 columns, Criteo's shape (label, 13 numeric, 26
categorical of up to 10^4 distinct values), written once as CSV, Parquet (row groups of
64K rows) and libsvm (the 26 categoricals one group each). Each format is read end to end in
batches of 4096 rows after a warm-up pass over the first 64K rows; the median of `--repeats`
passes is reported, with each format's ratio to the CSV reader. Data generated, not read
from shared/ (synthetic: the reader's cost does not depend on the values).

Usage: python benchmarks/reader_bench.py [--rows N] [--repeats R] [--steps S]
Last line: csv_rows_per_s=N parquet_rows_per_s=N libsvm_rows_per_s=N
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import numpy as np  # noqa: E402

N_DENSE, N_CAT, BATCH = 13, 26, 4096


def write_files(d: Path, rows: int, seed: int = 0) -> dict[str, Path]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, rows)
    dense = np.round(rng.exponential(20.0, (rows, N_DENSE)), 2)
    cat = rng.zipf(1.3, (rows, N_CAT)) % 10_000
    cols = ["label"] + [f"I{i}" for i in range(N_DENSE)] + [f"C{i}" for i in range(N_CAT)]
    csv = d / "bench.csv"
    with open(csv, "w") as f:
        f.write(",".join(cols) + "\n")
        for s in range(0, rows, 100_000):
            e = min(s + 100_000, rows)
            block = np.concatenate([y[s:e, None].astype(str), dense[s:e].astype(str), cat[s:e].astype(str)], axis=1)
            f.write("\n".join(",".join(r) for r in block.tolist()) + "\n")
    table = {"label": y} | {f"I{i}": dense[:, i] for i in range(N_DENSE)} | {f"C{i}": cat[:, i] for i in range(N_CAT)}
    pq.write_table(pa.table(table), d / "bench.parquet", row_group_size=65536)
    svm = d / "bench.svm"
    with open(svm, "w") as f:
        for s in range(0, rows, 100_000):
            e = min(s + 100_000, rows)
            parts = [y[s:e].astype(str)]
            parts += [np.char.add(f"{i}:", dense[s:e, i].astype(str)) for i in range(N_DENSE)]
            # categorical group j: indices [base_j, base_j + 10^4)
            parts += [np.char.add((N_DENSE + j * 10_000 + cat[s:e, j]).astype(str), ":1") for j in range(N_CAT)]
            f.write("\n".join(" ".join(r) for r in np.stack(parts, axis=1).tolist()) + "\n")
    return {"csv": csv, "parquet": d / "bench.parquet", "libsvm": svm}


def sources(paths: dict[str, Path]):
    from psrec.data.features import FeatureConfig
    from psrec.data.libsvm import LibsvmSource
    from psrec.data.parquet import ParquetSource
    from psrec.data.tabular import FeatureCsvSource

    feats = ([FeatureConfig(f"I{i}", type="numeric", transform="signed_log1p") for i in range(N_DENSE)]
             + [FeatureConfig(f"C{i}") for i in range(N_CAT)])
    svm = ([FeatureConfig(f"I{i}", type="numeric", transform="signed_log1p", index=i) for i in range(N_DENSE)]
           + [FeatureConfig(f"C{j}", index=N_DENSE + j * 10_000, size=10_000) for j in range(N_CAT)])
    return {"csv": lambda: FeatureCsvSource(paths["csv"], feats, "label"),
            "parquet": lambda: ParquetSource(paths["parquet"], feats, "label"),
            "libsvm": lambda: LibsvmSource(paths["libsvm"], svm)}


def rows_per_s(make, repeats: int) -> float:
    src = make()
    for _ in src.batches(0, min(65536, src.num_rows), BATCH):  # warm-up: page cache, first allocations
        pass
    times = []
    for _ in range(repeats):
        src = make()  # a fresh reader each pass: no cached row group carried over
        t = time.perf_counter()
        n = sum(len(b) for b in src.batches(0, src.num_rows, BATCH))
        times.append(time.perf_counter() - t)
    assert n == src.num_rows
    return n / statistics.median(times)


def deepfm_data_share(csv: Path, steps: int) -> tuple[float, float]:
    """(data phase seconds / step seconds, steady step ms) of local DeepFM reading the CSV."""
    import psrec

    with tempfile.TemporaryDirectory() as runs:
        cfg = psrec.load_config(overrides=[
            f"data.train_path={csv}", "data.label=label", "model.name=deepfm", "data.batch_size=1024",
            f"train.max_steps={steps}", "train.threads=1", "train.progress=false", f"run.dir={runs}",
            "run.save_model=false",
            "data.features=[" + ", ".join([f'{{name="I{i}", type="numeric", transform="signed_log1p"}}'
                                           for i in range(N_DENSE)] + [f'{{name="C{i}"}}' for i in range(N_CAT)])
            + "]"])
        res = psrec.train(cfg, "local")
    return res.phases["data"] / res.step_mean_ms * 1e3, res.step_mean_ms


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=200, help="local DeepFM steps for the data-phase share")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        paths = write_files(Path(d), args.rows)
        sizes = {k: p.stat().st_size / 2**20 for k, p in paths.items()}
        print(f"wrote {args.rows} rows x 40 columns in {time.perf_counter() - t:.1f} s: "
              + ", ".join(f"{k} {v:.0f} MiB" for k, v in sizes.items()))
        rate = {k: rows_per_s(make, args.repeats) for k, make in sources(paths).items()}
        for k, r in rate.items():
            print(f"{k:8s} {r:12,.0f} rows/s  x{r / rate['csv']:.2f} of csv")
        share, step_ms = deepfm_data_share(paths["csv"], args.steps)
        print(f"local DeepFM, batch 1024, csv: data phase {share:.1%} of a {step_ms:.1f} ms step")
    print(f"csv_rows_per_s={rate['csv']:.0f} parquet_rows_per_s={rate['parquet']:.0f} "
          f"libsvm_rows_per_s={rate['libsvm']:.0f}")


if __name__ == "__main__":
    main()
