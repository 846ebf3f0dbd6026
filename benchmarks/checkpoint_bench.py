"""What checkpoints cost: seconds to write a full one and an increment of a 4M-row table, against
the training steps they interrupt.

A table of `--rows` keys (default 4M) of width `--dim` (16) with Adagrad (an accumulator slot,
so 2 x 256 MB of floats plus keys and metadata) is checkpointed with
`psrec.core.checkpoint.write_checkpoint` (export, sha256 of every file, fsync, atomic rename):
full, and incremental (`psrec.core.incremental`: only the rows updated since the previous
checkpoint). Each is written `--repeats` times after one warm-up write and the medians are
reported, with the median `verify` of a full one (what a resume pays before it trusts it).

The rows an increment holds are measured, not assumed: the distinct keys of the training rows
that one checkpoint interval (`--every` steps of `data.batch_size` rows of the default
synthetic data) reads, capped at the table's rows; before each increment that many rows of the
table (a random set) are updated at a new step. Then a local DeepFM step on the default data is
timed (`--steps` steps after `--warmup` warm-up steps, steady mean). With one checkpoint every
`--every` steps (the default `run.checkpoint_every_steps`) and a full one every `--full-every`
(the default `run.full_checkpoint_every`), a checkpoint costs on average
`mean = (full + (full_every - 1) x increment) / full_every`, and its share of training time is

    checkpoint_share = mean / (every x step + mean)

against `full_only_share` = full / (every x step + full), every checkpoint full (the baseline,
measured in the same run). The last line:

    checkpoint_s_4m=S increment_s_4m=S verify_s_4m=S rows_per_increment=N step_ms=M
    checkpoint_share=R full_only_share=R

    python benchmarks/checkpoint_bench.py [--rows 4194304] [--dir /tmp] [--touched N]
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def build_table(rows: int, dim: int):
    from psrec.ev import EmbeddingVariable, EVConfig, OptimizerConfig

    ev = EmbeddingVariable(EVConfig(dim=dim, optimizer=OptimizerConfig(name="adagrad", lr=0.05)), name="emb")
    chunk = 1 << 18
    for a in range(0, rows, chunk):
        keys = np.arange(a, min(a + chunk, rows), dtype=np.int64)
        ev.apply_gradients(keys, np.full((len(keys), dim), 0.01, np.float32), np.ones(len(keys), np.int64), 1)
    return ev


def touched_per_interval(every: int) -> int:
    """Distinct keys in the training rows of `every` default steps (what an increment holds)."""
    from psrec.config import load_config
    from psrec.data.factory import make_source

    cfg = load_config(None, [])
    src = make_source(cfg)
    seen = np.empty(0, np.int64)
    for b in src.batches(0, every * cfg.data.batch_size, 64 * cfg.data.batch_size):
        seen = np.union1d(seen, b.keys.ravel())
        for m in b.multi:
            seen = np.union1d(seen, np.asarray(m.values).ravel())
    return len(seen)


def step_seconds(steps: int, warmup: int) -> float:
    from psrec.config import load_config
    from psrec.core.local import build_local

    cfg = load_config(None, ["train.threads=1", "train.progress=false"])
    s = build_local(cfg)
    bs = cfg.data.batch_size
    times = []
    for i in range(warmup + steps):
        t = time.perf_counter()
        s.step.train_rows(s.source, i * bs, (i + 1) * bs, i + 1)
        times.append(time.perf_counter() - t)
    return statistics.mean(times[warmup:])


def main() -> None:
    from psrec.config import RunDirConfig
    from psrec.core import checkpoint, incremental

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=4 << 20)
    p.add_argument("--dim", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--every", type=int, default=RunDirConfig().checkpoint_every_steps or 1000)
    p.add_argument("--full-every", type=int, default=RunDirConfig().full_checkpoint_every)
    p.add_argument("--touched", type=int, default=0, help="rows per increment (default: measured, see above)")
    p.add_argument("--dir", default=None, help="where to write (default: a temporary directory)")
    a = p.parse_args()

    touched = min(a.rows, a.touched or touched_per_interval(a.every))
    ev = build_table(a.rows, a.dim)
    rng = np.random.default_rng(0)
    root = Path(tempfile.mkdtemp(prefix="psrec-ckpt-bench-", dir=a.dir))
    step = 1  # the table's global step: each increment follows an update at a new one

    def write(n: int, base: Path | None) -> tuple[Path, float]:
        t = time.perf_counter()
        path = checkpoint.write_checkpoint(root, n, lambda d: (ev.export(
            d / "emb", evict=False, base=None if base is None else base / "emb"), incremental.link(base))[1], keep=2)
        return path, time.perf_counter() - t

    try:
        fulls, incs, verifies, n = [], [], [], 0
        for i in range(a.repeats + 1):
            n += 1
            path, w = write(n, None)
            t = time.perf_counter()
            checkpoint.verify(path)
            v = time.perf_counter() - t
            size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
            step += 1
            keys = np.sort(rng.choice(a.rows, touched, replace=False)).astype(np.int64)
            ev.apply_gradients(keys, np.full((touched, a.dim), 0.01, np.float32), np.ones(touched, np.int64), step)
            n += 1
            inc, wi = write(n, path)
            inc_size = sum(f.stat().st_size for f in inc.rglob("*") if f.is_file())
            if i:  # the first writes warm the page cache and the allocator
                fulls.append(w)
                incs.append(wi)
                verifies.append(v)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    w, wi, v = statistics.median(fulls), statistics.median(incs), statistics.median(verifies)
    st = step_seconds(a.steps, a.warmup)
    mean = (w + (a.full_every - 1) * wi) / a.full_every
    share, full_share = mean / (a.every * st + mean), w / (a.every * st + w)
    print(f"{a.rows:,} rows x {a.dim} (adagrad): full checkpoint {size / 1e6:,.0f} MB, write {w:.2f} s "
          f"(median of {a.repeats}: {', '.join(f'{x:.2f}' for x in fulls)}), verify {v:.2f} s")
    print(f"increment of {touched:,} rows (the distinct keys of {a.every} default steps): {inc_size / 1e6:,.0f} MB, "
          f"write {wi:.2f} s (median of {a.repeats}: {', '.join(f'{x:.2f}' for x in incs)}); "
          f"{w / wi:.1f}x cheaper than a full one")
    print(f"local DeepFM step {1e3 * st:.1f} ms (mean of {a.steps} after {a.warmup} warm-up); one checkpoint "
          f"every {a.every} steps, a full one every {a.full_every}: mean {mean:.2f} s per checkpoint")
    print(f"checkpoint_s_4m={w:.3f} increment_s_4m={wi:.3f} verify_s_4m={v:.3f} rows_per_increment={touched} "
          f"step_ms={1e3 * st:.2f} checkpoint_share={share:.4f} full_only_share={full_share:.4f}")


if __name__ == "__main__":
    main()
