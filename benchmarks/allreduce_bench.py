"""The collective path's two exchanges against raw torch.distributed on the same bytes.

    dense      `collective.dense_sync.DenseSync.finish` (one all-reduce per bucket of the
               gradients backward accumulated into the buckets, launched asynchronously
               and in order, then waited for) on parameters totalling S bytes, vs one
               `dist.all_reduce` of an S-byte tensor
    alltoall   `collective.sharded_store.exchange_blocks` (pack the rows for other ranks into
               one message, all-to-all, hand this rank's own rows over directly) of S bytes
               per rank, vs one `dist.all_to_all_single` of an S-byte tensor into a
               preallocated output

2 ranks (processes), gloo on CPU (NCCL when CUDA is available), sizes 4 KB..32 MB, synthetic
data (random gradients and rows: the exchange does not depend on the values). Each size: a
warm-up, then raw and ours alternate, each going first every other time (so that load
drift hits both alike), each repeat starting from a barrier; the median per path is reported.

Bus bandwidth as nccl-tests defines it (doc/PERFORMANCE.md): algbw = S / t;
all-reduce busbw = algbw * 2(n-1)/n; all-to-all busbw = algbw * (n-1)/n (S = bytes each
rank sends, its own block included). The ratio is ours / raw (1.0 = no overhead).

Usage: python benchmarks/allreduce_bench.py [--quick] [--repeats R] [--bucket-bytes B]
Last line: busbw_ratio_1mb=R busbw_ratio_32mb=R alltoall_ratio_4mb=R
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

KB, MB = 1024, 1024 * 1024
SIZES = [4 * KB, 16 * KB, 64 * KB, 256 * KB, 1 * MB, 4 * MB, 16 * MB, 32 * MB]
QUICK_SIZES = [4 * KB, 1 * MB, 4 * MB, 32 * MB]
WORLD = 2
DIM = 16  # embedding row width of the all-to-all payload


def _bus_factor(op: str, n: int) -> float:
    from psrec.sim.collective import bus_factor

    return bus_factor(op, n)


def _params(numel: int):
    """Parameters totalling `numel` float32 elements, shaped like an MLP's weights and biases."""
    import torch

    sizes = [max(1, numel * 6 // 10), max(1, numel // 100), max(1, numel * 3 // 10)]
    sizes.append(numel - sum(sizes))
    return [torch.nn.Parameter(torch.zeros(s)) for s in sizes if s > 0]


def _rank(rank: int, port: int, sizes: list[int], repeats: int, bucket_bytes: int, out: str) -> None:
    import numpy as np
    import torch
    import torch.distributed as dist

    from collective.dense_sync import DenseSync
    from collective.sharded_store import exchange_blocks
    from psrec.comm.collectives import init_torch_group

    torch.set_num_threads(1)
    comm = init_torch_group(("127.0.0.1", port), rank, WORLD, "auto", timeout_s=600)
    dev = comm.device  # None on gloo
    rng = np.random.default_rng(rank)
    rows = []

    def clock(fn, reset) -> float:
        reset()
        dist.barrier()
        t0 = time.perf_counter()
        fn()
        if dev is not None:
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    for size in sizes:
        numel = size // 4
        reps = repeats if size < 8 * MB else max(5, repeats // 2)
        # ---- dense: raw all-reduce vs DenseSync
        src = torch.from_numpy(rng.standard_normal(numel, dtype=np.float32))
        raw = src.clone() if dev is None else src.to(dev)
        module = torch.nn.Module()
        module.params = torch.nn.ParameterList(_params(numel))
        grads = [torch.from_numpy(rng.standard_normal(p.numel(), dtype=np.float32)).view_as(p)
                 for p in module.parameters()]
        sync = DenseSync(module, comm, bucket_bytes=bucket_bytes, overlap=False)

        def raw_reset():
            raw.copy_(src if dev is None else src.to(dev))

        def ours_reset():
            sync.attach_grads()  # what the forward pre-hook does
            for p, g in zip(module.parameters(), grads):
                p.grad.add_(g)  # what backward does: accumulate into the bucket views

        def ours():
            sync.finish()

        def raw_ar():
            dist.all_reduce(raw)

        # ---- all-to-all: raw all_to_all_single vs the store's exchange_blocks
        per_dest = numel // WORLD // DIM  # rows per destination
        blocks = [[rng.standard_normal((per_dest, DIM), dtype=np.float32)] for _ in range(WORLD)]
        a2a_in = torch.from_numpy(np.concatenate([b[0].reshape(-1) for b in blocks]))
        if dev is not None:
            a2a_in = a2a_in.to(dev)
        a2a_out = torch.empty_like(a2a_in)
        recv = [per_dest * DIM] * WORLD

        def raw_a2a():
            dist.all_to_all_single(a2a_out, a2a_in)

        workspace: dict = {}

        def ours_a2a():
            exchange_blocks(comm, blocks, recv, np.float32, "rows", workspace)

        for _ in range(2):  # warm-up: connections, allocator, first-touch pages
            raw_reset(); raw_ar(); ours_reset(); ours(); raw_a2a(); ours_a2a()  # noqa: E702
        t = {"raw_ar": [], "ours_ar": [], "raw_a2a": [], "ours_a2a": []}
        runs = [("raw_ar", raw_ar, raw_reset), ("ours_ar", ours, ours_reset),
                ("raw_a2a", raw_a2a, lambda: None), ("ours_a2a", ours_a2a, lambda: None)]
        for i in range(reps):
            # alternate who goes first, so that neither always follows the other's traffic
            for key, fn, reset in (runs if i % 2 == 0 else runs[1::-1] + runs[:1:-1]):
                t[key].append(clock(fn, reset))
        comm.log.take()
        med = {k: statistics.median(v) for k, v in t.items()}
        a2a_bytes = per_dest * DIM * 4 * WORLD
        rows.append({"size": size, "buckets": len(sync.buckets), **med,
                     "raw_ar_busbw": size / med["raw_ar"] * _bus_factor("allreduce", WORLD),
                     "ours_ar_busbw": size / med["ours_ar"] * _bus_factor("allreduce", WORLD),
                     "raw_a2a_busbw": a2a_bytes / med["raw_a2a"] * _bus_factor("alltoall", WORLD),
                     "ours_a2a_busbw": a2a_bytes / med["ours_a2a"] * _bus_factor("alltoall", WORLD)})
        sync.close()
    if rank == 0:
        Path(out).write_text(json.dumps({"backend": comm.backend, "rows": rows}))
    dist.barrier()
    dist.destroy_process_group()


def _entry(rank: int, *args) -> None:
    _rank(rank, *args)


def _fmt_size(b: int) -> str:
    return f"{b // MB} MB" if b >= MB else f"{b // KB} KB"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help=f"only {', '.join(map(_fmt_size, QUICK_SIZES))}")
    ap.add_argument("--repeats", type=int, default=15, help="timed repeats per size and path (median; default 15)")
    ap.add_argument("--bucket-bytes", type=int, default=None,
                    help="DenseSync bucket size (default: CollectiveConfig's)")
    args = ap.parse_args()
    import torch.multiprocessing as mp

    from collective.config import CollectiveConfig
    from psrec.metrics.prom import free_port

    bucket = args.bucket_bytes or CollectiveConfig().bucket_bytes
    sizes = QUICK_SIZES if args.quick else SIZES
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "bench.json")
        t0 = time.perf_counter()
        mp.spawn(_entry, args=(free_port(), sizes, args.repeats, bucket, out), nprocs=WORLD, join=True)
        res = json.loads(Path(out).read_text())
    print(f"{WORLD} ranks, backend {res['backend']}, DenseSync bucket {bucket:,} bytes, "
          f"median of {args.repeats} repeats ({time.perf_counter() - t0:.0f} s)")
    print(f"{'size':>6}  {'buckets':>7}  {'raw AR GB/s':>11}  {'ours AR GB/s':>12}  {'ratio':>5}  "
          f"{'raw A2A GB/s':>12}  {'ours A2A GB/s':>13}  {'ratio':>5}")
    ratios = {}
    for r in res["rows"]:
        ar = r["ours_ar_busbw"] / r["raw_ar_busbw"]
        a2a = r["ours_a2a_busbw"] / r["raw_a2a_busbw"]
        ratios[r["size"]] = (ar, a2a)
        print(f"{_fmt_size(r['size']):>6}  {r['buckets']:>7}  {r['raw_ar_busbw'] / 1e9:>11.3f}  "
              f"{r['ours_ar_busbw'] / 1e9:>12.3f}  {ar:>5.2f}  {r['raw_a2a_busbw'] / 1e9:>12.3f}  "
              f"{r['ours_a2a_busbw'] / 1e9:>13.3f}  {a2a:>5.2f}")
    print("bus bandwidth (nccl-tests): all-reduce algbw*2(n-1)/n, all-to-all algbw*(n-1)/n; ratio = ours / raw")
    print(f"busbw_ratio_1mb={ratios[1 * MB][0]:.2f} busbw_ratio_32mb={ratios[32 * MB][0]:.2f} "
          f"alltoall_ratio_4mb={ratios[4 * MB][1]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
