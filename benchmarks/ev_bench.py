"""Embedding-variable lookup and apply throughput against two baselines, in one process.

A table of `--rows` keys (default 4M) of width `--dim` (16) is pre-populated; a batch of
`--batch` (128K) Zipf(`--zipf`)-distributed key draws is de-duplicated as the trainer does
(np.unique), and the unique keys are looked up and updated (Adagrad). Every call gets a new
batch, as every training step does. Baselines, on the same batches:

* take: `np.take` on row indices resolved beforehand: the memory-access floor of a lookup.
* dict: a Python dict key -> row in front of the same numpy arrays.

Each timing is the median of `--repeats` runs after `--warmup` runs; the floor, the EV lookup
and the EV apply are timed in turns (one call of each per round). The last line is

    lookup_vs_take=R lookup_vs_dict=R apply_vs_take=R

    ... raw_lookup_vs_take=R raw_step_vs_take=R

where R = baseline time / EV time (higher is better). Targets: lookup >= 0.5x take and
>= 10x dict; apply >= 0.25x take. `--keys FILE.npy` replaces the synthetic Zipf batch with
real keys (int64, drawn from the table's key space by rank).

Raw mode: what a trainer's step pays on the batch as drawn (all `--batch` occurrences), on
batches of its own, timed in turns with its floor, `np.take` of the raw draws' rows resolved
beforehand ((N, D) out, as a fixed-array lookup gives). raw lookup = `EmbeddingVariable.
lookup_raw` of the N draws (de-duplication with inverse and counts, one probe per distinct
key, each draw's row gathered into the (N, D) output: `psrec.ev.raw`). raw step = raw
lookup + `EmbeddingVariable.apply_raw` of an (N, D) gradient (summed per key by the inverse,
then the Adagrad apply on the rows the lookup resolved). For information, the path before
it: `psrec.ev.unique` + EV lookup of the distinct keys + `psrec.ev.expand` (lookup), +
`psrec.ev.segment_sum` + `apply_gradients` (step), timed in turns after them.
Targets: raw lookup >= 0.77x take, raw step >= 0.27x take.

    python benchmarks/ev_bench.py [--rows 4194304] [--threads 1]
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from psrec.ev import EmbeddingVariable, EVConfig, OptimizerConfig, expand, segment_sum, unique


def _zipf_ranks(rng: np.random.Generator, n: int, a: float, support: int) -> np.ndarray:
    """n draws of Zipf(a) ranks restricted to [0, support) (rejection of the tail)."""
    out = rng.zipf(a, n)
    bad = out > support
    while bad.any():
        out[bad] = rng.zipf(a, int(bad.sum()))
        bad = out > support
    return out - 1


def _unique(a: np.ndarray) -> np.ndarray:
    """np.unique(a) by a sort: numpy 2.4's plain np.unique hashes, ~50x slower on 4M int64."""
    s = np.sort(a)
    return s[np.concatenate(([True], s[1:] != s[:-1]))]


def _median_ms(fn, warmup: int, repeats: int) -> float:
    """Median wall time of fn(i) over i = warmup .. warmup + repeats - 1, in milliseconds."""
    for i in range(warmup):
        fn(i)
    times = []
    for i in range(warmup, warmup + repeats):
        t0 = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def _interleaved_ms(fns: dict, warmup: int, repeats: int) -> dict:
    """Median wall time in milliseconds of each fn(i), i = warmup .. warmup + repeats - 1,
    the fns called in turns (fn_a(i), fn_b(i), ... then i + 1)."""
    times = {k: [] for k in fns}
    for i in range(warmup + repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn(i)
            if i >= warmup:
                times[k].append(time.perf_counter() - t0)
    return {k: 1e3 * statistics.median(v) for k, v in times.items()}


def _median_ms_after(prepare, fn, warmup: int, repeats: int) -> float:
    """As _median_ms, timing fn(i) alone after an untimed prepare(i) (the step's lookup)."""
    times = []
    for i in range(warmup + repeats):
        prepare(i)
        t0 = time.perf_counter()
        fn(i)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


class DictTable:
    """The baseline: a Python dict key -> row in front of numpy values and Adagrad state."""

    def __init__(self, keys: np.ndarray, values: np.ndarray, accum: float, lr: float, eps: float) -> None:
        self.index = dict(zip(keys.tolist(), range(len(keys))))
        self.values = values.copy()
        self.accum = np.full_like(values, accum)
        self.freq = np.zeros(len(keys), dtype=np.int64)
        self.version = np.full(len(keys), -1, dtype=np.int64)
        self.lr, self.eps = np.float32(lr), np.float32(eps)

    def rows(self, keys: np.ndarray) -> np.ndarray:
        return np.fromiter(map(self.index.__getitem__, keys.tolist()), dtype=np.int64, count=len(keys))

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        return np.take(self.values, self.rows(keys), axis=0)

    def apply(self, keys: np.ndarray, grads: np.ndarray, counts: np.ndarray, step: int) -> None:
        rows = self.rows(keys)
        a = np.take(self.accum, rows, axis=0) + grads * grads
        self.accum[rows] = a
        self.values[rows] = np.take(self.values, rows, axis=0) - self.lr * grads / (np.sqrt(a) + self.eps)
        self.freq[rows] += counts
        self.version[rows] = step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=4 << 20, help="pre-populated table rows (default 4M)")
    p.add_argument("--dim", type=int, default=16)
    p.add_argument("--batch", type=int, default=128 << 10, help="key draws per batch before dedup")
    p.add_argument("--zipf", type=float, default=1.1)
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (np.take uses one)")
    p.add_argument("--keys", default=None, help="optional .npy of key ranks instead of synthetic Zipf draws")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)

    t0 = time.perf_counter()
    # Field-tagged, arbitrary int64 keys (never a dense range), stored in random order.
    table_keys = _unique(rng.integers(0, 1 << 54, int(args.rows * 1.01), dtype=np.int64))[:args.rows]
    table_keys |= rng.integers(0, 40, len(table_keys), dtype=np.int64) << 54
    table_keys = _unique(table_keys)
    rng.shuffle(table_keys)
    rows = len(table_keys)
    values = (0.01 * rng.standard_normal((rows, args.dim))).astype(np.float32)
    cfg = EVConfig(dim=args.dim, optimizer=OptimizerConfig(name="adagrad", lr=0.05))
    ev = EmbeddingVariable(cfg, name="bench", initial_rows=rows)
    ev.insert_rows(table_keys, values)
    build_s = time.perf_counter() - t0

    # One batch per call, as each training step brings a new one: the Zipf head stays in
    # cache between calls and the tail misses, for the baselines and the EV alike. Each timed
    # path gets batches of its own (same distribution, other draws), so that no path finds
    # the rows of its batch left in cache by another.
    n_calls = args.warmup + args.repeats
    if args.keys:
        ranks = np.load(args.keys).astype(np.int64) % rows
        draw = lambda: ranks  # noqa: E731
    else:
        draw = lambda: _zipf_ranks(rng, args.batch, args.zipf, rows)  # noqa: E731
    sets = {name: [np.unique(table_keys[draw()], return_counts=True) for _ in range(n_calls)]
            for name in ("take", "lookup", "apply")}
    grads = [(0.01 * rng.standard_normal((len(k), args.dim))).astype(np.float32) for k, _ in sets["apply"]]
    dict_table = DictTable(table_keys, values, cfg.optimizer.initial_accumulator, cfg.optimizer.lr,
                           cfg.optimizer.eps)
    del values

    # The floor: rows already resolved, one gather from the EV's own storage. (Private
    # attributes on purpose: a benchmark of the memory-access limit needs the raw arrays.)
    resolved = [ev._table.find(k) for k, _ in sets["take"]]
    assert all((r >= 0).all() for r in resolved)
    storage = ev._values
    lk, ak = sets["lookup"], sets["apply"]
    np.testing.assert_array_equal(ev.lookup(lk[0][0]), dict_table.lookup(lk[0][0]))

    w, r = args.warmup, args.repeats
    # The floor, the lookup and the apply are timed in turns, one call each per round, so a
    # load change on this shared machine, and what each call leaves in the (300 MiB, shared)
    # L3 cache, reach all three alike; timed one after another, each ran in whatever state
    # the previous one left (the floor alone moved between ~0.75 and ~1.3 ms). The apply is
    # cold: the EV's last lookup was of another batch, so it probes the hash table.
    t = _interleaved_ms({"take": lambda i: np.take(storage, resolved[i], axis=0),
                         "lookup": lambda i: ev.lookup(lk[i][0]),
                         "apply": lambda i: ev.apply_gradients(ak[i][0], grads[i], ak[i][1], i + 1)}, w, r)
    t_take, t_lookup, t_apply = t["take"], t["lookup"], t["apply"]
    # For information only: the same gather from numpy-allocated rows (the dict baseline's
    # copy). numpy aligns a block to 16 bytes, so a 64-byte row there spans two cache lines;
    # the EV allocates its rows 64-byte aligned (psrec.ev._memory), which speeds up the
    # floor above as well.
    t_take_np = _median_ms(lambda i: np.take(dict_table.values, resolved[i], axis=0), w, r)
    t_dict = _median_ms(lambda i: dict_table.lookup(lk[i][0]), w, r)
    # In a training step the apply follows the lookup of the same keys, whose rows the EV
    # remembers (for information only: the apply ratio above is the cold one, probe included).
    t_step_apply = _median_ms_after(lambda i: ev.lookup(ak[i][0]),
                                    lambda i: ev.apply_gradients(ak[i][0], grads[i], ak[i][1], n_calls + i + 1), w, r)
    t_dict_apply = _median_ms(lambda i: dict_table.apply(ak[i][0], grads[i], ak[i][1], i + 1), w, r)
    unique_keys = int(np.median([len(k) for k, _ in lk]))

    # Raw mode: the draws themselves, a set per path (as above: no path finds its batch's
    # rows in cache from another's), the floor and both raw paths in turns.
    raw = {name: [table_keys[draw()] for _ in range(n_calls)]
           for name in ("take", "lookup", "step", "old_lookup", "old_step")}
    raw_resolved = [ev._table.find(k) for k in raw["take"]]
    raw_grads = [(0.01 * rng.standard_normal((len(k), args.dim))).astype(np.float32) for k in raw["step"]]
    u0 = unique(raw["lookup"][0])
    np.testing.assert_array_equal(expand(ev.lookup(u0.keys, train=False), u0.inverse),
                                  ev.lookup(raw["lookup"][0], train=False))
    np.testing.assert_array_equal(ev.lookup_raw(raw["lookup"][0])[0], ev.lookup(raw["lookup"][0], train=False))

    def raw_step(i: int) -> None:
        out, batch = ev.lookup_raw(raw["step"][i])  # (N, D): one row per draw
        ev.apply_raw(batch, raw_grads[i], 2 * n_calls + i + 1)

    def old_lookup(keys: np.ndarray):
        u = unique(keys)
        return u, expand(ev.lookup(u.keys), u.inverse)

    def old_step(i: int) -> None:
        u, _ = old_lookup(raw["old_step"][i])
        ev.apply_gradients(u.keys, segment_sum(raw_grads[i], u.inverse, len(u.keys)), u.counts, 3 * n_calls + i + 1)

    t = _interleaved_ms({"take": lambda i: np.take(storage, raw_resolved[i], axis=0),
                         "lookup": lambda i: ev.lookup_raw(raw["lookup"][i]),
                         "step": raw_step}, w, r)
    t_raw_take, t_raw_lookup, t_raw_step = t["take"], t["lookup"], t["step"]
    t_old = _interleaved_ms({"lookup": lambda i: old_lookup(raw["old_lookup"][i]), "step": old_step}, w, r)
    t_unique = _median_ms(lambda i: unique(raw["lookup"][i]), w, r)
    t_np_unique = _median_ms(lambda i: np.unique(raw["lookup"][i], return_inverse=True, return_counts=True), w, r)

    print(f"table: {rows} rows x {args.dim} float32, built in {build_s:.1f} s; batch: {args.batch} "
          f"Zipf({args.zipf}) draws -> ~{unique_keys} unique keys; torch threads {args.threads}")
    print(f"np.take (resolved rows)  {t_take:8.3f} ms   (EV storage, {storage.ctypes.data % 64} bytes past a "
          f"64-byte boundary)")
    print(f"np.take (numpy copy)     {t_take_np:8.3f} ms   (information: {dict_table.values.ctypes.data % 64} bytes "
          f"past a 64-byte boundary)")
    print(f"EV lookup                {t_lookup:8.3f} ms   ({unique_keys / t_lookup / 1e3:.1f} M keys/s)")
    print(f"dict lookup              {t_dict:8.3f} ms")
    print(f"EV apply (adagrad)       {t_apply:8.3f} ms   ({unique_keys / t_apply / 1e3:.1f} M keys/s)")
    print(f"EV apply after lookup    {t_step_apply:8.3f} ms   (rows reused: {t_take / t_step_apply:.3f}x take)")
    print(f"dict apply (adagrad)     {t_dict_apply:8.3f} ms")
    print(f"raw: np.take of {args.batch} draws {t_raw_take:8.3f} ms;  raw lookup {t_raw_lookup:8.3f} ms;  "
          f"raw step {t_raw_step:8.3f} ms")
    print(f"raw, the path before (information): unique + lookup + expand {t_old['lookup']:8.3f} ms;  "
          f"+ segment_sum + apply_gradients {t_old['step']:8.3f} ms")
    print(f"raw: psrec.ev.unique {t_unique:8.3f} ms;  np.unique (inverse, counts) {t_np_unique:8.3f} ms")
    lt, ld, at = t_take / t_lookup, t_dict / t_lookup, t_take / t_apply
    rl, rs = t_raw_take / t_raw_lookup, t_raw_take / t_raw_step
    print(f"targets: lookup_vs_take >= 0.5 ({'ok' if lt >= 0.5 else 'MISSED'}), lookup_vs_dict >= 10 "
          f"({'ok' if ld >= 10 else 'MISSED'}), apply_vs_take >= 0.25 ({'ok' if at >= 0.25 else 'MISSED'}); "
          f"apply vs dict apply: {t_dict_apply / t_apply:.1f}x")
    print(f"targets: raw_lookup_vs_take >= 0.77 ({'ok' if rl >= 0.77 else 'MISSED'}), raw_step_vs_take >= 0.27 "
          f"({'ok' if rs >= 0.27 else 'MISSED'}); {w} warm-up and {r} timed calls per path")
    print(f"lookup_vs_take={lt:.3f} lookup_vs_dict={ld:.2f} apply_vs_take={at:.3f} "
          f"raw_lookup_vs_take={rl:.3f} raw_step_vs_take={rs:.3f}")


if __name__ == "__main__":
    main()
