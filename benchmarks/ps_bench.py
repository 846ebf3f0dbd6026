"""Parameter-server transport overhead and load balance.

1. Pull+push of B distinct keys (dim 16) through one Ray PS actor vs the same PSShard called
   in process, B = 1K..128K. R = in-process time / Ray time (0.5 = Ray adds 1x on top). Ray
   is the default transport: to a PS actor on the same node, pulls and pushes go over a
   local socket with the arrays in shared memory (psrec/ps/channel.py, psrec/ps/shm.py); the
   same calls as plain Ray actor calls through the object store are printed beside it, and
   over gRPC (psrec/ps/grpc_*.py, what `ps.transport = "auto"` uses across nodes; here on
   the node's own address, with the job token on every call).
2. Aggregate pull+push throughput of a PSClient over 1, 2 and 4 Ray PS actors.
3. Load imbalance (max/mean bytes served) over 4 PS on Zipf(1.1) keys: hash-mod vs balanced.

Median of several repeats, all in the same run, in steady state: each Ray process first
runs enough round trips to have written the whole local object store once (a process pays
one page fault per 4 KiB store page the first time it writes there, a start-up cost that a
training run amortises over its first steps; see psrec/raysession.py). Last line:
`inproc_over_ray_64k=R inproc_over_ray_128k=R imbalance_hash=R imbalance_balanced=R grpc_over_ray_64k=R`
(grpc_over_ray: Ray actor-call time / gRPC time; >= 1.0 means gRPC is no slower than Ray calls)
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from psrec.ev import EVConfig, OptimizerConfig  # noqa: E402
from psrec.ps.client import PSClient  # noqa: E402
from psrec.ps.partition import count_requests, make_partitioner  # noqa: E402
from psrec.ps.ray_transport import RayTransport, start_ps_actors  # noqa: E402
from psrec.ps.shard import PSShard  # noqa: E402
from psrec.ps.transport import InProcessTransport  # noqa: E402
from psrec.raysession import LOCAL_OBJECT_STORE_BYTES, ensure_ray  # noqa: E402

DIM = 16
TABLES = {"emb": EVConfig(dim=DIM, optimizer=OptimizerConfig(name="adagrad", lr=0.05))}


def zipf_keys(rng, n: int) -> np.ndarray:
    return np.minimum(rng.zipf(1.1, n), 1 << 50).astype(np.int64)


def distinct_keys(rng, n: int) -> np.ndarray:
    """n distinct keys drawn the Zipf way (what a deduplicated batch looks like)."""
    out = np.unique(zipf_keys(rng, 4 * n))
    while len(out) < n:
        out = np.unique(np.concatenate([out, rng.integers(1, 1 << 50, n)]))
    return rng.permutation(out)[:n]


def median_time(fn, repeats: int) -> float:
    fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def interleaved_medians(fns: dict, repeats: int) -> dict:
    """Median seconds of each fn, timed in turns (a load change on this shared machine then
    hits every path alike instead of whichever ran during it)."""
    ts = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            ts[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in ts.items()}


def warm_up(go, bytes_per_call: int) -> None:
    """Call `go` until its payloads have cycled through the object store twice."""
    for _ in range(math.ceil(2 * LOCAL_OBJECT_STORE_BYTES / bytes_per_call)):
        go()


def round_trip(transport, keys: np.ndarray, grads: np.ndarray, step=[0]):
    def go():
        step[0] += 1
        transport.call_all("pull", [({"emb": keys}, True, False, 0, False)])
        transport.call_all("push", [({"emb": (keys, grads, np.ones(len(keys), np.int64))}, None, step[0])])
    return go


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--sizes", default="1024,4096,16384,65536,131072")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    ensure_ray()
    sizes = [int(s) for s in args.sizes.split(",")]
    ratios = {}
    print("pull+push of B distinct keys, one PS; ray = the same-node channel (a socket and shared")
    print("memory), objstore = the same calls as Ray actor calls, grpc = over gRPC with the job token")
    print("keys      in-process (ms)   ray (ms)   inproc/ray   objstore (ms)   inproc/objstore   grpc (ms)"
          "   objstore/grpc")
    # One shard per path for every size (both tables grow alike), the Ray ones warmed once
    # with the largest batch: pull (keys 8 B + rows 4*DIM B) + push (keys, grads, counts).
    paths = {"in": InProcessTransport([PSShard(0, TABLES)]),
             "ray": RayTransport(start_ps_actors(1, TABLES, 1, False, [None], num_cpus=0.5)),
             "obj": RayTransport(start_ps_actors(1, TABLES, 1, False, [None], num_cpus=0.5), shared_memory=False),
             "grpc": RayTransport(start_ps_actors(1, TABLES, 1, False, [None], num_cpus=0.5), mode="grpc")}
    big = distinct_keys(rng, max(sizes))
    big_grads = rng.standard_normal((len(big), DIM)).astype(np.float32) * 1e-3
    grpc_ratio = {}
    for name in ("ray", "obj", "grpc"):
        warm_up(round_trip(paths[name], big, big_grads), len(big) * (8 + 4 * DIM) * 2 + len(big) * 16)
    for n in sizes:
        keys = distinct_keys(rng, n)
        grads = rng.standard_normal((n, DIM)).astype(np.float32) * 1e-3
        fns = {k: round_trip(t, keys, grads) for k, t in paths.items()}
        for fn in fns.values():
            fn()  # first touch of these keys: creates their rows
        t = interleaved_medians(fns, args.repeats)
        ratios[n] = t["in"] / t["ray"]
        grpc_ratio[n] = t["obj"] / t["grpc"]
        print(f"{n:>7}   {1e3 * t['in']:14.2f}   {1e3 * t['ray']:8.2f}   {ratios[n]:10.3f}   "
              f"{1e3 * t['obj']:13.2f}   {t['in'] / t['obj']:15.3f}   {1e3 * t['grpc']:9.2f}   {grpc_ratio[n]:13.3f}")
    for name in ("ray", "obj", "grpc"):
        paths[name].shutdown()

    print("\naggregate pull+push of 65536 keys through a PSClient")
    keys = distinct_keys(rng, 65536)
    grads = rng.standard_normal((len(keys), DIM)).astype(np.float32) * 1e-3
    for m in (1, 2, 4):
        actors = start_ps_actors(m, TABLES, 1, False, [None] * m, num_cpus=0.25, health_timeout_s=300)
        client = PSClient(RayTransport(actors), make_partitioner("hash", m), {"emb": DIM})
        step = [0]

        def go():
            step[0] += 1
            client.lookup_many({"emb": keys})
            client.apply_many({"emb": (keys, grads, np.ones(len(keys), np.int64))}, step[0])

        warm_up(go, len(keys) * (8 + 4 * DIM) * 2 + len(keys) * 16)
        t = median_time(go, args.repeats)
        client.transport.shutdown()
        print(f"  {m} PS: {len(keys) / t:,.0f} keys/s per pull+push")

    print("\nload imbalance over 4 PS, Zipf(1.1) keys, 16K keys per batch (deduplicated)")
    batches = [np.unique(zipf_keys(rng, 16384)) for _ in range(60)]
    sample, run = batches[:20], batches[20:]
    imb = {}
    for name in ("hash", "balanced"):
        part = make_partitioner(name, 4, sample)
        shards = [PSShard(i, TABLES) for i in range(4)]
        client = PSClient(InProcessTransport(shards), part, {"emb": DIM})
        for b in run:
            client.lookup_many({"emb": b})
        served = np.array([s.stats().bytes_out for s in shards], dtype=np.float64)
        rows = np.array([len(np.unique(np.concatenate([b[part.shard_of(b) == i] for b in run]))) for i in range(4)])
        imb[name] = served.max() / served.mean()
        print(f"  {name:>8}: bytes served max/mean {imb[name]:.3f}, "
              f"distinct keys max/mean {rows.max() / rows.mean():.3f}")
    keys, req = count_requests(sample)
    print(f"  (hottest key requested by {req.max()} of {len(sample)} sampled batches)")
    print(f"inproc_over_ray_64k={ratios.get(65536, float('nan')):.3f} "
          f"inproc_over_ray_128k={ratios.get(131072, float('nan')):.3f} "
          f"imbalance_hash={imb['hash']:.3f} imbalance_balanced={imb['balanced']:.3f} "
          f"grpc_over_ray_64k={grpc_ratio.get(65536, float('nan')):.3f}")


if __name__ == "__main__":
    main()
