"""What a checkpoint costs: seconds to write (and verify) one of a 4M-row table, against the
training steps it interrupts.

A table of `--rows` keys (default 4M) of width `--dim` (16) with Adagrad (an accumulator slot,
so 2 x 256 MB of floats plus keys and metadata) is checkpointed with
`psrec.core.checkpoint.write_checkpoint` (export, sha256 of every file, fsync, atomic
rename), `--repeats` times after one warm-up write; the median is reported, and the median
`verify` (what a resume pays before it trusts the checkpoint). Then a local DeepFM step on
the default synthetic data is timed (`--steps` steps after `--warmup` warm-up steps, steady
mean), and the checkpoint's share of training time at one checkpoint every `--every` steps
(the default `run.checkpoint_every_steps`) is

    share = checkpoint / (every x step + checkpoint)

The last line:

    checkpoint_s_4m=S verify_s_4m=S step_ms=M share_at_default_interval=R

    python benchmarks/checkpoint_bench.py [--rows 4194304] [--dir /tmp]
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
    from psrec.core import checkpoint

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=4 << 20)
    p.add_argument("--dim", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--every", type=int, default=RunDirConfig().checkpoint_every_steps or 1000)
    p.add_argument("--dir", default=None, help="where to write (default: a temporary directory)")
    a = p.parse_args()

    ev = build_table(a.rows, a.dim)
    root = Path(tempfile.mkdtemp(prefix="psrec-ckpt-bench-", dir=a.dir))
    try:
        writes, verifies = [], []
        for i in range(a.repeats + 1):
            t = time.perf_counter()
            path = checkpoint.write_checkpoint(root, i + 1, lambda d: (ev.export(d / "emb", evict=False), {})[1])
            w = time.perf_counter() - t
            t = time.perf_counter()
            checkpoint.verify(path)
            v = time.perf_counter() - t
            if i:  # the first write warms the page cache and the allocator
                writes.append(w)
                verifies.append(v)
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    finally:
        shutil.rmtree(root, ignore_errors=True)
    w, v = statistics.median(writes), statistics.median(verifies)
    step = step_seconds(a.steps, a.warmup)
    share = w / (a.every * step + w)
    print(f"{a.rows:,} rows x {a.dim} (adagrad): checkpoint {size / 1e6:,.0f} MB, write {w:.2f} s "
          f"(median of {a.repeats}: {', '.join(f'{x:.2f}' for x in writes)}), verify {v:.2f} s")
    print(f"local DeepFM step {1e3 * step:.1f} ms (mean of {a.steps} after {a.warmup} warm-up); "
          f"one checkpoint every {a.every} steps")
    print(f"checkpoint_s_4m={w:.3f} verify_s_4m={v:.3f} step_ms={1e3 * step:.2f} "
          f"share_at_default_interval={share:.4f}")


if __name__ == "__main__":
    main()
