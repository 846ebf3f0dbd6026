"""Rows per second of the spec-driven reader per format, on one core, and the data phase's share
of a local DeepFM step reading the CSV, inline and with a reader ahead of the step.

The file: `--rows` rows (default 1M) of 40 columns, Criteo's shape (label, 13 numeric, 26
categorical of up to 10^4 distinct values), written once as CSV, Parquet (row groups of
64K rows) and libsvm (the 26 categoricals one group each). Each format is read end to end in
batches of 4096 rows after a warm-up pass over the first 64K rows; the median of `--repeats`
passes is reported, with each format's ratio to the CSV reader, and the same in one
epoch's shuffled order (`data.shuffle`: blocks of 256 rows, windows of 64 blocks; its
passes alternate with the file-order ones) as a ratio to the file order. Data generated,
not read from shared/ (synthetic: the reader's cost does not depend on the values).

DeepFM: `--steps` local steps of batch 1024 on the CSV, read inline (`data.prefetch = 0`,
the baseline), by a reader thread and by a reader process (`data.reader`, 2 batches
ahead), alternated `--repeats` times; phases are the run's steady state (its first
`train.warmup_steps` steps excluded, as reported). "data" is the seconds a step waits for
its batch.

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


def rows_per_s(make, repeats: int) -> tuple[float, float]:
    """(rows/s in file order, rows/s in epoch 0 of a `data.shuffle` order): medians of
    `repeats` passes each, the two kinds alternated so that both see the same load."""
    from psrec.data.shuffle import RowOrder

    src = make()
    for _ in src.batches(0, min(65536, src.num_rows), BATCH):  # warm-up: page cache, first allocations
        pass
    order = RowOrder(0, src.num_rows, (0,), block=256)
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(repeats):
        for shuffled in (False, True):
            src = make()  # a fresh reader each pass: no cached row group carried over
            view = order.view(src, 0) if shuffled else src
            t = time.perf_counter()
            n = sum(len(b) for b in view.batches(0, src.num_rows, BATCH))
            times[shuffled].append(time.perf_counter() - t)
            assert n == src.num_rows
    return n / statistics.median(times[False]), n / statistics.median(times[True])


def deepfm_run(csv: Path, steps: int, reader: str) -> tuple[float, float, int, float]:
    """(data phase seconds / step seconds, steady step ms, warm-up steps, steady samples/s) of
    local DeepFM on the CSV, read `reader` ("inline", "thread", "process")."""
    import psrec

    with tempfile.TemporaryDirectory() as runs:
        cfg = psrec.load_config(overrides=[
            f"data.train_path={csv}", "data.label=label", "model.name=deepfm", "data.batch_size=1024",
            f"train.max_steps={steps}", "train.threads=1", "train.progress=false", f"run.dir={runs}",
            "run.save_model=false", f"data.reader={'auto' if reader == 'inline' else reader}",
            f"data.prefetch={0 if reader == 'inline' else 2}",
            "data.features=[" + ", ".join([f'{{name="I{i}", type="numeric", transform="signed_log1p"}}'
                                           for i in range(N_DENSE)] + [f'{{name="C{i}"}}' for i in range(N_CAT)])
            + "]"])
        res = psrec.train(cfg, "local")
    return res.phases["data"] / res.step_mean_ms * 1e3, res.step_mean_ms, res.warmup_steps, res.samples_per_s


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
        both = {k: rows_per_s(make, args.repeats) for k, make in sources(paths).items()}
        rate = {k: v[0] for k, v in both.items()}
        for k, (r, mixed) in both.items():
            print(f"{k:8s} {r:12,.0f} rows/s  x{r / rate['csv']:.2f} of csv;  shuffled (one epoch's block order) "
                  f"{mixed:12,.0f} rows/s  x{mixed / r:.2f} of file order")
        runs: dict[str, list[tuple[float, float, int, float]]] = {"inline": [], "thread": [], "process": []}
        for _ in range(args.repeats):
            for how in runs:
                runs[how].append(deepfm_run(paths["csv"], args.steps, how))
        med = {h: [statistics.median(r[i] for r in v) for i in (0, 1, 3)] for h, v in runs.items()}
        warm = runs["inline"][0][2]
        for h, (share, step_ms, sps) in med.items():
            print(f"local DeepFM, batch 1024, csv, reader {h:7s}: data phase {share:5.1%} of a {step_ms:6.1f} ms step, "
                  f"{sps:8,.0f} samples/s (median of {args.repeats}, {args.steps} steps, first {warm} excluded)")
        base = med["inline"]
        for h in ("thread", "process"):
            print(f"reader {h} vs inline: step time x{med[h][1] / base[1]:.2f}, samples/s x{med[h][2] / base[2]:.2f}; "
                  f"data share {base[0]:.1%} -> {med[h][0]:.1%}")
    print(f"csv_rows_per_s={rate['csv']:.0f} parquet_rows_per_s={rate['parquet']:.0f} "
          f"libsvm_rows_per_s={rate['libsvm']:.0f}")


if __name__ == "__main__":
    main()
